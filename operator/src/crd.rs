//! The KvCluster custom resource (raftkv.io/v1alpha1). These types are the
//! only source of `crds/kvclusters.raftkv.io.yaml`: `raftkv-operator crd`
//! prints [`crd_yaml`], and a test fails when the committed file drifts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, PodSecurityContext, SecurityContext, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::backup::crd::{BackupSchedule, BootstrapSpec};

/// The most voters a cluster may have. Larger raft groups only add
/// replication cost; nine already tolerates four failures.
pub const MAX_REPLICAS: i32 = 9;

/// A raftkv cluster: a StatefulSet of kvnode pods whose raft membership the
/// operator manages.
#[expect(
    clippy::duplicated_attributes,
    reason = "printcolumn(...) entries legitimately repeat `type_ = ...`"
)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "raftkv.io",
    version = "v1alpha1",
    kind = "KvCluster",
    plural = "kvclusters",
    shortname = "kvc",
    namespaced,
    status = "KvClusterStatus",
    doc = "A replicated raftkv key-value cluster managed by raftkv-operator",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KvClusterSpec {
    /// Number of kvnode pods, each a raft voter once it has caught up. Odd
    /// numbers give the best failure tolerance per pod.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// kvnode container image.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Image pull policy of the kvnode container (Kubernetes default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pull_policy_schema")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// The persistent volume each node keeps its raft log and data on.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Compute resources of the kvnode container. Unset: requests of
    /// 100m CPU and 256Mi memory and a 1Gi memory limit (see
    /// docs/operator.md); set, it replaces those defaults entirely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceSpec>,
    /// What happens to the volumes when the cluster shrinks or is deleted.
    #[serde(default)]
    pub pvc_retention_policy: PvcRetentionPolicy,
    /// Raft tuning passed to every node.
    #[serde(default)]
    pub raft: RaftSpec,
    /// Scheduling and metadata of the kvnode pods.
    #[serde(default)]
    pub pod: PodOverrides,
    /// TLS on both kvnode ports, on by default. Fixed once the cluster is
    /// initialized: the members' advertised URLs carry the scheme.
    #[serde(default)]
    pub tls: TlsSpec,
    /// The NetworkPolicy `NAME` that guards the kvnode ports.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// Users and roles on the nodes, on by default.
    #[serde(default)]
    pub auth: AuthSpec,
    /// Stop all changes: no objects are updated and no membership step is
    /// taken until this is false again. Status keeps being reported.
    #[serde(default)]
    pub paused: bool,
    /// Scheduled backups into object storage (see KvBackup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSchedule>,
    /// How the cluster's first node starts: empty, or from a backup.
    #[serde(default, skip_serializing_if = "is_default")]
    pub bootstrap: BootstrapSpec,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Who issues the kvnode certificates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TlsIssuer {
    /// The operator: a CA per cluster in Secret `NAME-ca`, one certificate
    /// per pod in Secret `NAME-tls`, renewed before expiry.
    #[default]
    Operator,
    /// cert-manager: the operator creates `Certificate` objects, cert-manager
    /// fills their Secrets and renews them.
    CertManager,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Peer port mutual TLS and client port TLS. Turning it off must be
    /// explicit: a default-off cluster would accept raft RPCs from anyone.
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    #[schemars(schema_with = "issuer_schema")]
    pub issuer: TlsIssuer,
    /// Required with `issuer: certManager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManagerSpec>,
}

impl Default for TlsSpec {
    fn default() -> Self {
        TlsSpec {
            enabled: true,
            issuer: TlsIssuer::Operator,
            cert_manager: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerSpec {
    /// The cert-manager Issuer or ClusterIssuer that signs the certificates.
    /// It must fill `ca.crt` in the Secrets (a CA or Vault issuer does):
    /// the nodes verify their peers against it.
    pub issuer_ref: IssuerRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    #[schemars(length(min = 1))]
    pub name: String,
    /// `Issuer` (in the cluster's namespace) or `ClusterIssuer`.
    #[serde(default = "default_issuer_kind")]
    #[schemars(length(min = 1))]
    pub kind: String,
    #[serde(default = "default_issuer_group")]
    #[schemars(length(min = 1))]
    pub group: String,
}

fn default_issuer_kind() -> String {
    "Issuer".into()
}

fn default_issuer_group() -> String {
    "cert-manager.io".into()
}

fn default_true() -> bool {
    true
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicy `NAME`: the peer port only from this
    /// cluster's pods, the client port as `clientFrom` says.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who may reach the client port; anyone when empty. NetworkPolicyPeer
    /// entries (podSelector, namespaceSelector, ipBlock). This cluster's own
    /// pods and the operator are always allowed in addition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_from: Vec<NetworkPolicyPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec {
            enabled: true,
            client_from: Vec::new(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Once the cluster is initialized the operator creates the user `root`
    /// (password in Secret `NAME-root`) and turns auth on: every request
    /// then needs a token or a client certificate naming a user. Turning it
    /// off must be explicit; it needs TLS (the operator is `root` by its
    /// client certificate). The operator never turns auth off again.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for AuthSpec {
    fn default() -> Self {
        AuthSpec { enabled: true }
    }
}

/// Whether the nodes require authentication, as the leader reports it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AuthState {
    /// Requests need a token or a client certificate.
    Enabled,
    /// Not yet: the operator turns it on once the cluster is initialized.
    Pending,
    /// Off, as `spec.auth.enabled: false` asks.
    Disabled,
    /// The nodes have no auth API (an older kvnode image).
    Unsupported,
}

fn default_replicas() -> i32 {
    3
}

pub(crate) fn default_image() -> String {
    format!("raftkv/kvnode:{}", env!("CARGO_PKG_VERSION"))
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each node's volume, e.g. `10Gi`. Fixed once the StatefulSet
    /// exists (Kubernetes does not allow changing its volume claim templates).
    #[schemars(schema_with = "quantity_schema")]
    pub size: Quantity,
    /// Storage class of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: Quantity("1Gi".into()),
            storage_class_name: None,
        }
    }
}

/// Container resources with the shape of a Kubernetes ResourceRequirements,
/// limited to the fields every supported Kubernetes version knows.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map_schema")]
    pub limits: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map_schema")]
    pub requests: BTreeMap<String, Quantity>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RetentionPolicy {
    #[default]
    Retain,
    Delete,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetentionPolicy {
    /// Volume of a pod removed by a scale-down. The operator deletes it
    /// itself after the member left the cluster and the pod is gone.
    #[serde(default)]
    pub when_scaled: RetentionPolicy,
    /// Volumes of all pods when the KvCluster is deleted.
    #[serde(default)]
    pub when_deleted: RetentionPolicy,
}

/// Signed integer types on purpose: their schema formats (int32, int64)
/// are the ones every apiserver version knows.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaftSpec {
    /// `--heartbeat-interval-ms`; the kvnode default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub heartbeat_interval_ms: Option<i32>,
    /// `--election-timeout-ms`; at least three times the heartbeat interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub election_timeout_ms: Option<i32>,
    /// `--snapshot-log-threshold`: log entries between snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub snapshot_log_threshold: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra pod labels (the operator's own selector labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Replaces the default, a preferred anti-affinity that spreads the
    /// pods over nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Merged field by field over the default pod security context
    /// (runAsNonRoot, uid/gid/fsGroup 65532, seccomp RuntimeDefault): the
    /// fields set here win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Merged field by field over the default kvnode container security
    /// context (no privilege escalation, all capabilities dropped,
    /// read-only root filesystem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,
    /// How the pods spread over zones or nodes; none by default (the
    /// default anti-affinity already prefers one pod per node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// PriorityClass of the pods; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Extra environment variables of the kvnode container, after the
    /// operator's own (`POD_NAME`, `POD_NAMESPACE` and every `KVNODE_*`
    /// name are refused: they would change what the operator configures).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// Coarse state for humans and `kubectl get`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// No raft cluster exists yet (waiting for pod 0 to serve).
    Pending,
    /// Members, voters or pods do not match the spec yet; a step is under way.
    Scaling,
    /// All desired pods are healthy voters.
    Running,
    /// All desired pods are voters; pods of an older template are being
    /// replaced one at a time (see `status.rollout`).
    Updating,
    /// A quorum, the leader or the data is missing; changes are held.
    Degraded,
    /// `spec.paused` is set.
    Paused,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MemberRole {
    Leader,
    Voter,
    Learner,
}

/// One raft member as the operator last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Raft node id, as a decimal string: ids are u64 and may exceed what
    /// JSON integers carry exactly.
    pub id: String,
    /// The pod this member runs in; unset when no pod reports this id
    /// (a member whose volume was lost, or one not created by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub role: MemberRole,
    /// Its pod serves and reports this id as a member of the cluster.
    pub healthy: bool,
    /// Log entries behind the leader (unset when the leader has no report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// Learners only: since when it has been healthy and within the lag
    /// threshold. Kept in status so an operator restart does not reset the
    /// stabilization time before promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caught_up_since: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KvClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// kvnode pods that exist (the scale subresource reads this).
    #[serde(default)]
    pub replicas: i32,
    /// kvnode pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Pod name of the raft leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Set once the cluster was initialized; the operator never initializes
    /// a second cluster under the same KvCluster (that would lose the data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// How many voters may fail while a quorum remains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_tolerance: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// Whether the nodes require authentication (`spec.auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthState>,
    /// The pods against the StatefulSet's current pod template; unset
    /// until the StatefulSet reports its revisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// The last disaster recovery the operator ran on request (annotation
    /// `raftkv.io/force-new-cluster`); a request is run once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryStatus>,
    /// `Available`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Progress of a rolling replacement of the pods (a changed pod template:
/// image, resources, env, ...). The operator deletes one outdated pod at a
/// time and the StatefulSet recreates it from the new template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The StatefulSet's `status.currentRevision`: the template the pods
    /// ran before the rollout (equal to `updateRevision` once done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// The StatefulSet's `status.updateRevision`: the template pods are
    /// replaced with.
    pub update_revision: String,
    /// Pods (not terminating) that run `updateRevision`.
    pub updated: i32,
    /// Pods the rollout covers: the StatefulSet's replicas.
    pub total: i32,
    /// The pod the rollout waits for (deleted and not yet back Ready on
    /// `updateRevision` and caught up), and since when. Kept so that an
    /// operator restart does not restart the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Time>,
}

/// A disaster recovery the operator ran: the survivor it made the only
/// voter of the cluster (`POST /v1/cluster/force-new-cluster`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryStatus {
    /// The value of the annotation `raftkv.io/force-new-cluster` that asked
    /// for it; another value asks again.
    pub request: String,
    /// The survivor's pod.
    pub survivor: String,
    /// The survivor's node id, kept by the recovered cluster.
    pub node_id: String,
    /// The survivor's applied log index when it was chosen: writes applied
    /// by no survivor beyond it are lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<i64>,
    pub at: Time,
}

/// The regular expression Kubernetes itself publishes for quantities.
const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// A quantity as the apiserver validates it (k8s-openapi's own schema has
/// no pattern, so `size: lots` would only fail later in the StatefulSet).
/// The pattern applies to the string form; integers are always valid.
fn quantity_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": true,
    })
}

