//! The membership decisions: initialize, add a learner, promote, remove,
//! hand over leadership, or hold and say why. At most one step per round.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kvclient::{AddLearnerRequest, NodeId};

use super::storage::storage_trouble;
use super::validate::Valid;
use super::view::{MemberView, View};
use super::{ACTIVE_REQUEUE, PlanConfig, PlanInput, Removal, Step};
use crate::names::{self, quorum};
use crate::reason::Reason;

/// What to do this round, before it is turned into status.
#[derive(Default)]
pub(super) struct Decision {
    pub(super) step: Option<Step>,
    /// Changes are held: (reason, message) for the Degraded condition.
    pub(super) hold: Option<(Reason, String)>,
    /// Nothing to do but wait: (reason, message) for Progressing.
    pub(super) waiting: Option<(Reason, String)>,
    /// Problems that do not stop other changes.
    pub(super) trouble: Option<(Reason, String)>,
    pub(super) requeue: Option<Duration>,
}

impl Decision {
    pub(super) fn hold(reason: Reason, message: String) -> Decision {
        Decision {
            hold: Some((reason, message)),
            ..Decision::default()
        }
    }

    pub(super) fn wait(reason: Reason, message: String) -> Decision {
        Decision {
            waiting: Some((reason, message)),
            ..Decision::default()
        }
    }

    pub(super) fn step(step: Step) -> Decision {
        Decision {
            step: Some(step),
            ..Decision::default()
        }
    }
}

pub(super) fn decide_uninitialized(view: &View, input: &PlanInput) -> Decision {
    let pod0 = input.observed.pods.iter().find(|p| p.ordinal == 0);
    if let Some(cluster_id) = &input.previous.cluster_id {
        // Initializing again would silently start an empty cluster under the
        // same name: only a human may decide the data is gone.
        return if view.any_serving && view.all_serving {
            Decision::hold(
                Reason::ClusterLost,
                format!(
                    "cluster {cluster_id} was initialized, but no node reports it (all volumes lost?); \
                     not re-initializing: delete and recreate the KvCluster to start over"
                ),
            )
        } else {
            Decision::wait(
                Reason::WaitingForNodes,
                "no node reports the cluster yet".into(),
            )
        };
    }
    match pod0 {
        Some(pod) if !pod.terminating => match (&pod.node, pod.status()) {
            (crate::observe::NodeView::Serving { endpoint, .. }, Some(_)) => {
                let (pod, endpoint) = (pod.name.clone(), endpoint.clone());
                Decision::step(if input.spec.bootstrap.from_backup.is_some() {
                    Step::RestoreFromBackup { pod, endpoint }
                } else {
                    Step::Initialize { pod, endpoint }
                })
            }
            _ => Decision::wait(
                Reason::WaitingForPod,
                format!("waiting for {} to serve", pod.name),
            ),
        },
        _ => Decision::wait(
            Reason::WaitingForPod,
            format!("waiting for {}", names::pod(&input.owner.name, 0)),
        ),
    }
}

