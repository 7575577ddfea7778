//! Read everything the planner needs: the StatefulSet, the pods with each
//! node's own report (`GET /v1/cluster/status`), the PVCs. Nothing here
//! decides anything; a node that cannot be reached is recorded as such.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams};
use kvclient::{ClientError, ClusterStatus};
use tracing::debug;

use crate::auth::{self, NodeAuth, Password};
use crate::build::TlsMode;
use crate::certs::{CertPair, KeyPem};
use crate::crd::StorageSpec;
use crate::names::{
    self, CA_CERT_KEY, CA_KEY_KEY, CLIENT_PORT, DATA_VOLUME, REVISION_LABEL, ROOT_PASSWORD_KEY,
    TLS_CERT_KEY, TLS_KEY_KEY,
};

/// Which PodDisruptionBudget API the server offers (found by discovery).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PdbSupport {
    V1,
    /// Kubernetes < 1.21: same fields, older group version.
    V1Beta1,
    None,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// `spec.replicas` of the StatefulSet; `None` when it does not exist.
    pub statefulset_replicas: Option<i32>,
    /// The data volume template of the existing StatefulSet, which
    /// Kubernetes never lets change.
    pub statefulset_storage: Option<StorageSpec>,
    /// The existing StatefulSet's revisions; `None` while it has reported
    /// none, or is being deleted.
    pub statefulset_revisions: Option<Revisions>,
    /// `spec.updateStrategy.type` of the existing StatefulSet.
    pub statefulset_update_strategy: Option<String>,
    /// The StatefulSet has a deletion timestamp (deleted with
    /// `propagationPolicy: Orphan` to replace its volume template).
    pub statefulset_deleting: bool,
    /// `allowVolumeExpansion` of the storage classes the PVCs use; a class
    /// that could not be read (missing, or no permission) is absent.
    pub expandable_classes: BTreeMap<String, bool>,
    /// Pods of this cluster, sorted by ordinal (numerically).
    pub pods: Vec<ObservedPod>,
    /// PVCs of this cluster's data volumes.
    pub pvcs: Vec<ObservedPvc>,
    /// How the existing StatefulSet runs its nodes: plaintext or TLS, and
    /// whose certificate layout it mounts.
    pub statefulset_tls: Option<TlsMode>,
    pub tls: ObservedTls,
    /// root's password from Secret `NAME-root`; only read when
    /// `spec.auth` is on.
    pub root_password: Option<Password>,
}

/// The TLS Secrets of a cluster as they are. Keys are [`KeyPem`]s, so this
/// prints no key material.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedTls {
    /// Secret `NAME-ca` (issuer operator).
    pub ca: Option<CertPair>,
    /// `ca.crt` of Secret `NAME-tls`.
    pub node_bundle: Option<String>,
    /// Pod name -> its certificate in `NAME-tls` (issuer operator layout).
    pub nodes: BTreeMap<String, CertPair>,
    pub node_secret_exists: bool,
    /// The operator's client certificate in `NAME-operator-client`.
    pub client: Option<CertPair>,
    /// `ca.crt` of `NAME-operator-client`.
    pub client_bundle: Option<String>,
    /// Whether the server serves cert-manager.io/v1 Certificates; only
    /// asked for a cluster with `issuer: certManager`.
    pub cert_manager: Option<bool>,
}

/// What the StatefulSet controller reports about pod templates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revisions {
    /// `status.updateRevision`: pods created now get this template.
    pub update: String,
    /// `status.currentRevision`.
    pub current: Option<String>,
    /// `status.observedGeneration` equals `metadata.generation`: the
    /// revisions describe the StatefulSet's latest template.
    pub fresh: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ObservedPod {
    pub name: String,
    pub ordinal: u32,
    /// `metadata.uid`: a pod deletion names it, so that a repeated delete
    /// never hits the pod that replaced it.
    pub uid: String,
    /// The pod's `controller-revision-hash` label: the StatefulSet
    /// template revision it was created from.
    pub revision: Option<String>,
    /// Passes its readiness probe (the kubelet's view).
    pub ready: bool,
    /// Has a deletion timestamp: going away, not to be added to the cluster.
    pub terminating: bool,
    pub node: NodeView,
}

/// What the kvnode in a pod said about itself.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeView {
    /// The pod has no IP yet: not scheduled or not started.
    NoAddress,
    /// The pod has an IP but the node did not answer (starting, crashed, cut off).
    Unreachable { endpoint: String, error: String },
    Serving {
        endpoint: String,
        status: Box<ClusterStatus>,
        /// `GET /v1/auth/status`.
        auth: NodeAuth,
    },
}

