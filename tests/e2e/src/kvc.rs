//! KvClusters as a user sees them: the manifest, `kubectl apply`, `kubectl
//! scale`, and the status fields docs/api.md promises. The status types here are
//! written from docs/api.md, not shared with the operator, so that a change of the
//! operator's wire format shows up as a failing test.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Resource as _, ResourceExt};
use kvclient::{ClusterStatus, NodeId, Role};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::kv::{Kv, Target};
use crate::scenario::Scenario;

/// Field manager of the suite's server-side applies (what `kubectl apply
/// --server-side` would use, under another name).
pub const FIELD_MANAGER: &str = "raftkv-e2e";

pub fn resource() -> ApiResource {
    ApiResource {
        group: "raftkv.io".into(),
        version: "v1alpha1".into(),
        api_version: "raftkv.io/v1alpha1".into(),
        kind: "KvCluster".into(),
        plural: "kvclusters".into(),
    }
}

pub fn api(s: &Scenario) -> Api<DynamicObject> {
    Api::namespaced_with(s.client.clone(), &s.namespace, &resource())
}

/// `examples/kvcluster.yaml` as JSON: the manifest the README tells users to apply.
pub fn example() -> anyhow::Result<Value> {
    // The runner's CARGO_MANIFEST_DIR, not the compile-time one: a target
    // directory shared by clones at different paths keeps the first path.
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let path = &format!("{dir}/../../examples/kvcluster.yaml");
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?;
    let manifest: Value =
        serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("parsing {path}: {e}"))?;
    anyhow::ensure!(
        manifest["kind"] == "KvCluster" && manifest["spec"]["replicas"] == 3,
        "{path} is not the 3-replica KvCluster the scenarios expect"
    );
    Ok(manifest)
}

/// The example under another name, with `changes` merged into its spec.
pub fn example_named(name: &str, spec_changes: Value) -> anyhow::Result<Value> {
    let mut manifest = example()?;
    manifest["metadata"]["name"] = json!(name);
    merge(&mut manifest["spec"], spec_changes);
    Ok(manifest)
}

fn merge(into: &mut Value, changes: Value) {
    match (into, changes) {
        (Value::Object(into), Value::Object(changes)) => {
            for (k, v) in changes {
                merge(into.entry(k).or_insert(Value::Null), v);
            }
        }
        (into, changes) => *into = changes,
    }
}

pub fn name_of(manifest: &Value) -> anyhow::Result<String> {
    manifest["metadata"]["name"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("manifest without metadata.name"))
}

/// `kubectl apply --server-side -f manifest` into the scenario's namespace.
pub async fn apply(s: &Scenario, manifest: &Value) -> anyhow::Result<DynamicObject> {
    let name = name_of(manifest)?;
    let mut manifest = manifest.clone();
    manifest["metadata"]["namespace"] = json!(s.namespace);
    api(s)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&manifest),
        )
        .await
        .map_err(|e| anyhow::anyhow!("applying KvCluster {name}: {e}"))
}

/// `kubectl scale kvc NAME --replicas=N`: a patch of the scale subresource.
pub async fn scale(s: &Scenario, name: &str, replicas: i32) -> anyhow::Result<()> {
    let scale = api(s)
        .patch_scale(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
        )
        .await
        .map_err(|e| anyhow::anyhow!("scaling KvCluster {name} to {replicas}: {e}"))?;
    let spec = scale.spec.and_then(|s| s.replicas);
    anyhow::ensure!(
        spec == Some(replicas),
        "the scale subresource answered spec.replicas {spec:?}, expected {replicas}"
    );
    let object = api(s)
        .get(name)
        .await
        .map_err(|e| anyhow::anyhow!("reading KvCluster {name}: {e}"))?;
    anyhow::ensure!(
        object.data["spec"]["replicas"] == replicas,
        "scaling did not change spec.replicas: {}",
        object.data["spec"]["replicas"]
    );
    Ok(())
}

// ---------------------------------------------------------------- status (docs/api.md)

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct KvcStatus {
    pub phase: Option<String>,
    #[serde(default)]
    pub replicas: i64,
    #[serde(default)]
    pub ready_replicas: i64,
    pub leader: Option<String>,
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    pub observed_generation: Option<i64>,
    /// `Enabled`, `Pending`, `Disabled`, `Unsupported` (spec.auth).
    pub auth: Option<String>,
    pub rollout: Option<RolloutStatus>,
}

