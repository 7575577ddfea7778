use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Owner, TlsMode};
use crate::crd::KvClusterSpec;
use crate::names::{
    self, CA_CERT_KEY, CLIENT_PORT, CONTAINER_NAME, DATA_DIR, DATA_VOLUME, PEER_PORT, TLS_CERT_KEY,
    TLS_DIR, TLS_KEY_KEY, TLS_VOLUME,
};

/// Long enough for a node to hand leadership to another voter and flush
/// on SIGTERM (kvnode's shutdown path), short enough not to stall drains.
const TERMINATION_GRACE_SECONDS: i64 = 30;
/// The uid/gid the kvnode image runs as (its numeric USER); the volume's
/// group, so the data volume is writable by that non-root process.
pub(crate) const KVNODE_UID: i64 = 65532;
/// Certificate files: readable by the owner and the pod's fsGroup only.
pub(crate) const TLS_FILE_MODE: i32 = 0o440;
const TMP_VOLUME: &str = "tmp";
/// The pod's own env, from the downward API; `spec.pod.env` may not set them.
const DOWNWARD_ENV: [(&str, &str); 2] = [
    ("POD_NAME", "metadata.name"),
    ("POD_NAMESPACE", "metadata.namespace"),
];
/// Every kvnode flag the operator may pass (see [`args`] and [`tls_args`])
/// and the two that must stay unset (`--id`: a node keeps its own id;
/// `--dev`: it would initialize itself). Their `KVNODE_*` variables in
/// `spec.pod.env` would be ignored (a flag wins) or break the cluster.
const OPERATOR_FLAGS: [&str; 17] = [
    "name",
    "data-dir",
    "client-addr",
    "peer-addr",
    "advertise-client-url",
    "advertise-peer-url",
    "cert-file",
    "key-file",
    "trusted-ca-file",
    "peer-cert-file",
    "peer-key-file",
    "peer-trusted-ca-file",
    "heartbeat-interval-ms",
    "election-timeout-ms",
    "snapshot-log-threshold",
    "id",
    "dev",
];

/// Environment variable names `spec.pod.env` must not set, and why.
pub fn reserved_env(name: &str) -> Option<String> {
    if DOWNWARD_ENV.iter().any(|(n, _)| *n == name) {
        return Some(format!(
            "{name} is set by the operator (downward API) and used in kvnode's arguments"
        ));
    }
    OPERATOR_FLAGS
        .iter()
        .find(|flag| kvnode_env(flag) == name)
        .map(|flag| format!("{name} is kvnode's --{flag}, which the operator controls"))
}

/// kvnode reads `--some-flag` also from `KVNODE_SOME_FLAG`.
fn kvnode_env(flag: &str) -> String {
    format!("KVNODE_{}", flag.replace('-', "_").to_uppercase())
}

/// What the planner decides about the StatefulSet besides the spec.
#[derive(Clone, Debug, PartialEq)]
pub struct StatefulSetParams<'a> {
    /// Pods to run: the planner grows and shrinks this one step at a time,
    /// it is not simply `spec.replicas`.
    pub replicas: i32,
    /// DNS suffix of the Kubernetes cluster, used in advertised URLs.
    pub cluster_domain: &'a str,
    /// The planner's choice, which may differ from `spec.tls`: an
    /// initialized cluster keeps the mode it runs.
    pub tls: TlsMode,
}

pub const ON_DELETE: &str = "OnDelete";

pub fn statefulset(owner: &Owner, spec: &KvClusterSpec, params: &StatefulSetParams) -> StatefulSet {
    let selector = names::selector_labels(&owner.name);
    let mut pod_labels = spec.pod.labels.clone();
    // The selector labels must win: a user label overriding them would
    // orphan the pods from their StatefulSet.
    pod_labels.extend(selector.clone());

    StatefulSet {
        metadata: owner.meta(owner.name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(params.replicas),
            service_name: Some(names::peer_service(&owner.name)),
            // Pods of a raft cluster do not need to start in order, and an
            // ordered start would deadlock: pod 1 cannot become ready before
            // the operator adds it, which needs it running.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: non_empty(&spec.pod.annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(owner, spec, params, &selector)),
            },
            volume_claim_templates: Some(vec![volume_claim(spec, &selector)]),
            // The operator replaces pods itself, one at a time, followers
            // before the leader and only while the cluster keeps a quorum:
            // the StatefulSet controller knows nothing of raft.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some(ON_DELETE.into()),
                rolling_update: None,
            }),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