impl ObservedPod {
    pub fn status(&self) -> Option<&ClusterStatus> {
        match &self.node {
            NodeView::Serving { status, .. } => Some(status),
            _ => None,
        }
    }

    pub fn auth(&self) -> &NodeAuth {
        match &self.node {
            NodeView::Serving { auth, .. } => auth,
            _ => &NodeAuth::Unknown,
        }
    }

    pub fn endpoint(&self) -> Option<&str> {
        match &self.node {
            NodeView::Serving { endpoint, .. } | NodeView::Unreachable { endpoint, .. } => {
                Some(endpoint)
            }
            NodeView::NoAddress => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ObservedPvc {
    pub name: String,
    pub ordinal: u32,
    /// `spec.resources.requests.storage`.
    pub requested: Option<Quantity>,
    /// `status.capacity.storage`.
    pub capacity: Option<Quantity>,
    pub storage_class: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("reading {what}: {source}")]
    Kube {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// How the operator reaches the nodes of one cluster: plaintext to the pod
/// IP, or HTTPS to the pod's DNS name under the peer Service (which its
/// certificate names) pinned to the pod IP, trusting only the cluster CA
/// and presenting the operator's client certificate.
#[derive(Clone, Default)]
pub struct NodeConnector {
    tls: Option<ConnectorTls>,
    /// Pod DNS name -> pod IP and client port: no DNS lookup (a not-ready
    /// pod's record may lag), yet the certificate is checked for the name.
    resolve: Vec<(String, SocketAddr)>,
}

#[derive(Clone)]
struct ConnectorTls {
    ca: String,
    client: Option<CertPair>,
}

impl fmt::Debug for NodeConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConnector")
            .field("tls", &self.tls.is_some())
            .field(
                "client_certificate",
                &self.tls.as_ref().is_some_and(|t| t.client.is_some()),
            )
            .field("resolve", &self.resolve)
            .finish()
    }
}

impl NodeConnector {
    /// A single-shot kvclient for `endpoint` whose calls end after `timeout`.
    pub fn client(
        &self,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<kvclient::Client, ClientError> {
        let http = self.http(endpoint, timeout)?;
        Ok(kvclient::Client::with_http(&[endpoint], http)?.single_shot())
    }

    /// The HTTP client under [`NodeConnector::client`].
    fn http(&self, endpoint: &str, timeout: Duration) -> Result<reqwest::Client, ClientError> {
        let transport = |source| ClientError::Transport {
            endpoint: endpoint.to_owned(),
            source,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout);
        if let Some(tls) = &self.tls {
            builder = builder.https_only(true).add_root_certificate(
                reqwest::Certificate::from_pem(tls.ca.as_bytes()).map_err(transport)?,
            );
            if let Some(pair) = &tls.client {
                let pem = format!("{}\n{}", pair.cert.trim_end(), pair.key.expose());
                builder = builder
                    .identity(reqwest::Identity::from_pem(pem.as_bytes()).map_err(transport)?);
            }
            for (host, addr) in &self.resolve {
                builder = builder.resolve(host, *addr);
            }
        }
        builder.build().map_err(transport)
    }
}

/// Reads the cluster `name` in `namespace`. Node status calls run
/// concurrently and each is bounded by `node_timeout`, so one hung node
/// cannot stall the reconcile. `mode` is how the nodes run when there is
/// no StatefulSet yet (from the spec).
pub async fn observe(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    mode: TlsMode,
    auth_wanted: bool,
    node_timeout: Duration,
) -> Result<(Observed, NodeConnector), ObserveError> {
    let kube_err = |what| move |source| ObserveError::Kube { what, source };
    let selector = ListParams::default().labels(&names::selector_string(name));

    let statefulset = Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(kube_err("statefulset"))?;
    let statefulset_tls = statefulset.as_ref().map(TlsMode::of_statefulset);
    let running = statefulset_tls.unwrap_or(mode);
    let tls = if mode == TlsMode::Plaintext && running == TlsMode::Plaintext {
        ObservedTls::default()
    } else {
        observe_tls(client, namespace, name, mode)
            .await
            .map_err(kube_err("secrets"))?
    };
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&selector)
        .await
        .map_err(kube_err("pods"))?;
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .list(&selector)
        .await
        .map_err(kube_err("persistentvolumeclaims"))?;

    let connector = connector(namespace, name, running, &tls, &pods.items);
    let pods =
        join_all(pods.items.iter().filter_map(|pod| {
            observe_pod(namespace, name, pod, running, &connector, node_timeout)
        }))
        .await;
    let root_password = if auth_wanted {
        let secret = Api::<Secret>::namespaced(client.clone(), namespace)
            .get_opt(&names::root_secret(name))
            .await
            .map_err(kube_err("secrets"))?;
        secret_text(secret.as_ref(), ROOT_PASSWORD_KEY).map(Password::new)
    } else {
        None
    };
    let pvcs: Vec<ObservedPvc> = pvcs
        .items
        .iter()
        .filter_map(|pvc| observe_pvc(name, pvc))
        .collect();
    let expandable_classes = expandable_classes(client, &pvcs).await;
    let statefulset_deleting = statefulset
        .as_ref()
        .is_some_and(|s| s.metadata.deletion_timestamp.is_some());
    let mut observed = Observed {
        root_password,
        statefulset_tls,
        tls,
        statefulset_storage: statefulset.as_ref().and_then(data_volume_template),
        statefulset_revisions: statefulset
            .as_ref()
            .filter(|_| !statefulset_deleting)
            .and_then(revisions),
        statefulset_update_strategy: statefulset
            .as_ref()
            .and_then(|s| s.spec.as_ref()?.update_strategy.as_ref()?.type_.clone()),
        statefulset_deleting,
        expandable_classes,
        statefulset_replicas: statefulset.map(|s| s.spec.and_then(|s| s.replicas).unwrap_or(1)),
        pods,
        pvcs,
    };
    observed.pods.sort_by_key(|p| p.ordinal);
    observed.pvcs.sort_by_key(|p| p.ordinal);
    Ok((observed, connector))
}

fn observe_pvc(cluster: &str, pvc: &PersistentVolumeClaim) -> Option<ObservedPvc> {
    let name = pvc.metadata.name.clone()?;
    let ordinal = names::pvc_ordinal(cluster, &name)?;
    let spec = pvc.spec.as_ref();
    Some(ObservedPvc {
        name,
        ordinal,
        requested: spec
            .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage"))
            .cloned(),
        capacity: pvc
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref()?.get("storage"))
            .cloned(),
        storage_class: spec.and_then(|s| s.storage_class_name.clone()),
    })
}

/// One GET per storage class in use. A class that cannot be read counts
/// as unknown rather than failing the reconcile: an operator installed
/// without the storageclasses permission still runs everything else.
async fn expandable_classes(client: &kube::Client, pvcs: &[ObservedPvc]) -> BTreeMap<String, bool> {
    let classes: std::collections::BTreeSet<&str> = pvcs
        .iter()
        .filter_map(|p| p.storage_class.as_deref())
        .collect();
    let api = Api::<StorageClass>::all(client.clone());
    let mut expandable = BTreeMap::new();
    for class in classes {
        match api.get_opt(class).await {
            Ok(Some(sc)) => {
                expandable.insert(class.to_owned(), sc.allow_volume_expansion == Some(true));
            }
            Ok(None) => {}
            Err(e) => debug!(class, error = %e, "cannot read the storage class"),
        }
    }
    expandable
}

fn revisions(sts: &StatefulSet) -> Option<Revisions> {
    let status = sts.status.as_ref()?;
    Some(Revisions {
        update: status.update_revision.clone()?,
        current: status.current_revision.clone(),
        fresh: status.observed_generation.is_some()
            && status.observed_generation == sts.metadata.generation,
    })
}

/// The Secrets of the cluster's TLS, whichever issuer made them. Missing
/// ones are `None`: the planner decides what to do about them.
async fn observe_tls(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
    mode: TlsMode,
) -> Result<ObservedTls, kube::Error> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let ca = secrets.get_opt(&names::ca_secret(cluster)).await?;
    let nodes = secrets.get_opt(&names::tls_secret(cluster)).await?;
    let operator = secrets.get_opt(&names::client_secret(cluster)).await?;
    let cert_manager = if mode == TlsMode::CertManager {
        Some(crate::apply::serves_cert_manager(client).await?)
    } else {
        None
    };
    Ok(tls_from_secrets(
        cluster,
        ca.as_ref(),
        nodes.as_ref(),
        operator.as_ref(),
        cert_manager,
    ))
}

