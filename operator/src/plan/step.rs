//! The planner's output vocabulary: one step (a membership change, or a
//! pod replaced by a rollout), and the events
//! published besides it.

use std::fmt;

use kvclient::{AddLearnerRequest, NodeId};

use crate::auth::Password;
use crate::reason::Reason;

/// One membership change. Each is idempotent on the node side, and the
/// planner re-derives it from observed state, so executing it twice (an
/// operator crash after the call, before the status write) is harmless.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Make pod 0's node a one-node cluster.
    Initialize { pod: String, endpoint: String },
    /// `spec.bootstrap.fromBackup`: node 0 starts the cluster from a backup
    /// instead of empty (the controller streams the object into it).
    RestoreFromBackup { pod: String, endpoint: String },
    AddLearner {
        leader: String,
        pod: String,
        request: AddLearnerRequest,
    },
    Promote {
        leader: String,
        pod: String,
        id: NodeId,
        voters: Vec<NodeId>,
    },
    TransferLeadership {
        leader: String,
        from_pod: String,
        to_pod: String,
        to: NodeId,
    },
    /// Drop a voter from the voter set (scale-down).
    Demote {
        leader: String,
        pod: String,
        id: NodeId,
        voters: Vec<NodeId>,
    },
    Remove {
        leader: String,
        pod: String,
        id: NodeId,
        why: Removal,
    },
    /// Make the user root (role root) with root's password and turn auth
    /// on (`spec.auth`). Not a membership change, but the same kind of
    /// idempotent call through the leader.
    EnableAuth {
        leader: String,
        pod: String,
        password: Password,
    },
    /// Disaster recovery: the survivor becomes the only voter of
    /// `cluster_id`, keeping its data (it exits and restarts to do so).
    /// The node refuses while a quorum answers.
    ForceNewCluster {
        endpoint: String,
        pod: String,
        id: NodeId,
        cluster_id: String,
        applied_index: Option<u64>,
    },
    /// Delete a pod of an outdated template revision; the StatefulSet
    /// (updateStrategy OnDelete) creates it again from the current one,
    /// on the same volume, so it comes back as the same node. Only the pod
    /// with this uid: a repeated delete never hits its replacement.
    ReplacePod {
        pod: String,
        uid: String,
        revision: Option<String>,
        update_revision: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    ScaleDown,
    /// The pod came back with a new node id: its volume was lost.
    LostVolume,
}

impl Step {
    /// The pod whose member the step changes (the leader's pod for a
    /// leadership transfer away from it).
    pub fn pod(&self) -> &str {
        match self {
            Step::Initialize { pod, .. }
            | Step::RestoreFromBackup { pod, .. }
            | Step::AddLearner { pod, .. }
            | Step::Promote { pod, .. }
            | Step::Demote { pod, .. }
            | Step::Remove { pod, .. }
            | Step::EnableAuth { pod, .. }
            | Step::ReplacePod { pod, .. }
            | Step::ForceNewCluster { pod, .. } => pod,
            Step::TransferLeadership { from_pod, .. } => from_pod,
        }
    }

    /// Event reason and metric label.
    pub fn reason(&self) -> Reason {
        match self {
            Step::Initialize { .. } => Reason::InitializeCluster,
            Step::RestoreFromBackup { .. } => Reason::RestoreFromBackup,
            Step::AddLearner { .. } => Reason::AddLearner,
            Step::Promote { .. } => Reason::PromoteVoter,
            Step::TransferLeadership { .. } => Reason::TransferLeadership,
            Step::Demote { .. } => Reason::DemoteVoter,
            Step::EnableAuth { .. } => Reason::EnableAuth,
            Step::ReplacePod { .. } => Reason::ReplacePod,
            Step::ForceNewCluster { .. } => Reason::ForceNewCluster,
            Step::Remove {
                why: Removal::ScaleDown,
                ..
            } => Reason::RemoveMember,
            Step::Remove {
                why: Removal::LostVolume,
                ..
            } => Reason::RemoveLostMember,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Initialize { pod, .. } => write!(f, "initialize the cluster on {pod}"),
            Step::RestoreFromBackup { pod, .. } => {
                write!(f, "start the cluster on {pod} from a backup")
            }
            Step::AddLearner { pod, request, .. } => {
                write!(f, "add {pod} (id {}) as learner", request.id)
            }
            Step::Promote { pod, id, .. } => write!(f, "promote {pod} (id {id}) to voter"),
            Step::TransferLeadership {
                from_pod,
                to_pod,
                to,
                ..
            } => write!(
                f,
                "transfer leadership from {from_pod} to {to_pod} (id {to})"
            ),
            Step::Demote { pod, id, .. } => write!(f, "remove {pod} (id {id}) from the voters"),
            Step::EnableAuth { pod, .. } => {
                write!(f, "create the user root and turn auth on via {pod}")
            }
            Step::ForceNewCluster {
                pod,
                id,
                cluster_id,
                applied_index,
                ..
            } => write!(
                f,
                "force {pod} (id {id}, applied index {}) to be the only voter of cluster \
                 {cluster_id}; writes it had not applied are lost",
                applied_index.map_or("unknown".to_owned(), |a| a.to_string())
            ),
            Step::ReplacePod {
                pod,
                revision,
                update_revision,
                ..
            } => write!(
                f,
                "delete pod {pod} (revision {}) to recreate it at revision {update_revision}",
                revision.as_deref().unwrap_or("unknown")
            ),
            Step::Remove {
                pod,
                id,
                why: Removal::ScaleDown,
                ..
            } => write!(f, "remove {pod} (id {id}) from the cluster"),
            Step::Remove {
                pod,
                id,
                why: Removal::LostVolume,
                ..
            } => write!(
                f,
                "remove stale id {id} of {pod}: the pod came back with a new id (volume lost)"
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: Reason,
    pub message: String,
}
