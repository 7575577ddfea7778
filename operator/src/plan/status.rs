//! The KvCluster status and the warning events, from a round's decision.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kvclient::NodeId;

use super::decide::Decision;
use super::rollout::Rollout;
use super::sizing::current_replicas;
use super::validate::Valid;
use super::view::View;
use super::{Notice, PlanInput};
use crate::crd::{KvClusterStatus, MemberRole, MemberStatus, Phase};
use crate::names::{self, quorum};
use crate::observe::PdbSupport;
use crate::reason::Reason;

pub(super) fn notices(input: &PlanInput, decision: &Decision) -> Vec<Notice> {
    let mut notices = Vec::new();
    // One warning per change of the Degraded reason: a held cluster is
    // reconciled every few seconds, one event per episode is what a human
    // needs.
    if let Some((reason, message)) = decision.hold.as_ref().or(decision.trouble.as_ref()) {
        let already = input
            .previous
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == *reason);
        if !already {
            notices.push(Notice {
                warning: true,
                reason: *reason,
                message: message.clone(),
            });
        }
    }
    let new_generation = input.previous.observed_generation != input.generation;
    if input.pdb == PdbSupport::None && new_generation && !input.spec.paused {
        notices.push(Notice {
            warning: true,
            reason: Reason::PodDisruptionBudgetUnsupported,
            message: "the server has no policy/v1 or policy/v1beta1 PodDisruptionBudget; \
                      voluntary disruptions are not limited to keep a quorum"
                .into(),
        });
    }
    notices
}

pub(super) fn status(
    input: &PlanInput,
    view: &View,
    decision: &Decision,
    caught_up: &[(NodeId, Timestamp)],
    replicas: i32,
    valid: Option<Valid>,
    rollout: &Rollout,
) -> KvClusterStatus {
    let cluster = input.owner.name.as_str();
    // An invalid spec never converges (its changes are held).
    let n = valid.map_or(0, |v| v.replicas);
    let leader_id = view.leader.map(|(_, s)| s.id);
    let members: Vec<MemberStatus> = view
        .members
        .iter()
        .map(|m| MemberStatus {
            id: m.id.to_string(),
            pod: m
                .pod
                .map(|p| p.name.clone())
                .or_else(|| m.ordinal.map(|_| m.name.to_owned())),
            role: if Some(m.id) == leader_id {
                MemberRole::Leader
            } else if m.voter {
                MemberRole::Voter
            } else {
                MemberRole::Learner
            },
            healthy: m.healthy,
            lag: m.lag.map(|lag| i64::try_from(lag).unwrap_or(i64::MAX)),
            caught_up_since: caught_up
                .iter()
                .find(|(id, _)| *id == m.id)
                .map(|(_, t)| Time(*t)),
        })
        .collect();

    let voters = view.voters().count();
    let available = view.leader.is_some() && voters > 0 && view.has_quorum();
    // A rollout replaces pods only at the desired size, and while one of
    // them is away its member has no pod: the size is what tells.
    let sized = view.cluster_id.is_some()
        && replicas == input.spec.replicas
        && current_replicas(input.observed) == input.spec.replicas;
    let settled = sized
        && valid.is_some()
        && view.members.len() == voters
        && voters == usize::try_from(n).unwrap_or(0)
        && (0..n).all(|o| view.pod_is_voter(o));
    let updating = sized && rollout.active;
    let converged =
        settled && !rollout.active && decision.step.is_none() && decision.waiting.is_none();

    let phase = if input.spec.paused {
        Phase::Paused
    } else if decision.hold.is_some() {
        Phase::Degraded
    } else if view.cluster_id.is_none() {
        Phase::Pending
    } else if converged {
        Phase::Running
    } else if updating {
        Phase::Updating
    } else {
        Phase::Scaling
    };

    let available_cond = if available {
        (
            "True",
            Reason::QuorumAvailable,
            format!("leader {}", leader_name(view)),
        )
    } else if view.cluster_id.is_none() {
        (
            "False",
            Reason::NotInitialized,
            "the raft cluster is not initialized yet".into(),
        )
    } else if view.leader.is_none() {
        (
            "False",
            Reason::NoLeader,
            "no reachable node is the raft leader".into(),
        )
    } else {
        (
            "False",
            Reason::QuorumUnhealthy,
            "fewer healthy voters than a quorum".into(),
        )
    };
    let progressing_cond = if input.spec.paused {
        (
            "False",
            Reason::Paused,
            "spec.paused is set: no changes are made".to_owned(),
        )
    } else if let Some(step) = &decision.step {
        ("True", step.reason(), step.to_string())
    } else if let Some((reason, message)) = &decision.waiting {
        ("True", *reason, message.clone())
    } else if decision.hold.is_some() {
        (
            "False",
            Reason::Held,
            "changes are held, see Degraded".into(),
        )
    } else if converged {
        ("False", Reason::Converged, format!("{n} healthy voters"))
    } else if updating {
        (
            "True",
            Reason::RollingUpdate,
            "replacing pods of an older template revision".into(),
        )
    } else {
        (
            "True",
            Reason::Scaling,
            format!("StatefulSet at {replicas} of {} pods", input.spec.replicas),
        )
    };
    let degraded_cond = match decision.hold.as_ref().or(decision.trouble.as_ref()) {
        Some((reason, message)) => ("True", *reason, message.clone()),
        None => ("False", Reason::Healthy, "all members are healthy".into()),
    };

    let conditions = [
        ("Available", available_cond),
        ("Progressing", progressing_cond),
        ("Degraded", degraded_cond),
    ]
    .into_iter()
    .map(|(type_, (state, reason, message))| condition(input, type_, state, reason, message))
    .collect();

    KvClusterStatus {
        phase: Some(phase),
        replicas: i32::try_from(
            input
                .observed
                .pods
                .iter()
                .filter(|p| !p.terminating)
                .count(),
        )
        .unwrap_or(i32::MAX),
        ready_replicas: i32::try_from(input.observed.pods.iter().filter(|p| p.ready).count())
            .unwrap_or(i32::MAX),
        selector: Some(names::selector_string(cluster)),
        leader: view.leader.map(|(p, _)| p.name.clone()),
        cluster_id: view
            .cluster_id
            .map(str::to_owned)
            .or_else(|| input.previous.cluster_id.clone()),
        failure_tolerance: (voters > 0).then(|| {
            let tolerance = view.healthy_voters().saturating_sub(quorum(voters));
            i32::try_from(tolerance).unwrap_or(0)
        }),
        members,
        auth: None,
        rollout: None,
        recovery: None,
        conditions,
        observed_generation: input.generation,
    }
}

pub(super) fn leader_name(view: &View) -> String {
    view.leader.map(|(p, _)| p.name.clone()).unwrap_or_default()
}

/// A condition whose transition time moves only when its status changes.
pub(super) fn condition(
    input: &PlanInput,
    type_: &str,
    status: &str,
    reason: Reason,
    message: String,
) -> Condition {
    let last_transition_time = input
        .previous
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(input.now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.as_str().into(),
        message,
        observed_generation: input.generation,
        last_transition_time,
    }
}
