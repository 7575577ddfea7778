//! The simulated cluster of the planner tests: a StatefulSet whose pods
//! follow it at once, volumes that keep a node id, and the raft membership
//! the nodes form, changed only by the steps the planner returns.

use std::collections::{BTreeMap, BTreeSet};

use kvclient::{FollowerProgress, Member, MemberInfo, Membership};

use super::*;

#[derive(Clone, Debug)]
pub(super) struct SimPod {
    pub(super) id: NodeId,
    /// Process serves HTTP.
    pub(super) up: bool,
    /// The StatefulSet template revision it was created from.
    pub(super) revision: String,
    /// How many times this pod was created (its uid changes each time).
    pub(super) incarnation: u32,
    /// Reconcile rounds until a recreated pod serves again.
    pub(super) starting: u32,
}

#[derive(Clone, Debug)]
pub(super) struct Raft {
    pub(super) cluster_id: String,
    pub(super) voters: Vec<NodeId>,
    pub(super) learners: Vec<NodeId>,
    pub(super) leader: NodeId,
    pub(super) term: u64,
    pub(super) names: BTreeMap<NodeId, String>,
    /// Ids that ever joined (hold cluster data even after removal).
    pub(super) joined: BTreeSet<NodeId>,
}

/// A Kubernetes namespace with one KvCluster's StatefulSet, pods, PVCs and
/// the raft cluster its nodes form. Pods follow the StatefulSet at once
/// (an instant kubelet); volumes keep the node id like kvnode's data dir.
#[derive(Clone, Debug)]
pub(super) struct World {
    pub(super) statefulset: Option<i32>,
    pub(super) pods: BTreeMap<u32, SimPod>,
    /// ordinal -> node id stored on the volume.
    pub(super) volumes: BTreeMap<u32, NodeId>,
    /// How many times each ordinal got a fresh volume.
    pub(super) volume_generation: BTreeMap<u32, u64>,
    pub(super) raft: Option<Raft>,
    pub(super) lag: BTreeMap<NodeId, u64>,
    pub(super) now: i64,
    /// The nodes require authentication (auth is cluster state in raft).
    pub(super) auth_enabled: bool,
    /// Secret `kv-root`'s password.
    pub(super) root_password: Option<Password>,
    /// The StatefulSet's update revision: a hash of the pod template the
    /// planner last applied. Pods made before the first apply get it then.
    pub(super) template: Option<String>,
    /// Rounds a pod deleted by a rollout takes to serve again.
    pub(super) restart_ticks: u32,
    /// Pods deleted by `ReplacePod`, in order, with the role they had.
    pub(super) replaced: Vec<(String, Role)>,
    /// The KvCluster's `raftkv.io/force-new-cluster` annotation.
    pub(super) recovery_request: Option<String>,
}

impl World {
    /// Auth is already on, so the membership tests see membership steps only
    /// (`auth_tests.rs` starts from auth off).
    pub(super) fn empty() -> World {
        World {
            statefulset: None,
            pods: BTreeMap::new(),
            volumes: BTreeMap::new(),
            volume_generation: BTreeMap::new(),
            raft: None,
            lag: BTreeMap::new(),
            now: 0,
            auth_enabled: true,
            root_password: Some(Password::new("sim-root-password".into())),
            template: None,
            restart_ticks: 0,
            replaced: Vec::new(),
            recovery_request: None,
        }
    }

    /// A running cluster of `n` voters kv-0..kv-{n-1}, `leader` leading.
    pub(super) fn running(n: u32, leader: u32) -> World {
        let mut world = World::empty();
        world.set_statefulset(i32::try_from(n).expect("small"));
        let voters: Vec<NodeId> = (0..n).map(|o| id(o, 1)).collect();
        world.raft = Some(Raft {
            cluster_id: "c1".into(),
            voters: voters.clone(),
            learners: vec![],
            leader: id(leader, 1),
            term: 3,
            names: (0..n).map(|o| (id(o, 1), pod_name(o))).collect(),
            joined: voters.into_iter().collect(),
        });
        world
    }