pub(super) fn decide_membership(
    view: &View,
    input: &PlanInput,
    config: &PlanConfig,
    caught_up: &[(NodeId, Timestamp)],
    valid: Valid,
) -> Decision {
    let Some((leader_pod, leader)) = view.leader else {
        return Decision::hold(
            Reason::NoLeader,
            "no reachable node is the raft leader; membership changes are held".into(),
        );
    };
    let via = leader_pod.endpoint().unwrap_or_default().to_owned();
    if view.joint {
        return Decision::wait(
            Reason::MembershipChangeInProgress,
            "a joint configuration is being committed".into(),
        );
    }
    if !view.has_quorum() {
        return Decision::hold(
            Reason::QuorumUnhealthy,
            format!(
                "{} of {} voters healthy, {} needed; membership changes are held",
                view.healthy_voters(),
                view.voters().count(),
                quorum(view.voters().count())
            ),
        );
    }
    let n = valid.replicas;

    // 1. Lost volumes: a member whose pod now reports another id.
    for member in view.members.iter().filter(|m| m.pod.is_none()) {
        let Some(ordinal) = member.ordinal else {
            continue;
        };
        let replacement = input.observed.pods.iter().find(|p| {
            p.ordinal == ordinal && !p.terminating && p.status().is_some_and(|s| s.id != member.id)
        });
        if replacement.is_none() {
            continue;
        }
        if member.voter && !view.can_drop_voter(member.id) {
            return Decision::hold(
                Reason::WouldLoseQuorum,
                format!(
                    "removing the stale voter {} of {} would leave fewer healthy voters than a quorum",
                    member.id, member.name
                ),
            );
        }
        return Decision::step(Step::Remove {
            leader: via,
            pod: member.name.to_owned(),
            id: member.id,
            why: Removal::LostVolume,
        });
    }

    // 2. Scale-down: the highest ordinal at or above the desired size first.
    if let Some(member) = view
        .members
        .iter()
        .filter(|m| m.ordinal.is_some_and(|o| o >= n))
        .max_by_key(|m| m.ordinal)
    {
        if member.id == leader.id {
            // Removing the leader itself would leave the cluster without
            // one until an election; hand leadership to a voter that stays.
            let target = view
                .voters()
                .filter(|m| m.healthy && m.ordinal.is_some_and(|o| o < n))
                .min_by_key(|m| (m.lag.unwrap_or(u64::MAX), m.ordinal));
            return match target {
                Some(target) => Decision::step(Step::TransferLeadership {
                    leader: via,
                    from_pod: member.name.to_owned(),
                    to_pod: target.name.to_owned(),
                    to: target.id,
                }),
                None => Decision::hold(
                    Reason::NoTransferTarget,
                    format!(
                        "{} leads and no healthy voter that stays can take over",
                        member.name
                    ),
                ),
            };
        }
        if member.voter {
            if !view.can_drop_voter(member.id) {
                return Decision::hold(
                    Reason::WouldLoseQuorum,
                    format!(
                        "removing voter {} would leave fewer healthy voters than a quorum",
                        member.name
                    ),
                );
            }
            let voters = view
                .voter_ids()
                .into_iter()
                .filter(|id| *id != member.id)
                .collect();
            return Decision::step(Step::Demote {
                leader: via,
                pod: member.name.to_owned(),
                id: member.id,
                voters,
            });
        }
        return Decision::step(Step::Remove {
            leader: via,
            pod: member.name.to_owned(),
            id: member.id,
            why: Removal::ScaleDown,
        });
    }

    // 3. Add serving pods that are not members yet, lowest ordinal first.
    for pod in input
        .observed
        .pods
        .iter()
        .filter(|p| p.ordinal < n && !p.terminating)
    {
        let Some(status) = pod.status() else {
            continue;
        };
        if view.contains(status.id) {
            continue;
        }
        if status.cluster_id.is_some()
            && (status.cluster_id.as_deref() != view.cluster_id
                || input.previous.recovery.is_some())
        {
            // Reported as trouble. Another cluster's node would mix two
            // clusters. After a disaster recovery, a former member may have
            // applied writes the survivor never had: its state cannot be
            // rolled back to join, it must come back empty.
            continue;
        }
        return Decision::step(Step::AddLearner {
            leader: via,
            pod: pod.name.clone(),
            request: AddLearnerRequest {
                id: status.id,
                name: pod.name.clone(),
                peer_url: status.peer_url.clone(),
                client_url: status.client_url.clone(),
            },
        });
    }

    // 4. Promote learners that stayed caught up for the stabilization time.
    let mut wait: Option<(Duration, &MemberView)> = None;
    for learner in view
        .members
        .iter()
        .filter(|m| !m.voter && m.ordinal.is_some_and(|o| o < n))
    {
        let since = caught_up.iter().find(|(id, _)| *id == learner.id);
        let Some((_, since)) = since else {
            wait = wait.or(Some((ACTIVE_REQUEUE, learner)));
            continue;
        };
        let waited = millis(input.now.duration_since(*since).as_millis());
        let needed = millis(config.stabilization.as_millis());
        if waited >= needed {
            let mut voters = view.voter_ids();
            voters.push(learner.id);
            return Decision::step(Step::Promote {
                leader: via,
                pod: learner.name.to_owned(),
                id: learner.id,
                voters,
            });
        }
        let remaining = Duration::from_millis(needed.saturating_sub(waited));
        if wait.is_none_or(|(d, _)| remaining < d) {
            wait = Some((remaining, learner));
        }
    }
    if let Some((remaining, learner)) = wait {
        let mut decision = Decision::wait(
            Reason::WaitingForCatchUp,
            format!(
                "learner {} must stay caught up (lag <= {}) for {:?} before promotion",
                learner.name, config.max_lag, config.stabilization
            ),
        );
        decision.requeue = Some(remaining.clamp(Duration::from_millis(100), ACTIVE_REQUEUE));
        return decision;
    }
    Decision::default()
}