/// `status.rollout` (docs/operator.md, Upgrades).
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub current_revision: Option<String>,
    pub update_revision: String,
    pub updated: i64,
    pub total: i64,
    pub waiting_for: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct MemberStatus {
    pub id: String,
    pub pod: Option<String>,
    pub role: String,
    pub healthy: bool,
    pub lag: Option<i64>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl KvcStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }

    /// One line for logs: phase, members and what the operator is doing.
    pub fn describe(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                format!(
                    "{}={}{}",
                    m.pod.as_deref().unwrap_or(&m.id),
                    m.role,
                    if m.healthy { "" } else { "(unhealthy)" }
                )
            })
            .collect();
        let progressing = self
            .condition("Progressing")
            .map(|c| {
                format!(
                    "{}: {}",
                    c.reason.as_deref().unwrap_or(""),
                    c.message.as_deref().unwrap_or("")
                )
            })
            .unwrap_or_default();
        format!(
            "phase {}, ready {}/{}, members [{}], progressing {progressing}",
            self.phase.as_deref().unwrap_or("-"),
            self.ready_replicas,
            self.replicas,
            members.join(" ")
        )
    }
}

pub fn status_of(object: &DynamicObject) -> Result<KvcStatus, String> {
    match object.data.get("status") {
        None | Some(Value::Null) => Ok(KvcStatus::default()),
        Some(s) => serde_json::from_value(s.clone())
            .map_err(|e| format!("status does not have the documented shape ({e}): {s}")),
    }
}

pub async fn status(s: &Scenario, name: &str) -> Result<(DynamicObject, KvcStatus), String> {
    let object = api(s)
        .get(name)
        .await
        .map_err(|e| format!("reading KvCluster {name}: {e}"))?;
    let status = status_of(&object)?;
    Ok((object, status))
}

// ---------------------------------------------------------------- convergence

/// A cluster at rest with `n` healthy voters, as checked by [`converged`].
#[derive(Debug, Clone)]
pub struct Converged {
    pub cluster_id: String,
    pub leader_pod: String,
    pub leader_id: NodeId,
    /// Node id of each pod, as the node reports it.
    pub ids: BTreeMap<String, NodeId>,
}

impl Converged {
    pub fn followers(&self) -> Vec<String> {
        self.ids
            .keys()
            .filter(|p| **p != self.leader_pod)
            .cloned()
            .collect()
    }
}

pub fn pod_names(name: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{name}-{i}")).collect()
}

pub fn pod_selector(name: &str) -> String {
    format!("app.kubernetes.io/name=raftkv,app.kubernetes.io/instance={name}")
}

