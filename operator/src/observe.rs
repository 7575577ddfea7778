//! Read everything the planner needs: the StatefulSet, the pods with each
//! node's own report (`GET /v1/cluster/status`), the PVCs. Nothing here
//! decides anything; a node that cannot be reached is recorded as such.

use std::net::IpAddr;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kvclient::ClusterStatus;
use tracing::debug;

use crate::crd::StorageSpec;
use crate::names::{self, CLIENT_PORT, DATA_VOLUME};

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
    /// Pods of this cluster, sorted by ordinal (numerically).
    pub pods: Vec<ObservedPod>,
    /// PVCs of this cluster's data volumes.
    pub pvcs: Vec<ObservedPvc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ObservedPod {
    pub name: String,
    pub ordinal: u32,
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
    },
}

impl ObservedPod {
    pub fn status(&self) -> Option<&ClusterStatus> {
        match &self.node {
            NodeView::Serving { status, .. } => Some(status),
            _ => None,
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedPvc {
    pub name: String,
    pub ordinal: u32,
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

/// Reads the cluster `name` in `namespace`. Node status calls run
/// concurrently and each is bounded by `node_timeout`, so one hung node
/// cannot stall the reconcile.
pub async fn observe(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    node_timeout: Duration,
) -> Result<Observed, ObserveError> {
    let kube_err = |what| move |source| ObserveError::Kube { what, source };
    let selector = ListParams::default().labels(&names::selector_string(name));

    let statefulset = Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(kube_err("statefulset"))?;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&selector)
        .await
        .map_err(kube_err("pods"))?;
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .list(&selector)
        .await
        .map_err(kube_err("persistentvolumeclaims"))?;

    let pods = join_all(
        pods.items
            .iter()
            .filter_map(|pod| observe_pod(name, pod, node_timeout)),
    )
    .await;
    let mut observed = Observed {
        statefulset_storage: statefulset.as_ref().and_then(data_volume_template),
        statefulset_replicas: statefulset.map(|s| s.spec.and_then(|s| s.replicas).unwrap_or(1)),
        pods,
        pvcs: pvcs
            .items
            .iter()
            .filter_map(|pvc| {
                let pvc_name = pvc.metadata.name.clone()?;
                let ordinal = names::pvc_ordinal(name, &pvc_name)?;
                Some(ObservedPvc {
                    name: pvc_name,
                    ordinal,
                })
            })
            .collect(),
    };
    observed.pods.sort_by_key(|p| p.ordinal);
    observed.pvcs.sort_by_key(|p| p.ordinal);
    Ok(observed)
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
    cluster: &str,
    pod: &Pod,
    timeout: Duration,
) -> Option<impl Future<Output = ObservedPod> + use<>> {
    let name = pod.metadata.name.clone()?;
    let ordinal = names::pod_ordinal(cluster, &name)?;
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    Some(async move {
        let node = match ip {
            None => NodeView::NoAddress,
            Some(ip) => probe_node(endpoint(ip), timeout).await,
        };
        ObservedPod {
            name,
            ordinal,
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

async fn probe_node(endpoint: String, timeout: Duration) -> NodeView {
    let client = match kvclient::Client::new(&[&endpoint])
        .and_then(|c| c.single_shot().with_timeout(timeout))
    {
        Ok(client) => client,
        Err(e) => {
            return NodeView::Unreachable {
                endpoint,
                error: e.to_string(),
            };
        }
    };
    match client.status().await {
        Ok(status) => NodeView::Serving {
            endpoint,
            status: Box::new(status),
        },
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
    use super::*;

    #[test]
    fn endpoints_use_the_pod_ip_and_bracket_ipv6() {
        assert_eq!(endpoint([10, 0, 0, 7].into()), "http://10.0.0.7:7379");
        let v6: IpAddr = "fd00::7".parse().expect("ip");
        assert_eq!(endpoint(v6), "http://[fd00::7]:7379");
    }
}