/// A plain string enum: the derived schema of an optional enum lists
/// `null` among the values, which older apiservers may refuse.
fn pull_policy_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["Always", "IfNotPresent", "Never"],
    })
}

fn issuer_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["operator", "certManager"],
        "default": "operator",
    })
}

fn quantity_map_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": quantity_schema(generator),
    })
}

/// The CRD as YAML, exactly what `crds/kvclusters.raftkv.io.yaml` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&KvCluster::crd())
}

/// The KvBackup CRD, exactly what `crds/kvbackups.raftkv.io.yaml` holds.
pub fn backup_crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&crate::backup::KvBackup::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_spec_gets_documented_defaults() {
        let spec: KvClusterSpec = serde_json::from_str("{}").expect("empty spec parses");
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.storage.size, Quantity("1Gi".into()));
        assert_eq!(
            spec.pvc_retention_policy.when_scaled,
            RetentionPolicy::Retain
        );
        assert_eq!(
            spec.pvc_retention_policy.when_deleted,
            RetentionPolicy::Retain
        );
        assert!(spec.image.starts_with("raftkv/kvnode:"));
        assert!(!spec.paused);
        assert!(spec.tls.enabled, "TLS is on unless turned off explicitly");
        assert_eq!(spec.tls.issuer, TlsIssuer::Operator);
        assert!(spec.network_policy.enabled);
        assert!(spec.network_policy.client_from.is_empty());

        let spec: KvClusterSpec = serde_json::from_str(
            r#"{"tls": {"issuer": "certManager", "certManager": {"issuerRef": {"name": "ca"}}}}"#,
        )
        .expect("cert-manager spec parses");
        assert!(spec.tls.enabled, "naming an issuer keeps TLS on");
        let issuer = spec.tls.cert_manager.expect("certManager").issuer_ref;
        assert_eq!(
            (issuer.kind.as_str(), issuer.group.as_str()),
            ("Issuer", "cert-manager.io")
        );
        assert!(serde_json::from_str::<KvClusterSpec>(r#"{"tls": {"issuer": "vault"}}"#).is_err());
    }

    #[test]
    fn crd_has_names_subresources_and_validation() {
        let crd = KvCluster::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("kvclusters.raftkv.io"));
        assert_eq!(crd.spec.names.short_names, Some(vec!["kvc".to_owned()]));
        let version = &crd.spec.versions[0];
        let sub = version.subresources.as_ref().expect("subresources");
        assert!(sub.status.is_some());
        let scale = sub.scale.as_ref().expect("scale subresource");
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.replicas");
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Replicas", "Ready", "Leader", "Phase", "Age"]);

        let schema = serde_json::to_value(&version.schema).expect("schema serializes");
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(spec["replicas"]["minimum"].as_f64(), Some(1.0));
        assert_eq!(
            spec["replicas"]["maximum"].as_f64(),
            Some(f64::from(MAX_REPLICAS))
        );
        assert_eq!(
            spec["pvcRetentionPolicy"]["properties"]["whenScaled"]["enum"],
            serde_json::json!(["Retain", "Delete"])
        );
        assert_eq!(
            spec["storage"]["properties"]["size"]["pattern"],
            QUANTITY_PATTERN
        );
        let tls = &spec["tls"]["properties"];
        assert_eq!(
            tls["issuer"]["enum"],
            serde_json::json!(["operator", "certManager"])
        );
        assert_eq!(tls["enabled"]["default"], true);
        assert_eq!(
            tls["certManager"]["properties"]["issuerRef"]["required"],
            serde_json::json!(["name"])
        );
        assert_eq!(
            spec["networkPolicy"]["properties"]["enabled"]["default"],
            true
        );
        // kube-apiserver 1.20 ignores CEL rules: validation must not depend on them.
        let text = schema.to_string();
        assert!(!text.contains("x-kubernetes-validations"));
        assert!(
            !text.contains("\"uint"),
            "formats unknown to older apiservers"
        );
        assert!(!has_null_enum_value(&schema), "an enum lists null: {text}");
    }

    /// Older apiservers may refuse a schema whose enum lists `null`.
    fn has_null_enum_value(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::Object(map) => map.iter().any(|(key, v)| {
                (key == "enum"
                    && v.as_array()
                        .is_some_and(|e| e.contains(&serde_json::Value::Null)))
                    || has_null_enum_value(v)
            }),
            serde_json::Value::Array(items) => items.iter().any(has_null_enum_value),
            _ => false,
        }
    }
}