pub(super) fn millis(ms: impl TryInto<u64>) -> u64 {
    ms.try_into().unwrap_or(0)
}

/// Problems worth a Degraded condition that do not block other changes.
pub(super) fn trouble(view: &View, input: &PlanInput) -> Option<(Reason, String)> {
    let foreign: Vec<&str> = input
        .observed
        .pods
        .iter()
        .filter(|p| {
            p.status().is_some_and(|s| {
                s.cluster_id.is_some() && s.cluster_id.as_deref() != view.cluster_id
            })
        })
        .map(|p| p.name.as_str())
        .collect();
    if !foreign.is_empty() {
        return Some((
            Reason::ForeignNode,
            format!(
                "{} hold data of another raft cluster; they are not added (check their volumes)",
                foreign.join(", ")
            ),
        ));
    }
    let stale: Vec<String> = input
        .observed
        .pods
        .iter()
        .filter(|p| !p.terminating && input.previous.recovery.is_some())
        .filter_map(|p| Some((p, p.status()?)))
        .filter(|(_, s)| s.cluster_id.as_deref() == view.cluster_id && !view.contains(s.id))
        .map(|(p, s)| format!("{} (id {})", p.name, s.id))
        .collect();
    if !stale.is_empty() && view.leader.is_some() {
        return Some((
            Reason::StaleMember,
            format!(
                "{} hold data of this cluster from before the disaster recovery and are not \
                 members; they are not added: delete their PVC and pod so they come back empty",
                stale.join(", ")
            ),
        ));
    }
    let unhealthy: Vec<&str> = view
        .members
        .iter()
        .filter(|m| !m.healthy)
        .map(|m| m.name)
        .collect();
    if !unhealthy.is_empty() {
        return Some((
            Reason::MembersUnhealthy,
            format!("unhealthy members: {}", unhealthy.join(", ")),
        ));
    }
    storage_trouble(input).map(|m| (Reason::StorageChangeNotApplied, m))
}

/// Learners that are healthy and within the lag threshold, with the time
/// they first were (carried over from the previous status).
pub(super) fn caught_up_since(
    view: &View,
    input: &PlanInput,
    config: &PlanConfig,
) -> Vec<(NodeId, Timestamp)> {
    view.members
        .iter()
        .filter(|m| !m.voter && m.healthy && m.lag.is_some_and(|lag| lag <= config.max_lag))
        .map(|m| {
            let id = m.id.to_string();
            let since = input
                .previous
                .members
                .iter()
                .find(|p| p.id == id)
                .and_then(|p| p.caught_up_since.as_ref())
                .map_or(input.now, |t| t.0);
            (m.id, since)
        })
        .collect()
}