    pub(super) fn set_statefulset(&mut self, replicas: i32) {
        self.statefulset = Some(replicas);
        let replicas = u32::try_from(replicas).expect("non-negative");
        self.pods.retain(|o, _| *o < replicas);
        for ordinal in 0..replicas {
            if self.pods.contains_key(&ordinal) {
                continue;
            }
            let id = *self.volumes.entry(ordinal).or_insert_with(|| {
                let generation = self.volume_generation.entry(ordinal).or_insert(0);
                *generation += 1;
                id(ordinal, *generation)
            });
            let revision = self.template.clone().unwrap_or_default();
            self.pods.insert(
                ordinal,
                SimPod {
                    id,
                    up: true,
                    revision,
                    incarnation: 1,
                    starting: 0,
                },
            );
        }
    }

    /// The volume of `ordinal` is lost: the pod restarts with a new node.
    /// If it led, the remaining voters elect the lowest one.
    pub(super) fn lose_volume(&mut self, ordinal: u32) {
        self.volumes.remove(&ordinal);
        let lost = self.pods.remove(&ordinal).map(|p| p.id);
        if let Some(replicas) = self.statefulset {
            self.set_statefulset(replicas);
        }
        let alive: BTreeSet<NodeId> = self.pods.values().map(|p| p.id).collect();
        if let Some(raft) = self.raft.as_mut()
            && lost == Some(raft.leader)
        {
            raft.leader = *raft
                .voters
                .iter()
                .find(|v| alive.contains(v))
                .expect("a voter survives");
            raft.term += 1;
        }
    }

    /// The volumes of `ordinals` are lost at once: their pods restart as
    /// new nodes, and nobody is elected (a surviving leader, if any, keeps
    /// calling itself leader without a quorum).
    pub(super) fn lose_volumes(&mut self, ordinals: &[u32]) {
        for ordinal in ordinals {
            self.volumes.remove(ordinal);
            self.pods.remove(ordinal);
        }
        if let Some(replicas) = self.statefulset {
            self.set_statefulset(replicas);
        }
    }

    pub(super) fn down(&mut self, ordinal: u32) {
        self.pods.get_mut(&ordinal).expect("pod exists").up = false;
    }

    pub(super) fn member_status(&self, raft: &Raft, node: NodeId) -> ClusterStatus {
        let member = |id: &NodeId| Member {
            id: *id,
            info: MemberInfo {
                name: raft.names.get(id).cloned().unwrap_or_default(),
                peer_url: String::new(),
                client_url: String::new(),
            },
        };
        let role = if node == raft.leader {
            Role::Leader
        } else if raft.voters.contains(&node) {
            Role::Follower
        } else {
            Role::Learner
        };
        ClusterStatus {
            id: node,
            name: raft.names.get(&node).cloned().unwrap_or_default(),
            cluster_id: Some(raft.cluster_id.clone()),
            role,
            term: raft.term,
            leader: Some(member(&raft.leader)),
            membership: Membership {
                voters: raft.voters.iter().map(member).collect(),
                learners: raft.learners.iter().map(member).collect(),
                joint: false,
            },
            last_log_index: Some(1000),
            committed_index: Some(1000),
            applied_index: Some(1000),
            revision: 0,
            followers: (role == Role::Leader).then(|| {
                raft.voters
                    .iter()
                    .chain(&raft.learners)
                    .filter(|id| **id != node)
                    .map(|id| FollowerProgress {
                        id: *id,
                        matched_index: Some(1000),
                        lag: self.lag.get(id).copied().unwrap_or(0),
                    })
                    .collect()
            }),
            peer_url: String::new(),
            client_url: String::new(),
        }
    }

