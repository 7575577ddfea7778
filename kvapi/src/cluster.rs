//! Cluster membership and status: init, learners, voters, leadership.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A member as the membership stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MemberInfo {
    #[serde(default)]
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    #[serde(flatten)]
    pub info: MemberInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Membership {
    pub voters: Vec<Member>,
    pub learners: Vec<Member>,
    /// True while a joint configuration (old and new voter sets) is in force.
    #[serde(default)]
    pub joint: bool,
}

impl Membership {
    pub fn voter_ids(&self) -> Vec<NodeId> {
        self.voters.iter().map(|m| m.id).collect()
    }
    pub fn learner_ids(&self) -> Vec<NodeId> {
        self.learners.iter().map(|m| m.id).collect()
    }
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.iter().chain(&self.learners).any(|m| m.id == id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// Not a member of any initialized cluster (yet).
    Uninitialized,
    Shutdown,
}

/// Replication progress of one follower, reported by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerProgress {
    pub id: NodeId,
    pub matched_index: Option<u64>,
    /// Leader's last log index minus the follower's matched index.
    pub lag: u64,
}

/// `GET /v1/cluster/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub id: NodeId,
    pub name: String,
    pub cluster_id: Option<String>,
    pub role: Role,
    pub term: u64,
    pub leader: Option<Member>,
    pub membership: Membership,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The store revision this node has applied (data revisions, not log
    /// indexes: see docs/api.md). Absent from nodes before it existed.
    #[serde(default)]
    pub revision: u64,
    /// Only on the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followers: Option<Vec<FollowerProgress>>,
    pub peer_url: String,
    pub client_url: String,
}

/// Response of `GET /v1/cluster/health`: every member as the node that
/// answers sees it, probed over the members' client URLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterHealth {
    /// The node that probed.
    pub checked_by: NodeId,
    pub members: Vec<MemberHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHealth {
    pub id: NodeId,
    #[serde(flatten)]
    pub info: MemberInfo,
    pub voter: bool,
    /// `/healthz` answered 200.
    pub healthy: bool,
    /// `/readyz` answered 200.
    pub ready: bool,
    /// Why it is not healthy or not ready (or could not be asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// That node's own `GET /v1/cluster/status`, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ClusterStatus>,
    /// Round trip of its `/readyz`, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u64>,
}

/// Body of `POST /v1/cluster/init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    /// Empty = a one-node cluster of the receiving node.
    #[serde(default)]
    pub members: BTreeMap<String, MemberInfo>,
}

/// Body of `POST /v1/cluster/learners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLearnerRequest {
    pub id: NodeId,
    #[serde(default)]
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
}

/// Body of `PUT /v1/cluster/voters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVotersRequest {
    pub voters: Vec<NodeId>,
}

/// Body of `POST /v1/cluster/transfer-leader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferLeaderRequest {
    pub to: NodeId,
}

/// Body of `POST /v1/cluster/force-new-cluster`: the id of the cluster
/// being given up, as the caller's confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForceNewClusterRequest {
    pub cluster_id: String,
}

/// Answer of `POST /v1/cluster/force-new-cluster`: the node exits now and
/// becomes the only voter when it next starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForceNewClusterResponse {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub restarting: bool,
    pub message: String,
}

/// Answer of `POST /v1/cluster/restore` (202): the snapshot was received
/// and checked; the node exits now and, restarted, is the only voter of a
/// new cluster holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreResponse {
    /// The restored node keeps its id.
    pub node_id: NodeId,
    /// The store revision the snapshot was taken at (revisions go on from it).
    pub revision: u64,
    /// Keys in the snapshot.
    pub keys: u64,
    /// Size of the snapshot received.
    pub bytes: u64,
    pub restarting: bool,
    pub message: String,
}

/// Response of the membership admin calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipResponse {
    pub membership: Membership,
    /// Log index of the membership entry (absent when nothing changed).
    #[serde(default)]
    pub log_index: Option<u64>,
}