fn pod_spec(
    owner: &Owner,
    spec: &KvClusterSpec,
    params: &StatefulSetParams,
    selector: &BTreeMap<String, String>,
) -> PodSpec {
    let mut volumes = vec![Volume {
        name: TMP_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    if params.tls.tls() {
        volumes.push(Volume {
            name: TLS_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::tls_secret(&owner.name)),
                default_mode: Some(TLS_FILE_MODE),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    PodSpec {
        containers: vec![container(owner, spec, params)],
        volumes: Some(volumes),
        // kvnode never calls the Kubernetes API: a token in the pod would
        // only be something to steal.
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        affinity: Some(
            spec.pod
                .affinity
                .clone()
                .unwrap_or_else(|| spread_over_nodes(selector)),
        ),
        node_selector: non_empty(&spec.pod.node_selector),
        tolerations: (!spec.pod.tolerations.is_empty()).then(|| spec.pod.tolerations.clone()),
        topology_spread_constraints: (!spec.pod.topology_spread_constraints.is_empty())
            .then(|| spec.pod.topology_spread_constraints.clone()),
        priority_class_name: spec.pod.priority_class_name.clone(),
        security_context: Some(merged(
            pod_security_context(),
            spec.pod.security_context.as_ref(),
        )),
        ..PodSpec::default()
    }
}

/// The `restricted` Pod Security Standard, with the image's numeric user.
/// Only fields Kubernetes 1.20 knows (seccompProfile is 1.19+).
pub(crate) fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(KVNODE_UID),
        run_as_group: Some(KVNODE_UID),
        fs_group: Some(KVNODE_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// kvnode writes only to its data volume and /tmp (an emptyDir).
pub(crate) fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    }
}

/// `over`'s fields replace `default`'s, recursively: a user who sets only
/// `runAsUser` keeps the rest of the hardening.
fn merged<T: Serialize + DeserializeOwned + Clone>(default: T, over: Option<&T>) -> T {
    fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
        match (base, over) {
            (serde_json::Value::Object(base), serde_json::Value::Object(over)) => {
                for (key, value) in over {
                    merge(base.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
            (base, over) => *base = over,
        }
    }
    let Some(over) = over else {
        return default;
    };
    let (Ok(mut base), Ok(over_value)) =
        (serde_json::to_value(&default), serde_json::to_value(over))
    else {
        return over.clone();
    };
    merge(&mut base, over_value);
    // Both sides are the same type, so the merge is one too; should that
    // ever fail, the user's choice wins over the default.
    serde_json::from_value(base).unwrap_or_else(|_| over.clone())
}

fn container(owner: &Owner, spec: &KvClusterSpec, params: &StatefulSetParams) -> Container {
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        args: Some(args(owner, spec, params)),
        // The user's env after the operator's: `$(POD_NAME)` in a value
        // expands only to variables defined earlier.
        env: Some(
            DOWNWARD_ENV
                .iter()
                .map(|(name, path)| downward_env(name, path))
                .chain(spec.pod.env.iter().cloned())
                .collect(),
        ),
        ports: Some(vec![
            container_port("client", CLIENT_PORT),
            container_port("peer", PEER_PORT),
        ]),
        // Not ready until the node is a member of an initialized cluster:
        // the client Service then only routes to members.
        readiness_probe: Some(http_probe("/readyz", 5, 3, params.tls)),
        // Generous: a node replaying its log is alive but slow, and a
        // restart would only make it start over.
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..http_probe("/healthz", 10, 6, params.tls)
        }),
        security_context: Some(merged(
            container_security_context(),
            spec.pod.container_security_context.as_ref(),
        )),
        resources: Some(spec.resources.as_ref().map_or_else(default_resources, |r| {
            ResourceRequirements {
                limits: non_empty(&r.limits),
                requests: non_empty(&r.requests),
                ..ResourceRequirements::default()
            }
        })),
        volume_mounts: Some(volume_mounts(params.tls)),
        ..Container::default()
    }
}

/// Without `spec.resources`: enough to schedule a node that is not busy
/// (RocksDB's default block cache and memtables take 128 MiB), and a
/// memory limit that stops a runaway node before it starves its
/// neighbours. No CPU limit: throttling a raft leader delays heartbeats
/// and causes elections.
fn default_resources() -> ResourceRequirements {
    let quantities = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect()
    };
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "100m"), ("memory", "256Mi")])),
        limits: Some(quantities(&[("memory", "1Gi")])),
        ..ResourceRequirements::default()
    }
}