    pub(super) fn observe(&self) -> Observed {
        let pods = self
            .pods
            .iter()
            .map(|(&ordinal, pod)| {
                let name = pod_name(ordinal);
                let joined = self.raft.as_ref().filter(|r| r.joined.contains(&pod.id));
                let node = if pod.starting > 0 {
                    NodeView::NoAddress
                } else if !pod.up {
                    NodeView::Unreachable {
                        endpoint: endpoint(ordinal),
                        error: "connection refused".into(),
                    }
                } else {
                    let mut status = match joined {
                        Some(raft) => self.member_status(raft, pod.id),
                        None => uninitialized(pod.id, &name),
                    };
                    status.name = name.clone();
                    status.peer_url = format!("http://{name}.kv-peer.db.svc.cluster.local:7380");
                    status.client_url = format!("http://{name}.kv-peer.db.svc.cluster.local:7379");
                    NodeView::Serving {
                        endpoint: endpoint(ordinal),
                        status: Box::new(status),
                        auth: crate::auth::NodeAuth::Known(kvclient::AuthStatus {
                            enabled: self.auth_enabled && joined.is_some(),
                            revision: 1,
                        }),
                    }
                };
                let member = joined
                    .is_some_and(|r| r.voters.contains(&pod.id) || r.learners.contains(&pod.id));
                ObservedPod {
                    uid: format!("{name}/{}", pod.incarnation),
                    revision: Some(pod.revision.clone()),
                    name,
                    ordinal,
                    ready: pod.up && pod.starting == 0 && member,
                    terminating: false,
                    node,
                }
            })
            .collect();
        Observed {
            statefulset_replicas: self.statefulset,
            statefulset_revisions: self
                .template
                .clone()
                .filter(|_| self.statefulset.is_some())
                .map(|update| Revisions {
                    update,
                    current: None,
                    fresh: true,
                }),
            statefulset_update_strategy: self.statefulset.map(|_| "OnDelete".into()),
            statefulset_deleting: false,
            expandable_classes: BTreeMap::new(),
            statefulset_storage: None,
            statefulset_tls: None,
            tls: ObservedTls::default(),
            root_password: self.root_password.clone(),
            pods,
            pvcs: self
                .volumes
                .keys()
                .map(|&ordinal| ObservedPvc {
                    name: names::pvc("kv", ordinal),
                    ordinal,
                    requested: None,
                    capacity: None,
                    storage_class: None,
                })
                .collect(),
        }
    }

    pub(super) fn leader_endpoint(&self) -> String {
        let raft = self.raft.as_ref().expect("initialized");
        let ordinal = self
            .pods
            .iter()
            .find(|(_, p)| p.id == raft.leader)
            .map(|(o, _)| *o)
            .expect("leader has a pod");
        endpoint(ordinal)
    }

    pub(super) fn healthy(&self, id: NodeId) -> bool {
        self.pods
            .values()
            .any(|p| p.id == id && p.up && p.starting == 0)
    }

    /// One reconcile interval passes: recreated pods start.
    pub(super) fn tick(&mut self) {
        for pod in self.pods.values_mut() {
            pod.starting = pod.starting.saturating_sub(1);
        }
    }

    /// A pod replaced by the rollout: recreated from the current
    /// template on the same volume, so with the same node id.
    fn replace_pod(&mut self, step: &Step, pod: &str, uid: &str) {
        let ordinal = names::pod_ordinal("kv", pod).expect("ordinal");
        let sim = self.pods.get(&ordinal).expect("pod exists");
        assert_eq!(
            format!("{pod}/{}", sim.incarnation),
            uid,
            "{step}: stale uid"
        );
        let node = sim.id;
        if let Some(raft) = &self.raft {
            assert!(
                node != raft.leader || raft.voters.len() == 1,
                "{step}: deleted the leader of a multi-voter cluster"
            );
            let others_healthy = raft
                .voters
                .iter()
                .filter(|v| **v != node)
                .all(|v| self.healthy(*v));
            assert!(others_healthy, "{step}: another voter is down");
            let role = self.member_status(raft, node).role;
            self.replaced.push((pod.to_owned(), role));
        }
        let template = self.template.clone().expect("a template was applied");
        let restart = self.restart_ticks;
        let sim = self.pods.get_mut(&ordinal).expect("pod exists");
        sim.revision = template;
        sim.incarnation += 1;
        sim.up = true;
        sim.starting = restart;
    }

