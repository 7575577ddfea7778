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
            self.pods.insert(ordinal, SimPod { id, up: true });
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
                let node = if !pod.up {
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
                    name,
                    ordinal,
                    ready: pod.up && member,
                    terminating: false,
                    node,
                }
            })
            .collect();
        Observed {
            statefulset_replicas: self.statefulset,
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
        self.pods.values().any(|p| p.id == id && p.up)
    }

    /// Executes a step the way kvnode would, asserting raft safety rules.
    pub(super) fn execute(&mut self, step: &Step) {
        if !matches!(step, Step::Initialize { .. }) {
            let via = match step {
                Step::AddLearner { leader, .. }
                | Step::Promote { leader, .. }
                | Step::TransferLeadership { leader, .. }
                | Step::Demote { leader, .. }
                | Step::Remove { leader, .. }
                | Step::EnableAuth { leader, .. } => leader.clone(),
                Step::Initialize { .. } => unreachable!(),
            };
            assert_eq!(via, self.leader_endpoint(), "{step}: sent to a non-leader");
        }
        let before = self.raft.as_ref().map(|r| r.voters.clone());
        match step {
            Step::Initialize { pod, endpoint: ep } => {
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
        if let Some(objects) = &plan.objects {
            let replicas = objects
                .statefulset
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .expect("replicas set");
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
