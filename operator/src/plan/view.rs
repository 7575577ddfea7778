//! The raft cluster as the nodes report it, reduced to what decisions need:
//! the leader (highest term wins), the members with their pods, health and lag.

use kvclient::{ClusterStatus, NodeId, Role};

use crate::names::{self, quorum};
use crate::observe::{Observed, ObservedPod};

/// The raft cluster as the nodes report it.
pub(super) struct View<'a> {
    pub(super) leader: Option<(&'a ObservedPod, &'a ClusterStatus)>,
    pub(super) cluster_id: Option<&'a str>,
    pub(super) joint: bool,
    /// Sorted by ordinal (numerically), members without one last.
    pub(super) members: Vec<MemberView<'a>>,
    pub(super) any_serving: bool,
    pub(super) all_serving: bool,
}

pub(super) struct MemberView<'a> {
    pub(super) id: NodeId,
    pub(super) name: &'a str,
    /// From the member's name: the pod it was added for.
    pub(super) ordinal: Option<u32>,
    pub(super) voter: bool,
    /// The pod whose node reports this id.
    pub(super) pod: Option<&'a ObservedPod>,
    pub(super) healthy: bool,
    pub(super) lag: Option<u64>,
}

impl<'a> View<'a> {
    /// `known_cluster` is the cluster id recorded in status: once known,
    /// nodes of any other cluster (a volume from elsewhere) are ignored,
    /// however high their term.
    pub(super) fn new(
        cluster: &str,
        observed: &'a Observed,
        known_cluster: Option<&str>,
    ) -> View<'a> {
        let serving: Vec<(&ObservedPod, &ClusterStatus)> = observed
            .pods
            .iter()
            .filter_map(|p| Some((p, p.status()?)))
            .collect();
        let initialized = serving.iter().filter(|(_, s)| {
            s.cluster_id.is_some()
                && known_cluster.is_none_or(|c| s.cluster_id.as_deref() == Some(c))
        });
        // Two nodes may both still claim leadership after a partition; the
        // higher term is the real one.
        let leader = initialized
            .clone()
            .filter(|(_, s)| s.role == Role::Leader)
            .max_by_key(|(_, s)| s.term)
            .copied();
        let source = leader.or_else(|| initialized.max_by_key(|(_, s)| s.term).copied());
        let cluster_id = source.and_then(|(_, s)| s.cluster_id.as_deref());
        let mut members = Vec::new();
        if let Some((_, status)) = source {
            let voters = status.membership.voters.iter().map(|m| (m, true));
            let learners = status.membership.learners.iter().map(|m| (m, false));
            for (member, voter) in voters.chain(learners) {
                let pod = serving
                    .iter()
                    .find(|(_, s)| s.id == member.id && s.cluster_id.as_deref() == cluster_id)
                    .map(|(p, _)| *p);
                let healthy = pod.zip(pod.and_then(|p| p.status())).is_some_and(|(p, s)| {
                    !p.terminating && !matches!(s.role, Role::Uninitialized | Role::Shutdown)
                });
                let lag = leader.and_then(|(_, l)| {
                    if l.id == member.id {
                        Some(0)
                    } else {
                        l.followers
                            .iter()
                            .flatten()
                            .find(|f| f.id == member.id)
                            .map(|f| f.lag)
                    }
                });
                members.push(MemberView {
                    id: member.id,
                    name: &member.info.name,
                    ordinal: names::pod_ordinal(cluster, &member.info.name),
                    voter,
                    pod,
                    healthy,
                    lag,
                });
            }
        }
        members.sort_by_key(|m| (m.ordinal.unwrap_or(u32::MAX), m.id));
        View {
            leader,
            cluster_id,
            joint: source.is_some_and(|(_, s)| s.membership.joint),
            members,
            any_serving: !serving.is_empty(),
            all_serving: serving.len() == observed.pods.len(),
        }
    }

    pub(super) fn contains(&self, id: NodeId) -> bool {
        self.members.iter().any(|m| m.id == id)
    }

    pub(super) fn voters(&self) -> impl Iterator<Item = &MemberView<'a>> {
        self.members.iter().filter(|m| m.voter)
    }

    pub(super) fn voter_ids(&self) -> Vec<NodeId> {
        self.voters().map(|m| m.id).collect()
    }

    pub(super) fn healthy_voters(&self) -> usize {
        self.voters().filter(|m| m.healthy).count()
    }

    pub(super) fn has_quorum(&self) -> bool {
        self.healthy_voters() >= quorum(self.voters().count())
    }

    /// The voter set without `id` still has a healthy quorum of its own.
    /// The change itself commits in the joint configuration, which also
    /// needs the current quorum: checked before any step by `has_quorum`.
    pub(super) fn can_drop_voter(&self, id: NodeId) -> bool {
        let remaining: Vec<_> = self.voters().filter(|m| m.id != id).collect();
        !remaining.is_empty()
            && remaining.iter().filter(|m| m.healthy).count() >= quorum(remaining.len())
    }

    /// The pod with `ordinal` runs one of the voters.
    pub(super) fn pod_is_voter(&self, ordinal: u32) -> bool {
        self.voters()
            .any(|m| m.pod.is_some_and(|p| p.ordinal == ordinal))
    }
}