    /// kvnode's force-new-cluster: refused while a quorum answers; else
    /// the node restarts as the only voter, keeping its id and data.
    fn force_new_cluster(&mut self, step: &Step) {
        let Step::ForceNewCluster {
            endpoint: ep,
            pod,
            id,
            cluster_id,
            ..
        } = step
        else {
            unreachable!()
        };
        let ordinal = names::pod_ordinal("kv", pod).expect("ordinal");
        assert_eq!(*ep, endpoint(ordinal), "{step}: sent to another pod");
        let restart = self.restart_ticks.max(1);
        let voters = self.raft.as_ref().expect("initialized").voters.clone();
        let healthy = voters.iter().filter(|v| self.healthy(**v)).count();
        assert!(
            healthy < quorum(voters.len()),
            "{step}: refused, a quorum answers"
        );
        let raft = self.raft.as_mut().expect("initialized");
        assert_eq!(*cluster_id, raft.cluster_id);
        assert!(raft.voters.contains(id), "{step}: not a voter");
        raft.voters = vec![*id];
        raft.learners.clear();
        raft.leader = *id;
        raft.term += 1;
        let sim = self.pods.get_mut(&ordinal).expect("pod exists");
        assert_eq!(sim.id, *id);
        sim.starting = restart;
    }

    /// Executes a step the way kvnode would, asserting raft safety rules.
    pub(super) fn execute(&mut self, step: &Step) {
        if let Step::ReplacePod { pod, uid, .. } = step {
            self.replace_pod(step, pod, uid);
            return;
        }
        if let Step::ForceNewCluster { .. } = step {
            self.force_new_cluster(step);
            return;
        }
        if !matches!(
            step,
            Step::Initialize { .. } | Step::RestoreFromBackup { .. }
        ) {
            let via = match step {
                Step::AddLearner { leader, .. }
                | Step::Promote { leader, .. }
                | Step::TransferLeadership { leader, .. }
                | Step::Demote { leader, .. }
                | Step::Remove { leader, .. }
                | Step::EnableAuth { leader, .. } => leader.clone(),
                Step::Initialize { .. }
                | Step::RestoreFromBackup { .. }
                | Step::ReplacePod { .. }
                | Step::ForceNewCluster { .. } => unreachable!(),
            };
            assert_eq!(via, self.leader_endpoint(), "{step}: sent to a non-leader");
        }
        let before = self.raft.as_ref().map(|r| r.voters.clone());
        match step {
            // A restore makes node 0 the only voter, as an init does.
            Step::Initialize { pod, endpoint: ep }
            | Step::RestoreFromBackup { pod, endpoint: ep } => {
                assert!(self.raft.is_none(), "initialized twice");
                let ordinal = names::pod_ordinal("kv", pod).expect("ordinal");
                assert_eq!(*ep, endpoint(ordinal));
                let node = self.pods[&ordinal].id;
                self.raft = Some(Raft {
                    cluster_id: "c1".into(),
                    voters: vec![node],
                    learners: vec![],
                    leader: node,
                    term: 1,
                    names: BTreeMap::from([(node, pod.clone())]),
                    joined: BTreeSet::from([node]),
                });
            }
            Step::AddLearner { request, .. } => {
                let raft = self.raft.as_mut().expect("initialized");
                assert!(
                    !raft.voters.contains(&request.id),
                    "voter re-added as learner"
                );
                if !raft.learners.contains(&request.id) {
                    raft.learners.push(request.id);
                }
                raft.names.insert(request.id, request.name.clone());
                raft.joined.insert(request.id);
            }
            Step::Promote { id, voters, .. } | Step::Demote { id, voters, .. } => {
                let raft = self.raft.as_mut().expect("initialized");
                let all: BTreeSet<_> = raft.voters.iter().chain(&raft.learners).copied().collect();
                assert!(
                    voters.iter().all(|v| all.contains(v)),
                    "voters must be members"
                );
                assert!(voters.contains(&raft.leader), "{step}: drops the leader");
                let old = std::mem::replace(&mut raft.voters, voters.clone());
                raft.learners.retain(|l| !voters.contains(l));
                // kvnode keeps a dropped voter as a learner until removed.
                for dropped in old.into_iter().filter(|v| !voters.contains(v)) {
                    raft.learners.push(dropped);
                }
                if matches!(step, Step::Promote { .. }) {
                    assert!(raft.voters.contains(id));
                }
            }
            Step::TransferLeadership { to, .. } => {
                let raft = self.raft.as_mut().expect("initialized");
                assert!(raft.voters.contains(to), "leadership to a non-voter");
                raft.leader = *to;
                raft.term += 1;
            }
            Step::Remove { id, .. } => {
                let raft = self.raft.as_mut().expect("initialized");
                assert_ne!(*id, raft.leader, "removed the leader");
                raft.voters.retain(|v| v != id);
                raft.learners.retain(|v| v != id);
            }
            Step::ReplacePod { .. } | Step::ForceNewCluster { .. } => {
                unreachable!("handled above")
            }
            Step::EnableAuth { password, .. } => {
                assert!(self.raft.is_some(), "auth turned on before initialization");
                assert_eq!(
                    Some(password),
                    self.root_password.as_ref(),
                    "root made with a password other than the Secret's"
                );
                self.auth_enabled = true;
            }
        }
        // The new voter set must keep a healthy quorum whenever the old did.
        if let (Some(before), Some(raft)) = (before, self.raft.as_ref()) {
            let healthy = |set: &[NodeId]| set.iter().filter(|v| self.healthy(**v)).count();
            if healthy(&before) >= quorum(before.len()) {
                assert!(
                    healthy(&raft.voters) >= quorum(raft.voters.len()),
                    "{step} lost the quorum: {:?}",
                    raft.voters
                );
            }
        }
    }

