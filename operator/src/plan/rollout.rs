//! Rolling replacement of pods whose template revision is outdated (a new
//! image, resources, env, ...). The StatefulSet has `updateStrategy:
//! OnDelete`, so nothing happens until the operator deletes a pod; it does
//! so one pod at a time: learners, then followers, the leader last after
//! handing its leadership to an updated voter. The next pod only when the
//! previous one is back Ready on the update revision and caught up, and
//! only while every voter is healthy. A pod that is not back within the
//! deadline stops the rollout (`RolloutStuck`) until it is.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::decide::millis;
use super::view::{MemberView, View};
use super::{PlanConfig, PlanInput, Step};
use crate::crd::RolloutStatus;
use crate::observe::ObservedPod;

/// What the rollout wants this round, when membership has nothing to do.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Action {
    Step(Step),
    Wait(String),
    Stuck(String),
}

pub(super) struct Rollout {
    pub(super) status: Option<RolloutStatus>,
    pub(super) action: Option<Action>,
    /// Pods of an older revision exist, or the last replaced one is not
    /// back yet.
    pub(super) active: bool,
}

impl Rollout {
    fn new(status: RolloutStatus, action: Option<Action>, outdated: bool) -> Rollout {
        let active = outdated || status.waiting_for.is_some();
        Rollout {
            status: Some(status),
            action,
            active,
        }
    }
}