fn secret_text(secret: Option<&Secret>, key: &str) -> Option<String> {
    let bytes = secret?.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn secret_pair(secret: Option<&Secret>, cert: &str, key: &str) -> Option<CertPair> {
    Some(CertPair {
        cert: secret_text(secret, cert)?,
        key: KeyPem::new(secret_text(secret, key)?),
    })
}

/// Pure: what the Secrets hold, in the planner's terms.
fn tls_from_secrets(
    cluster: &str,
    ca: Option<&Secret>,
    nodes: Option<&Secret>,
    operator: Option<&Secret>,
    cert_manager: Option<bool>,
) -> ObservedTls {
    let node_certs = nodes
        .and_then(|s| s.data.as_ref())
        .into_iter()
        .flat_map(|data| data.keys())
        .filter_map(|key| {
            let pod = key.strip_suffix(".crt")?;
            names::pod_ordinal(cluster, pod)?;
            let pair = secret_pair(nodes, key, &names::pod_key_key(pod))?;
            Some((pod.to_owned(), pair))
        })
        .collect();
    ObservedTls {
        ca: secret_pair(ca, CA_CERT_KEY, CA_KEY_KEY),
        node_bundle: secret_text(nodes, CA_CERT_KEY),
        nodes: node_certs,
        node_secret_exists: nodes.is_some(),
        client: secret_pair(operator, TLS_CERT_KEY, TLS_KEY_KEY),
        client_bundle: secret_text(operator, CA_CERT_KEY),
        cert_manager,
    }
}

/// The CA the nodes' certificates chain to: the operator's CA, or the
/// bundle cert-manager put next to the node certificate.
fn connector(
    namespace: &str,
    cluster: &str,
    mode: TlsMode,
    tls: &ObservedTls,
    pods: &[Pod],
) -> NodeConnector {
    let ca = match mode {
        TlsMode::Plaintext => return NodeConnector::default(),
        TlsMode::Operator => tls.ca.as_ref().map(|ca| ca.cert.clone()),
        TlsMode::CertManager => tls.node_bundle.clone(),
    };
    let resolve = pods
        .iter()
        .filter_map(|pod| {
            let name = pod.metadata.name.as_deref()?;
            names::pod_ordinal(cluster, name)?;
            let ip = pod_ip(pod)?;
            Some((
                names::pod_host(cluster, namespace, name),
                SocketAddr::new(ip, port()),
            ))
        })
        .collect();
    NodeConnector {
        // No CA yet (a new cluster before its first Secret write): nothing
        // can be verified, so no node is reachable until there is one.
        tls: Some(ConnectorTls {
            ca: ca.unwrap_or_default(),
            client: tls.client.clone(),
        }),
        resolve,
    }
}

fn port() -> u16 {
    u16::try_from(CLIENT_PORT).unwrap_or(7379)
}

fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse::<IpAddr>().ok())
}