    /// The StatefulSet size and PVC deletions of a plan, and the root
    /// Secret (a create: an existing one is kept).
    pub(super) fn apply_objects(&mut self, plan: &Plan) {
        if plan.create_root_secret && self.root_password.is_none() {
            self.root_password = Some(Password::new(format!("generated at {}", self.now)));
        }
        if let Some(sts) = plan.objects.as_ref().and_then(|o| o.statefulset.as_ref()) {
            let spec = sts.spec.as_ref().expect("spec");
            let replicas = spec.replicas.expect("replicas set");
            let template = template_hash(&spec.template);
            if self.template.is_none() {
                for pod in self.pods.values_mut() {
                    pod.revision.clone_from(&template);
                }
            }
            self.template = Some(template);
            if let Some(raft) = &self.raft {
                let kept = u32::try_from(replicas).expect("non-negative");
                for (ordinal, pod) in &self.pods {
                    let member = raft.voters.contains(&pod.id) || raft.learners.contains(&pod.id);
                    assert!(
                        *ordinal < kept || !member,
                        "StatefulSet shrunk under member {}",
                        pod_name(*ordinal)
                    );
                }
            }
            self.set_statefulset(replicas);
        }
        for pvc in &plan.delete_pvcs {
            let ordinal = names::pvc_ordinal("kv", pvc).expect("ordinal");
            assert!(
                !self.pods.contains_key(&ordinal),
                "deleted the PVC of a running pod"
            );
            self.volumes.remove(&ordinal);
        }
    }

    pub(super) fn voters_by_pod(&self) -> Vec<String> {
        let raft = self.raft.as_ref().expect("initialized");
        let mut voters: Vec<(u32, String)> = raft
            .voters
            .iter()
            .map(|v| {
                let name = raft.names[v].clone();
                (names::pod_ordinal("kv", &name).expect("ordinal"), name)
            })
            .collect();
        voters.sort();
        voters.into_iter().map(|(_, n)| n).collect()
    }
}

/// Stands in for the StatefulSet controller's revision hash.
fn template_hash(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    serde_json::to_string(template)
        .expect("template serializes")
        .hash(&mut hasher);
    format!("{:010x}", hasher.finish() % 0xff_ffff_ffff)
}

pub(super) fn uninitialized(id: NodeId, name: &str) -> ClusterStatus {
    ClusterStatus {
        id,
        name: name.into(),
        cluster_id: None,
        role: Role::Uninitialized,
        term: 0,
        leader: None,
        membership: Membership::default(),
        last_log_index: None,
        committed_index: None,
        applied_index: None,
        revision: 0,
        followers: None,
        peer_url: String::new(),
        client_url: String::new(),
    }
}