pub(super) fn rollout(view: &View, input: &PlanInput, config: &PlanConfig) -> Rollout {
    let observed = input.observed;
    let Some(revisions) = &observed.statefulset_revisions else {
        return Rollout {
            status: None,
            action: None,
            active: false,
        };
    };
    let update = revisions.update.as_str();
    let total = observed.statefulset_replicas.unwrap_or(0);
    let ordinals = 0..u32::try_from(total).unwrap_or(0);
    let pods: Vec<&ObservedPod> = observed
        .pods
        .iter()
        .filter(|p| ordinals.contains(&p.ordinal))
        .collect();
    let is_updated = |p: &ObservedPod| !p.terminating && p.revision.as_deref() == Some(update);
    let outdated: Vec<&ObservedPod> = pods
        .iter()
        .copied()
        .filter(|p| !p.terminating && !is_updated(p))
        .collect();
    let any_outdated = !outdated.is_empty();
    let mut status = RolloutStatus {
        current_revision: revisions.current.clone(),
        update_revision: update.to_owned(),
        updated: i32::try_from(pods.iter().filter(|p| is_updated(p)).count()).unwrap_or(0),
        total,
        waiting_for: None,
        waiting_since: None,
    };
    let previous = input.previous.rollout.as_ref();
    let was_waiting = previous
        .and_then(|r| r.waiting_for.as_deref())
        .filter(|_| previous.is_some_and(|r| r.update_revision == update));
    // Until the StatefulSet controller has seen the latest template, its
    // revisions may describe the one before: nothing is deleted on them.
    if !revisions.fresh || (outdated.is_empty() && was_waiting.is_none()) {
        return Rollout::new(status, None, any_outdated);
    }

    let member_of = |pod: &ObservedPod| -> Option<&MemberView> {
        view.members.iter().find(|m| runs_in(m) == pod.name)
    };
    let caught_up = |pod: &ObservedPod| {
        pod.ready
            && member_of(pod)
                .is_some_and(|m| m.healthy && m.lag.is_some_and(|l| l <= config.max_lag))
    };
    let others_healthy = |pod: &ObservedPod| {
        view.voters()
            .filter(|m| runs_in(m) != pod.name)
            .all(|m| m.healthy)
    };

    // A pod missing or on its way out: the StatefulSet brings it back.
    let gone = ordinals
        .clone()
        .find_map(|o| match pods.iter().find(|p| p.ordinal == o) {
            None => Some(crate::names::pod(&input.owner.name, o)),
            Some(p) if p.terminating => Some(p.name.clone()),
            Some(_) => None,
        });
    // An outdated pod that is down anyway: replacing it first costs no
    // availability, and is how a rollback repairs a broken new version.
    let broken = outdated
        .iter()
        .find(|p| !p.ready && others_healthy(p))
        .filter(|_| gone.is_none());
    if let Some(pod) = broken {
        return replace(status, input, pod, update);
    }
    let pending = gone.or_else(|| {
        pods.iter()
            .find(|p| is_updated(p) && !caught_up(p))
            .map(|p| p.name.clone())
    });
    if let Some(pod) = pending {
        let since = previous
            .filter(|r| r.waiting_for.as_deref() == Some(pod.as_str()))
            .and_then(|r| r.waiting_since.as_ref())
            .map_or(input.now, |t| t.0);
        status.waiting_for = Some(pod.clone());
        status.waiting_since = Some(Time(since));
        let waited = Duration::from_millis(millis(input.now.duration_since(since).as_millis()));
        let action = if waited >= config.rollout_deadline {
            Action::Stuck(format!(
                "{pod} is not back Ready on revision {update} and caught up after {}s \
                 (deadline {}s); no further pod is replaced until it is",
                waited.as_secs(),
                config.rollout_deadline.as_secs()
            ))
        } else {
            Action::Wait(format!(
                "waiting for {pod} to be Ready on revision {update} and caught up \
                 (lag <= {})",
                config.max_lag
            ))
        };
        return Rollout::new(status, Some(action), any_outdated);
    }
    if outdated.is_empty() {
        return Rollout::new(status, None, any_outdated);
    }
    if let Some(pod) = outdated.iter().find(|p| !caught_up(p)) {
        return Rollout::new(
            status,
            Some(Action::Wait(format!(
                "waiting for {} to be healthy and caught up before replacing a pod",
                pod.name
            ))),
            any_outdated,
        );
    }
    if !view.voters().all(|m| m.healthy) {
        return Rollout::new(
            status,
            Some(Action::Wait(
                "waiting for every voter to be healthy before replacing a pod".into(),
            )),
            any_outdated,
        );
    }

    let leader = view.leader.map(|(p, _)| p.name.as_str());
    // Learners, then followers, highest ordinal first; the leader last.
    let next = outdated
        .iter()
        .filter(|p| Some(p.name.as_str()) != leader)
        .max_by_key(|p| (member_of(p).is_none_or(|m| !m.voter), p.ordinal));
    if let Some(pod) = next {
        return replace(status, input, pod, update);
    }
    let Some((leader_pod, leader_status)) = view.leader else {
        return Rollout::new(status, None, any_outdated);
    };
    // Only the leader is left. Hand leadership to the updated voter with
    // the least lag; a cluster of one voter cannot, and goes down briefly.
    let target = view
        .voters()
        .filter(|m| m.id != leader_status.id && m.healthy && m.pod.is_some_and(is_updated))
        .min_by_key(|m| (m.lag.unwrap_or(u64::MAX), m.ordinal));
    let action = match target {
        Some(target) => Action::Step(Step::TransferLeadership {
            leader: leader_pod.endpoint().unwrap_or_default().to_owned(),
            from_pod: leader_pod.name.clone(),
            to_pod: target.name.to_owned(),
            to: target.id,
        }),
        None if view.voters().count() == 1 => {
            return replace(status, input, leader_pod, update);
        }
        None => Action::Wait(format!(
            "{} leads and no healthy updated voter can take over",
            leader_pod.name
        )),
    };
    Rollout::new(status, Some(action), any_outdated)
}

/// The pod a member runs in: the one serving its id, else the pod it was
/// added for (a node that does not answer reports no id).
fn runs_in<'a>(member: &MemberView<'a>) -> &'a str {
    member.pod.map_or(member.name, |p| p.name.as_str())
}

fn replace(
    mut status: RolloutStatus,
    input: &PlanInput,
    pod: &ObservedPod,
    update: &str,
) -> Rollout {
    status.waiting_for = Some(pod.name.clone());
    status.waiting_since = Some(Time(input.now));
    let step = Step::ReplacePod {
        pod: pod.name.clone(),
        uid: pod.uid.clone(),
        revision: pod.revision.clone(),
        update_revision: update.to_owned(),
    };
    Rollout::new(status, Some(Action::Step(step)), true)
}