/// `Ok` when everything agrees that KvCluster `name` is `n` healthy voters:
/// its status (phase Running for the current generation, Available, `n`
/// healthy members, one leader), the StatefulSet, the pods, and every node's
/// own report (same cluster, same leader, `n` voters named after the pods, no
/// learners, no joint configuration). `Err` says what does not agree yet.
pub async fn converged(s: &Scenario, name: &str, n: usize) -> Result<Converged, String> {
    let want: Vec<String> = pod_names(name, n);
    let want_set: BTreeSet<&str> = want.iter().map(String::as_str).collect();

    // 1. The KvCluster's status.
    let (object, st) = status(s, name).await?;
    if st.observed_generation.is_none() || st.observed_generation != object.meta().generation {
        return Err(format!(
            "status is for generation {:?}, the object is at {:?}",
            st.observed_generation,
            object.meta().generation
        ));
    }
    if st.phase.as_deref() != Some("Running") || !st.is_true("Available") {
        return Err(st.describe());
    }
    let member_pods: BTreeSet<&str> = st.members.iter().filter_map(|m| m.pod.as_deref()).collect();
    let leaders: Vec<&MemberStatus> = st.members.iter().filter(|m| m.role == "Leader").collect();
    if st.members.len() != n
        || member_pods != want_set
        || st.members.iter().any(|m| !m.healthy)
        || leaders.len() != 1
        || st
            .members
            .iter()
            .any(|m| m.role != "Leader" && m.role != "Voter")
    {
        return Err(format!("status members: {}", st.describe()));
    }
    if st.leader.as_deref() != leaders[0].pod.as_deref() {
        return Err(format!(
            "status.leader {:?} but the member with role Leader is {:?}",
            st.leader, leaders[0].pod
        ));
    }
    if st.replicas != n as i64 || st.ready_replicas != n as i64 {
        return Err(format!(
            "status replicas {} ready {}, want {n}",
            st.replicas, st.ready_replicas
        ));
    }

    // 2. The StatefulSet.
    let sts = s
        .api::<StatefulSet>()
        .get(name)
        .await
        .map_err(|e| format!("reading StatefulSet {name}: {e}"))?;
    let spec_replicas = sts.spec.as_ref().and_then(|s| s.replicas);
    let ready = sts.status.as_ref().and_then(|s| s.ready_replicas);
    if spec_replicas != Some(n as i32) || ready != Some(n as i32) {
        return Err(format!(
            "StatefulSet {name}: spec.replicas {spec_replicas:?}, ready {ready:?}, want {n}"
        ));
    }

    // 3. The pods.
    let pods = s
        .api::<Pod>()
        .list(&ListParams::default().labels(&pod_selector(name)))
        .await
        .map_err(|e| format!("listing pods: {e}"))?;
    let names: BTreeSet<String> = pods.items.iter().map(|p| p.name_any()).collect();
    if names.iter().map(String::as_str).collect::<BTreeSet<_>>() != want_set
        || pods
            .items
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_some() || !pod_ready(p))
    {
        let summary: Vec<String> = pods
            .items
            .iter()
            .map(crate::scenario::pod_summary)
            .collect();
        return Err(format!("pods: {}", summary.join("; ")));
    }

    // 4. The nodes' own reports.
    let mut reports: BTreeMap<String, ClusterStatus> = BTreeMap::new();
    for pod in &want {
        let report =
            s.kv.status(&Target::pod(pod))
                .await
                .map_err(|e| format!("status of {pod}: {e}"))?;
        reports.insert(pod.clone(), report);
    }
    let cluster_ids: BTreeSet<Option<&str>> =
        reports.values().map(|r| r.cluster_id.as_deref()).collect();
    let leader_pods: Vec<&String> = reports
        .iter()
        .filter(|(_, r)| r.role == Role::Leader)
        .map(|(p, _)| p)
        .collect();
    if cluster_ids.len() != 1 || cluster_ids.contains(&None) || leader_pods.len() != 1 {
        return Err(format!(
            "nodes disagree: cluster ids {cluster_ids:?}, leaders {leader_pods:?}"
        ));
    }
    let leader_pod = leader_pods[0].clone();
    let leader = &reports[&leader_pod];
    if let Some((pod, r)) = reports.iter().find(|(_, r)| {
        r.leader.as_ref().map(|l| l.id) != Some(leader.id)
            || !matches!(r.role, Role::Leader | Role::Follower)
    }) {
        return Err(format!(
            "{pod} is {:?} and sees leader {:?}, the leader is {leader_pod} (id {})",
            r.role,
            r.leader.as_ref().map(|l| l.id),
            leader.id
        ));
    }
    let membership = &leader.membership;
    let voter_names: BTreeSet<&str> = membership
        .voters
        .iter()
        .map(|m| m.info.name.as_str())
        .collect();
    let voter_ids: BTreeSet<NodeId> = membership.voter_ids().into_iter().collect();
    let pod_ids: BTreeSet<NodeId> = reports.values().map(|r| r.id).collect();
    if membership.joint
        || !membership.learners.is_empty()
        || voter_names != want_set
        || voter_ids != pod_ids
    {
        return Err(format!(
            "membership at the leader: voters {:?}, learners {:?}, joint {}; pods report ids {pod_ids:?}",
            membership
                .voters
                .iter()
                .map(|m| format!("{}={}", m.info.name, m.id))
                .collect::<Vec<_>>(),
            membership.learner_ids(),
            membership.joint
        ));
    }
    // The operator's member ids must be the nodes' ids.
    for m in &st.members {
        let pod = m.pod.as_deref().unwrap_or_default();
        let node = reports.get(pod).map(|r| r.id.to_string());
        if node.as_deref() != Some(m.id.as_str()) {
            return Err(format!(
                "status says {pod} is member {}, the node says {node:?}",
                m.id
            ));
        }
    }
    if st.leader.as_deref() != Some(leader_pod.as_str()) {
        return Err(format!(
            "status.leader {:?}, the nodes' leader is {leader_pod}",
            st.leader
        ));
    }
    Ok(Converged {
        cluster_id: leader.cluster_id.clone().unwrap_or_default(),
        leader_id: leader.id,
        leader_pod,
        ids: reports.iter().map(|(p, r)| (p.clone(), r.id)).collect(),
    })
}