fn data_volume_template(sts: &StatefulSet) -> Option<StorageSpec> {
    let claim = sts
        .spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(DATA_VOLUME))?;
    let spec = claim.spec.as_ref()?;
    Some(StorageSpec {
        size: spec
            .resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("storage")?
            .clone(),
        storage_class_name: spec.storage_class_name.clone(),
    })
}

/// `None` for a pod that matches the labels but is not one of ours by name.
fn observe_pod(
    namespace: &str,
    cluster: &str,
    pod: &Pod,
    mode: TlsMode,
    connector: &NodeConnector,
    timeout: Duration,
) -> Option<impl Future<Output = ObservedPod> + use<>> {
    let name = pod.metadata.name.clone()?;
    let ordinal = names::pod_ordinal(cluster, &name)?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let revision = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .cloned();
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let endpoint = pod_ip(pod).map(|ip| match mode {
        TlsMode::Plaintext => endpoint(ip),
        TlsMode::Operator | TlsMode::CertManager => {
            tls_endpoint(&names::pod_host(cluster, namespace, &name))
        }
    });
    let connector = connector.clone();
    Some(async move {
        let node = match endpoint {
            None => NodeView::NoAddress,
            Some(endpoint) => probe_node(endpoint, &connector, timeout).await,
        };
        ObservedPod {
            name,
            ordinal,
            uid,
            revision,
            ready,
            terminating,
            node,
        }
    })
}

/// The pod IP, not the DNS name: DNS of a not-ready pod may lag, and the
/// operator must reach nodes before they are ready (to initialize or add them).
fn endpoint(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => format!("http://{ip}:{CLIENT_PORT}"),
        IpAddr::V6(ip) => format!("http://[{ip}]:{CLIENT_PORT}"),
    }
}