fn volume_mounts(tls: TlsMode) -> Vec<VolumeMount> {
    let mut mounts = vec![
        VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: TMP_VOLUME.into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    if tls.tls() {
        mounts.push(VolumeMount {
            name: TLS_VOLUME.into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    mounts
}

/// The kvnode TLS flags. One Secret serves every pod (a StatefulSet
/// template cannot differ per pod), so with per-pod certificates each pod
/// picks its own files by `$(POD_NAME)`. No `--client-cert-auth`: kubelet
/// probes present no certificate; client certificates are verified when
/// presented.
fn tls_args(tls: TlsMode) -> Vec<String> {
    let (cert, key) = match tls {
        TlsMode::Plaintext => return Vec::new(),
        TlsMode::Operator => (
            names::pod_cert_key("$(POD_NAME)"),
            names::pod_key_key("$(POD_NAME)"),
        ),
        TlsMode::CertManager => (TLS_CERT_KEY.to_owned(), TLS_KEY_KEY.to_owned()),
    };
    let (cert, key, ca) = (
        format!("{TLS_DIR}/{cert}"),
        format!("{TLS_DIR}/{key}"),
        format!("{TLS_DIR}/{CA_CERT_KEY}"),
    );
    vec![
        format!("--cert-file={cert}"),
        format!("--key-file={key}"),
        format!("--trusted-ca-file={ca}"),
        format!("--peer-cert-file={cert}"),
        format!("--peer-key-file={key}"),
        format!("--peer-trusted-ca-file={ca}"),
    ]
}

/// kvnode's command line. No `--id`: a node keeps the id it generated in
/// its data dir, so a pod that lost its volume comes back as a new node.
fn args(owner: &Owner, spec: &KvClusterSpec, params: &StatefulSetParams) -> Vec<String> {
    // $(VAR) is expanded by the kubelet from the container's env.
    let host = format!(
        "$(POD_NAME).{}.$(POD_NAMESPACE).svc.{}",
        names::peer_service(&owner.name),
        params.cluster_domain
    );
    // kvnode refuses to advertise http:// for a TLS listener.
    let scheme = if params.tls.tls() { "https" } else { "http" };
    let mut args = vec![
        "--name=$(POD_NAME)".to_owned(),
        format!("--data-dir={DATA_DIR}"),
        format!("--client-addr=0.0.0.0:{CLIENT_PORT}"),
        format!("--peer-addr=0.0.0.0:{PEER_PORT}"),
        format!("--advertise-client-url={scheme}://{host}:{CLIENT_PORT}"),
        format!("--advertise-peer-url={scheme}://{host}:{PEER_PORT}"),
    ];
    args.extend(tls_args(params.tls));
    let raft = &spec.raft;
    if let Some(ms) = raft.heartbeat_interval_ms {
        args.push(format!("--heartbeat-interval-ms={ms}"));
    }
    if let Some(ms) = raft.election_timeout_ms {
        args.push(format!("--election-timeout-ms={ms}"));
    }
    if let Some(n) = raft.snapshot_log_threshold {
        args.push(format!("--snapshot-log-threshold={n}"));
    }
    args
}

fn volume_claim(
    spec: &KvClusterSpec,
    selector: &BTreeMap<String, String>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            // The StatefulSet controller copies these onto each PVC, which is
            // how the operator finds them again.
            labels: Some(selector.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    spec.storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// Preferred, not required: a cluster on fewer nodes than replicas must
/// still start.
fn spread_over_nodes(selector: &BTreeMap<String, String>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".into(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector.clone()),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn downward_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// With TLS an HTTPS probe: the kubelet does not verify the certificate
/// and presents none, which kvnode accepts without `--client-cert-auth`.
fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32, tls: TlsMode) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(CLIENT_PORT),
            scheme: Some(if tls.tls() { "HTTPS" } else { "HTTP" }.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn non_empty<V: Clone>(map: &BTreeMap<String, V>) -> Option<BTreeMap<String, V>> {
    (!map.is_empty()).then(|| map.clone())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use serde_json::json;

    use super::*;
    use crate::build::fixtures::kvc;

    fn build(spec: serde_json::Value, replicas: i32) -> StatefulSet {
        build_tls(spec, replicas, TlsMode::Plaintext)
    }

    fn build_tls(spec: serde_json::Value, replicas: i32, tls: TlsMode) -> StatefulSet {
        let kvc = kvc(spec);
        let owner = Owner::of(&kvc).expect("fixture has identity");
        statefulset(
            &owner,
            &kvc.spec,
            &StatefulSetParams {
                replicas,
                cluster_domain: "cluster.local",
                tls,
            },
        )
    }

    fn pod_spec_of(sts: &StatefulSet) -> &PodSpec {
        sts.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    #[test]
    fn operator_tls_mounts_the_secret_and_each_pod_picks_its_own_files() {
        let sts = build_tls(json!({}), 3, TlsMode::Operator);
        let c = kvnode(&sts);
        let args = c.args.clone().unwrap_or_default();
        for flag in [
            "--cert-file=/etc/raftkv/tls/$(POD_NAME).crt",
            "--key-file=/etc/raftkv/tls/$(POD_NAME).key",
            "--trusted-ca-file=/etc/raftkv/tls/ca.crt",
            "--peer-cert-file=/etc/raftkv/tls/$(POD_NAME).crt",
            "--peer-key-file=/etc/raftkv/tls/$(POD_NAME).key",
            "--peer-trusted-ca-file=/etc/raftkv/tls/ca.crt",
            "--advertise-client-url=https://$(POD_NAME).kv-peer.$(POD_NAMESPACE).svc.cluster.local:7379",
            "--advertise-peer-url=https://$(POD_NAME).kv-peer.$(POD_NAMESPACE).svc.cluster.local:7380",
        ] {
            assert!(
                args.contains(&flag.to_owned()),
                "{flag} missing from {args:?}"
            );
        }
        assert!(
            !args.iter().any(|a| a.starts_with("--client-cert-auth")),
            "kubelet probes present no certificate"
        );
        for probe in [&c.readiness_probe, &c.liveness_probe] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .expect("probe");
            assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
        }
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == "/etc/raftkv/tls")
            .expect("TLS mount");
        assert_eq!(mount.read_only, Some(true));
        let volume = pod_spec_of(&sts)
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .and_then(|v| v.secret.as_ref())
            .expect("secret volume");
        assert_eq!(volume.secret_name.as_deref(), Some("kv-tls"));
        assert_eq!(volume.default_mode, Some(0o440));
        assert_eq!(TlsMode::of_statefulset(&sts), TlsMode::Operator);
    }

    #[test]
    fn cert_manager_tls_uses_its_single_certificate_and_plaintext_mounts_nothing() {
        let sts = build_tls(json!({}), 3, TlsMode::CertManager);
        let args = kvnode(&sts).args.clone().unwrap_or_default();
        assert!(args.contains(&"--peer-cert-file=/etc/raftkv/tls/tls.crt".to_owned()));
        assert!(args.contains(&"--key-file=/etc/raftkv/tls/tls.key".to_owned()));
        assert_eq!(TlsMode::of_statefulset(&sts), TlsMode::CertManager);

        let plain = build(json!({}), 3);
        let c = kvnode(&plain);
        assert!(!c.args.iter().flatten().any(|a| a.contains("cert-file")));
        assert!(!c.volume_mounts.iter().flatten().any(|m| m.name == "tls"));
        let get = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("probe");
        assert_eq!(get.scheme.as_deref(), Some("HTTP"));
        assert_eq!(TlsMode::of_statefulset(&plain), TlsMode::Plaintext);
    }

    /// The `restricted` Pod Security Standard, as the admission plugin
    /// checks it.
    #[test]
    fn pods_pass_the_restricted_pod_security_standard_by_default() {
        let sts = build_tls(json!({}), 3, TlsMode::Operator);
        let pod = pod_spec_of(&sts);
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.as_ref().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            (psc.run_as_user, psc.run_as_group, psc.fs_group),
            (Some(65532), Some(65532), Some(65532))
        );
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        let csc = kvnode(&sts)
            .security_context
            .as_ref()
            .expect("container security context");
        assert_eq!(csc.allow_privilege_escalation, Some(false));
        assert_eq!(csc.read_only_root_filesystem, Some(true));
        assert_eq!(csc.privileged, None);
        let caps = csc.capabilities.as_ref().expect("capabilities");
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert!(caps.add.is_none());
        // The data volume stays writable: it is mounted read-write and owned
        // by the fsGroup; the read-only root gets a writable /tmp.
        let mounts = kvnode(&sts).volume_mounts.clone().unwrap_or_default();
        let data = mounts
            .iter()
            .find(|m| m.name == "data")
            .expect("data mount");
        assert_ne!(data.read_only, Some(true));
        assert!(mounts.iter().any(|m| m.mount_path == "/tmp"));
        for volume in pod.volumes.iter().flatten() {
            assert!(
                volume.host_path.is_none(),
                "restricted allows no hostPath: {volume:?}"
            );
        }
    }

    #[test]
    fn spec_pod_security_contexts_merge_over_the_defaults() {
        let sts = build(
            json!({"pod": {"securityContext": {"runAsUser": 1000, "fsGroup": 2000},
                           "containerSecurityContext": {"readOnlyRootFilesystem": false}}}),
            1,
        );
        let psc = pod_spec_of(&sts).security_context.clone().expect("psc");
        assert_eq!((psc.run_as_user, psc.fs_group), (Some(1000), Some(2000)));
        assert_eq!(
            psc.run_as_group,
            Some(65532),
            "fields not set keep the default"
        );
        assert!(psc.seccomp_profile.is_some());
        let csc = kvnode(&sts).security_context.clone().expect("csc");
        assert_eq!(csc.read_only_root_filesystem, Some(false));
        assert_eq!(csc.allow_privilege_escalation, Some(false));
    }

    fn kvnode(sts: &StatefulSet) -> &Container {
        &sts.spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod spec")
            .containers[0]
    }

    #[test]
    fn statefulset_carries_identity_ports_probes_and_storage() {
        let sts = build(
            json!({"replicas": 3, "storage": {"size": "5Gi", "storageClassName": "fast"}}),
            2,
        );
        let spec = sts.spec.as_ref().expect("spec");
        assert_eq!(
            spec.replicas,
            Some(2),
            "planner's replicas, not spec.replicas"
        );
        assert_eq!(spec.service_name.as_deref(), Some("kv-peer"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let owner = &sts.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("KvCluster", Some(true))
        );

        let c = kvnode(&sts);
        let args = c.args.as_ref().expect("args");
        assert!(args.contains(&"--name=$(POD_NAME)".to_owned()));
        assert!(args.contains(&"--data-dir=/var/lib/raftkv".to_owned()));
        assert!(args.contains(
            &"--advertise-peer-url=http://$(POD_NAME).kv-peer.$(POD_NAMESPACE).svc.cluster.local:7380"
                .to_owned()
        ));
        assert!(
            !args.iter().any(|a| a.starts_with("--id")),
            "a node must keep its own id"
        );
        let env: Vec<_> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert_eq!(env, ["POD_NAME", "POD_NAMESPACE"]);
        let ready = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("readiness");
        assert_eq!(
            (ready.path.as_deref(), &ready.port),
            (Some("/readyz"), &IntOrString::Int(7379))
        );
        let live = c
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("liveness");
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        assert_eq!(
            c.volume_mounts.as_ref().expect("mounts")[0].mount_path,
            "/var/lib/raftkv"
        );

        let pod = spec.template.spec.as_ref().expect("pod spec");
        assert!(pod.termination_grace_period_seconds.unwrap_or_default() >= 30);
        let claim = &spec.volume_claim_templates.as_ref().expect("claims")[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("data"));
        let claim_spec = claim.spec.as_ref().expect("claim spec");
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage")),
            Some(&Quantity("5Gi".into()))
        );
    }

    /// The container's args as the kubelet hands them to kvnode: `$(VAR)`
    /// expanded from the container's env.
    fn kvnode_argv(sts: &StatefulSet) -> Vec<String> {
        let c = kvnode(sts);
        let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert_eq!(env, ["POD_NAME", "POD_NAMESPACE"], "the values below");
        let expand = |a: &String| {
            a.replace("$(POD_NAME)", "kv-2")
                .replace("$(POD_NAMESPACE)", "prod")
        };
        let mut argv = vec!["kvnode".to_owned()];
        argv.extend(c.args.iter().flatten().map(expand));
        argv
    }

    #[test]
    fn kvnode_accepts_every_flag_the_operator_passes() {
        let spec = json!({"raft": {"heartbeatIntervalMs": 50, "electionTimeoutMs": 500,
                                   "snapshotLogThreshold": 1000}});
        for tls in [TlsMode::Plaintext, TlsMode::Operator, TlsMode::CertManager] {
            let argv = kvnode_argv(&build_tls(spec.clone(), 3, tls));
            let config = kvnode::config::Config::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("kvnode refuses the operator's args {argv:?}: {e}"));
            // What the operator means by its flags is what kvnode reads.
            assert_eq!(config.name.as_deref(), Some("kv-2"));
            assert_eq!(config.data_dir, std::path::Path::new(DATA_DIR));
            assert_eq!(i32::from(config.client_addr.port()), CLIENT_PORT);
            assert_eq!(i32::from(config.peer_addr.port()), PEER_PORT);
            assert_eq!(
                (
                    config.heartbeat_interval_ms,
                    config.election_timeout_ms,
                    config.snapshot_log_threshold
                ),
                (50, 500, 1000)
            );
            let scheme = if tls == TlsMode::Plaintext {
                "http"
            } else {
                "https"
            };
            assert_eq!(
                config.advertise_peer_url.as_deref(),
                Some(
                    format!("{scheme}://kv-2.kv-peer.prod.svc.cluster.local:{PEER_PORT}").as_str()
                )
            );
            assert_eq!(
                config.cert_file.is_some(),
                tls != TlsMode::Plaintext,
                "{tls:?}"
            );
            assert_eq!(
                config.peer_cert_file.is_some(),
                tls != TlsMode::Plaintext,
                "{tls:?}"
            );
        }
    }

    #[test]
    fn raft_tuning_maps_to_flags_only_when_set() {
        let plain = build(json!({}), 1);
        assert!(
            !kvnode(&plain)
                .args
                .iter()
                .flatten()
                .any(|a| a.contains("election"))
        );
        let tuned = build(
            json!({"raft": {"heartbeatIntervalMs": 50, "electionTimeoutMs": 500, "snapshotLogThreshold": 1000}}),
            1,
        );
        let args = kvnode(&tuned).args.clone().unwrap_or_default();
        for flag in [
            "--heartbeat-interval-ms=50",
            "--election-timeout-ms=500",
            "--snapshot-log-threshold=1000",
        ] {
            assert!(
                args.contains(&flag.to_owned()),
                "{flag} missing from {args:?}"
            );
        }
    }

    #[test]
    fn default_anti_affinity_is_preferred_and_user_affinity_replaces_it() {
        let sts = build(json!({}), 3);
        let pod = sts
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod");
        let anti = pod
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .expect("anti-affinity by default");
        assert!(
            anti.required_during_scheduling_ignored_during_execution
                .is_none()
        );
        let term = &anti
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .expect("preferred")[0];
        assert_eq!(
            term.pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );

        let sts = build(
            json!({"pod": {"affinity": {"nodeAffinity": {}}, "labels": {"app.kubernetes.io/instance": "evil", "team": "a"},
                   "tolerations": [{"key": "dedicated", "operator": "Exists"}]}}),
            3,
        );
        let spec = sts.spec.as_ref().expect("spec");
        let pod = spec.template.spec.as_ref().expect("pod");
        let affinity = pod.affinity.as_ref().expect("affinity");
        assert!(affinity.pod_anti_affinity.is_none() && affinity.node_affinity.is_some());
        assert_eq!(pod.tolerations.as_ref().map(Vec::len), Some(1));
        let labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .expect("labels");
        assert_eq!(
            labels["app.kubernetes.io/instance"], "kv",
            "selector labels win"
        );
        assert_eq!(labels["team"], "a");
    }

    /// Fields that kube-apiserver 1.20 does not know; server-side apply there
    /// rejects an object that carries any of them.
    #[test]
    fn statefulset_sends_no_field_newer_than_kubernetes_1_20() {
        let sts = build_tls(
            json!({"resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
                   "imagePullPolicy": "IfNotPresent"}),
            3,
            TlsMode::Operator,
        );
        let text = serde_json::to_string(&sts).expect("serializes");
        for newer in [
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
            "ordinals",
            "claims",
            "volumeAttributesClassName",
            "dataSourceRef",
            "resizePolicy",
            "restartPolicy",
            "hostUsers",
            "schedulingGates",
            "resourceClaims",
            "matchLabelKeys",
            "grpc",
            "sleep",
            "appArmorProfile",
            "seLinuxChangePolicy",
            "supplementalGroupsPolicy",
            "recursiveReadOnly",
            "sizeLimit",
        ] {
            assert!(
                !text.contains(&format!("\"{newer}\"")),
                "sends {newer}: {text}"
            );
        }
    }

    #[test]
    fn pods_are_replaced_by_the_operator_not_the_statefulset_controller() {
        let sts = build(json!({}), 3);
        let strategy = sts
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .expect("strategy");
        assert_eq!(strategy.type_.as_deref(), Some(ON_DELETE));
        assert!(strategy.rolling_update.is_none());
    }

    #[test]
    fn every_flag_the_operator_passes_is_a_reserved_env_name() {
        let spec = json!({"raft": {"heartbeatIntervalMs": 50, "electionTimeoutMs": 500,
                                   "snapshotLogThreshold": 1000}});
        for tls in [TlsMode::Operator, TlsMode::CertManager] {
            let sts = build_tls(spec.clone(), 3, tls);
            for arg in kvnode(&sts).args.iter().flatten() {
                let flag = arg
                    .trim_start_matches("--")
                    .split('=')
                    .next()
                    .expect("flag");
                let env = kvnode_env(flag);
                assert!(reserved_env(&env).is_some(), "{env} is not reserved");
            }
        }
        for env in ["POD_NAME", "POD_NAMESPACE", "KVNODE_ID", "KVNODE_DEV"] {
            assert!(reserved_env(env).is_some(), "{env}");
        }
        assert_eq!(reserved_env("KVNODE_ROCKSDB_BLOCK_CACHE_MB"), None);
        assert_eq!(reserved_env("GOMAXPROCS"), None);
    }

    #[test]
    fn pod_customization_reaches_the_pod_template() {
        let sts = build(
            json!({"pod": {
                "priorityClassName": "critical",
                "env": [{"name": "KVNODE_ROCKSDB_BLOCK_CACHE_MB", "value": "256"}],
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                    "whenUnsatisfiable": "ScheduleAnyway"}]}}),
            3,
        );
        let pod = sts
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod");
        assert_eq!(pod.priority_class_name.as_deref(), Some("critical"));
        assert_eq!(
            pod.topology_spread_constraints.as_ref().map(Vec::len),
            Some(1)
        );
        assert!(
            pod.affinity
                .as_ref()
                .is_some_and(|a| a.pod_anti_affinity.is_some()),
            "the default anti-affinity stays"
        );
        let env: Vec<_> = kvnode(&sts)
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            env,
            ["POD_NAME", "POD_NAMESPACE", "KVNODE_ROCKSDB_BLOCK_CACHE_MB"]
        );
    }

    #[test]
    fn resources_default_when_unset_and_are_replaced_when_set() {
        let plain = build(json!({}), 1);
        let r = kvnode(&plain).resources.clone().expect("defaults");
        let requests = r.requests.expect("requests");
        assert_eq!(requests["memory"], Quantity("256Mi".into()));
        assert_eq!(requests["cpu"], Quantity("100m".into()));
        let limits = r.limits.expect("limits");
        assert_eq!(limits["memory"], Quantity("1Gi".into()));
        assert!(
            !limits.contains_key("cpu"),
            "no CPU limit: throttling causes elections"
        );
        let set = build(json!({"resources": {"requests": {"cpu": "2"}}}), 1);
        let r = kvnode(&set).resources.clone().expect("resources");
        assert_eq!(r.limits, None);
        assert_eq!(
            r.requests.map(|m| m.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["cpu".to_owned()])
        );
    }
}