pub async fn wait_converged(
    s: &Scenario,
    name: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Converged> {
    let c = s
        .wait(
            &format!("{name}: {n} healthy voters, phase Running"),
            timeout,
            async || converged(s, name, n).await,
        )
        .await?;
    s.log(format_args!(
        "{name} converged: leader {} (id {}), ids {:?}",
        c.leader_pod, c.leader_id, c.ids
    ));
    Ok(c)
}

/// Creates a KvCluster from `manifest` and waits until it has converged.
pub async fn create(
    s: &Scenario,
    manifest: &Value,
    timeout: Duration,
) -> anyhow::Result<Converged> {
    let name = name_of(manifest)?;
    let n = manifest["spec"]["replicas"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("manifest without spec.replicas"))? as usize;
    apply(s, manifest).await?;
    s.log(format_args!("applied KvCluster {name} ({n} replicas)"));
    wait_converged(s, name.as_str(), n, timeout).await
}

pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The current leader according to the nodes among `pods` that answer: the
/// one claiming leadership with the highest term.
pub async fn node_leader(kv: &Kv, pods: &[String]) -> Option<(String, ClusterStatus)> {
    let reports = futures::future::join_all(
        pods.iter()
            .map(|p| async move { (p.clone(), kv.status(&Target::pod(p)).await) }),
    )
    .await;
    reports
        .into_iter()
        .filter_map(|(p, r)| Some((p, r.ok()?)))
        .filter(|(_, r)| r.role == Role::Leader)
        .max_by_key(|(_, r)| r.term)
}

/// `spec.replicas` of a StatefulSet, `None` when it does not exist.
pub async fn statefulset_replicas(s: &Scenario, name: &str) -> anyhow::Result<Option<i32>> {
    let sts = s
        .api::<StatefulSet>()
        .get_opt(name)
        .await
        .map_err(|e| anyhow::anyhow!("reading StatefulSet {name}: {e}"))?;
    Ok(sts.map(|s| s.spec.and_then(|s| s.replicas).unwrap_or(1)))
}

/// The ordinal of `<name>-<n>`.
pub fn ordinal(name: &str, pod: &str) -> Option<usize> {
    pod.strip_prefix(name)?.strip_prefix('-')?.parse().ok()
}

/// The example's `pvcRetentionPolicy` must be what the scenarios assume.
pub fn policy(manifest: &Value) -> (String, String) {
    let p = &manifest["spec"]["pvcRetentionPolicy"];
    (
        p["whenScaled"].as_str().unwrap_or("Retain").to_owned(),
        p["whenDeleted"].as_str().unwrap_or("Retain").to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_is_the_documented_three_replica_cluster() {
        let m = example().expect("examples/kvcluster.yaml");
        assert_eq!(name_of(&m).expect("name"), "kv");
        assert_eq!(policy(&m), ("Delete".to_owned(), "Retain".to_owned()));
    }

    #[test]
    fn spec_changes_merge_into_the_example() {
        let m = example_named(
            "other",
            json!({"replicas": 1, "pvcRetentionPolicy": {"whenDeleted": "Delete"}}),
        )
        .expect("manifest");
        assert_eq!(m["metadata"]["name"], "other");
        assert_eq!(m["spec"]["replicas"], 1);
        assert_eq!(policy(&m), ("Delete".to_owned(), "Delete".to_owned()));
        assert_eq!(m["spec"]["storage"]["size"], "1Gi");
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal("kv", "kv-4"), Some(4));
        assert_eq!(ordinal("kv", "kvx-4"), None);
    }
}