/// With TLS the URL names the pod (its certificate carries that name, not
/// its IP); [`NodeConnector`] pins the name to the pod IP.
fn tls_endpoint(host: &str) -> String {
    format!("https://{host}:{CLIENT_PORT}")
}

async fn probe_node(endpoint: String, connector: &NodeConnector, timeout: Duration) -> NodeView {
    let client = match connector.client(&endpoint, timeout) {
        Ok(client) => client,
        Err(e) => {
            return NodeView::Unreachable {
                endpoint,
                error: e.to_string(),
            };
        }
    };
    match client.status().await {
        Ok(status) => {
            // Asked whatever the spec says: status reports what the nodes do.
            let auth = auth::node_auth(&client).await;
            NodeView::Serving {
                endpoint,
                status: Box::new(status),
                auth,
            }
        }
        Err(e) => {
            debug!(%endpoint, error = %e, "node status unavailable");
            NodeView::Unreachable {
                endpoint,
                error: e.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn endpoints_use_the_pod_ip_and_bracket_ipv6() {
        assert_eq!(endpoint([10, 0, 0, 7].into()), "http://10.0.0.7:7379");
        let v6: IpAddr = "fd00::7".parse().expect("ip");
        assert_eq!(endpoint(v6), "http://[fd00::7]:7379");
        assert_eq!(
            tls_endpoint(&names::pod_host("kv", "db", "kv-1")),
            "https://kv-1.kv-peer.db.svc:7379"
        );
    }

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn secrets_are_read_in_the_planner_s_terms() {
        let ca = secret(&[("ca.crt", "CA"), ("ca.key", "CAKEY")]);
        let nodes = secret(&[
            ("ca.crt", "CA"),
            ("kv-0.crt", "C0"),
            ("kv-0.key", "K0"),
            ("kv-1.crt", "C1"),
            ("kv-other-1.crt", "X"),
            ("kv-other-1.key", "X"),
        ]);
        let tls = tls_from_secrets("kv", Some(&ca), Some(&nodes), None, None);
        assert_eq!(tls.ca.as_ref().map(|c| c.cert.as_str()), Some("CA"));
        assert_eq!(tls.node_bundle.as_deref(), Some("CA"));
        assert_eq!(
            tls.nodes.keys().collect::<Vec<_>>(),
            ["kv-0"],
            "a certificate without its key, or of another cluster's pod, is not one"
        );
        assert!(tls.node_secret_exists && tls.client.is_none());
        assert!(!format!("{tls:?}").contains("K0"), "keys are redacted");
    }

    #[test]
    fn the_connector_pins_pod_names_to_pod_ips_and_prints_no_key() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("kv-0".into());
        pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
            pod_ip: Some("10.0.0.5".into()),
            ..Default::default()
        });
        let tls = ObservedTls {
            ca: Some(CertPair {
                cert: "CA".into(),
                key: KeyPem::new("SECRET-CA-KEY".into()),
            }),
            client: Some(CertPair {
                cert: "C".into(),
                key: KeyPem::new("SECRET-CLIENT-KEY".into()),
            }),
            ..ObservedTls::default()
        };
        let c = connector("db", "kv", TlsMode::Operator, &tls, &[pod.clone()]);
        assert_eq!(
            c.resolve,
            [(
                "kv-0.kv-peer.db.svc".to_owned(),
                "10.0.0.5:7379".parse().expect("addr")
            )]
        );
        let text = format!("{c:?}");
        assert!(!text.contains("SECRET"), "{text}");
        let plain = connector("db", "kv", TlsMode::Plaintext, &tls, &[pod]);
        assert!(plain.tls.is_none() && plain.resolve.is_empty());
    }

    /// The PEM files the operator writes are what reqwest's rustls accepts
    /// as trust root and client identity.
    #[test]
    fn the_connector_takes_the_operator_s_own_certificates() {
        let ca = raftkv_pki::new_ca("ca", 1).expect("ca");
        let root = raftkv_pki::issue(&ca, "root", &[], raftkv_pki::Usage::Client, 1).expect("leaf");
        let tls = ObservedTls {
            client: Some(CertPair::from(root)),
            ca: Some(CertPair::from(ca)),
            ..ObservedTls::default()
        };
        let c = connector("db", "kv", TlsMode::Operator, &tls, &[]);
        let client = c
            .client("https://kv-0.kv-peer.db.svc:7379", Duration::from_secs(1))
            .expect("CA and identity parse");
        assert_eq!(client.endpoints(), ["https://kv-0.kv-peer.db.svc:7379"]);
    }
}
