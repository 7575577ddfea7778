use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Owner;
use crate::crd::KvClusterSpec;
use crate::names::{self, CLIENT_PORT, CONTAINER_NAME, DATA_DIR, DATA_VOLUME, PEER_PORT};

/// Long enough for a node to hand leadership to another voter and flush
/// on SIGTERM (kvnode's shutdown path), short enough not to stall drains.
const TERMINATION_GRACE_SECONDS: i64 = 30;
/// The group the kvnode image runs as, so the mounted volume is writable by
/// a non-root process.
const FS_GROUP: i64 = 65532;

/// What the planner decides about the StatefulSet besides the spec.
#[derive(Clone, Debug, PartialEq)]
pub struct StatefulSetParams<'a> {
    /// Pods to run: the planner grows and shrinks this one step at a time,
    /// it is not simply `spec.replicas`.
    pub replicas: i32,
    /// DNS suffix of the Kubernetes cluster, used in advertised URLs.
    pub cluster_domain: &'a str,
}

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
    PodSpec {
        containers: vec![container(owner, spec, params)],
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        affinity: Some(
            spec.pod
                .affinity
                .clone()
                .unwrap_or_else(|| spread_over_nodes(selector)),
        ),
        node_selector: non_empty(&spec.pod.node_selector),
        tolerations: (!spec.pod.tolerations.is_empty()).then(|| spec.pod.tolerations.clone()),
        security_context: Some(PodSecurityContext {
            fs_group: Some(FS_GROUP),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    }
}

fn container(owner: &Owner, spec: &KvClusterSpec, params: &StatefulSetParams) -> Container {
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        args: Some(args(owner, spec, params)),
        env: Some(vec![
            downward_env("POD_NAME", "metadata.name"),
            downward_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![
            container_port("client", CLIENT_PORT),
            container_port("peer", PEER_PORT),
        ]),
        // Not ready until the node is a member of an initialized cluster:
        // the client Service then only routes to members.
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        // Generous: a node replaying its log is alive but slow, and a
        // restart would only make it start over.
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..http_probe("/healthz", 10, 6)
        }),
        resources: spec.resources.as_ref().map(|r| ResourceRequirements {
            limits: non_empty(&r.limits),
            requests: non_empty(&r.requests),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
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
    let mut args = vec![
        "--name=$(POD_NAME)".to_owned(),
        format!("--data-dir={DATA_DIR}"),
        format!("--client-addr=0.0.0.0:{CLIENT_PORT}"),
        format!("--peer-addr=0.0.0.0:{PEER_PORT}"),
        format!("--advertise-client-url=http://{host}:{CLIENT_PORT}"),
        format!("--advertise-peer-url=http://{host}:{PEER_PORT}"),
    ];
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

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(CLIENT_PORT),
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
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    use super::*;
    use crate::build::fixtures::kvc;

    fn build(spec: serde_json::Value, replicas: i32) -> StatefulSet {
        let kvc = kvc(spec);
        let owner = Owner::of(&kvc).expect("fixture has identity");
        statefulset(
            &owner,
            &kvc.spec,
            &StatefulSetParams {
                replicas,
                cluster_domain: "cluster.local",
            },
        )
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
        let sts = build(
            json!({"resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
                   "imagePullPolicy": "IfNotPresent"}),
            3,
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
        ] {
            assert!(
                !text.contains(&format!("\"{newer}\"")),
                "sends {newer}: {text}"
            );
        }
    }
}
