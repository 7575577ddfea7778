//! PURE decisions: (spec, observed state, last status) -> the objects to
//! apply, the StatefulSet size, at most one membership step, PVCs to delete
//! and the new status. No client, no clock: `now` is an input, so every
//! rule here is covered by table-driven tests.
//!
//! Everything the planner needs to remember between reconciles lives in the
//! KvCluster status (cluster id, learners' caught-up-since), so an operator
//! that restarts between two steps decides the same next step.
//!
//! One concern per file: `view` (the cluster as the nodes report it),
//! `decide` (the membership step), `rollout` (replacing pods of an old
//! template, when membership has nothing to do), `sizing` (StatefulSet
//! size, PVCs to delete), `storage` (volume expansion), `tls`, `auth`,
//! `certs`, `validate`, `objects` (the Kubernetes objects), `status`;
//! `step` is the output vocabulary.

use std::time::Duration;

pub mod auth;
pub mod certs;
mod decide;
mod objects;
mod recovery;
mod rollout;
mod sizing;
mod status;
mod step;
mod storage;
mod tls;
mod validate;
mod view;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;

use crate::build::{OperatorPeer, Owner, TlsMode};
use crate::crd::{KvClusterSpec, KvClusterStatus, Phase};
use crate::observe::{Observed, PdbSupport};
use crate::reason::Reason;
use certs::{CertInput, CertPlan};
use decide::{Decision, caught_up_since, decide_membership, decide_uninitialized, trouble};
use objects::desired;
use recovery::{Recovery, recovery};
use rollout::{Action, rollout};
use sizing::{current_replicas, pods_for_members, pvcs_to_delete, statefulset_replicas};
use status::{notices, status};
pub use step::{Notice, Removal, Step};
use storage::{StorageChange, storage_change};
pub use tls::wanted_tls;
use tls::{certificate_pods, offset_time, tls_mode};
use validate::validate;
use view::View;

/// How often a converged cluster is looked at again. Lag and node health
/// change without any Kubernetes event, so the operator polls.
const STEADY_REQUEUE: Duration = Duration::from_secs(30);
/// How soon to look again while a change is under way.
const ACTIVE_REQUEUE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq)]
pub struct PlanConfig {
    /// A learner must stay caught up and healthy this long before promotion.
    pub stabilization: Duration,
    /// Caught up = at most this many log entries behind the leader.
    pub max_lag: u64,
    /// DNS suffix of the Kubernetes cluster, for advertised URLs and
    /// certificate names.
    pub cluster_domain: String,
    /// The operator's pods, always let through to the client port by the
    /// clusters' NetworkPolicies.
    pub operator_peer: OperatorPeer,
    /// A rollout stops (`RolloutStuck`) when a replaced pod is not back
    /// Ready and caught up within this time.
    pub rollout_deadline: Duration,
}

pub struct PlanInput<'a> {
    pub owner: &'a Owner,
    pub spec: &'a KvClusterSpec,
    pub generation: Option<i64>,
    /// The value of the annotation `raftkv.io/force-new-cluster`.
    pub recovery_request: Option<&'a str>,
    /// The status written by the previous reconcile (default when none).
    pub previous: &'a KvClusterStatus,
    pub observed: &'a Observed,
    pub pdb: PdbSupport,
    pub now: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// `None` while paused or when the spec is invalid: nothing is applied.
    pub objects: Option<Desired>,
    pub step: Option<Step>,
    pub delete_pvcs: Vec<String>,
    /// PVCs whose requested size is raised to `spec.storage.size`
    /// (volume expansion), before anything else is deleted or applied.
    pub resize_pvcs: Vec<String>,
    /// Delete the StatefulSet with `propagationPolicy: Orphan` (its pods
    /// keep running) after the PVCs are resized, so that the next round
    /// creates it again with the new volume template.
    pub orphan_statefulset: bool,
    /// With `tls.issuer: operator`: the certificates to issue and keep,
    /// written before the objects (so a pod's certificate exists before
    /// the StatefulSet grows to it). `None` when nothing is applied.
    pub certificates: Option<CertPlan>,
    /// Create Secret `NAME-root` with a new password (`spec.auth`).
    pub create_root_secret: bool,
    pub status: KvClusterStatus,
    /// Events to publish besides the one for the step.
    pub notices: Vec<Notice>,
    pub requeue_after: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// `None` while the old StatefulSet is being deleted (orphaning its
    /// pods) for a new volume template: it is created again once gone.
    pub statefulset: Option<StatefulSet>,
    /// The existing StatefulSet still has `updateStrategy: RollingUpdate`
    /// (made by an older operator): switch it to OnDelete before applying
    /// a template, so that the StatefulSet controller never rolls the pods.
    pub switch_to_on_delete: bool,
    pub peer_service: Service,
    pub client_service: Service,
    /// `None` where the server has no PodDisruptionBudget API.
    pub pdb: Option<PodDisruptionBudget>,
    /// `None` when `networkPolicy.enabled` is false: an existing one is
    /// then deleted, or it would keep filtering traffic.
    pub network_policy: Option<NetworkPolicy>,
    /// cert-manager Certificates (`tls.issuer: certManager`), as JSON.
    pub certificates: Vec<serde_json::Value>,
    pub tls: TlsMode,
}

pub fn plan(input: &PlanInput, config: &PlanConfig) -> Plan {
    let cluster = input.owner.name.as_str();
    let view = View::new(
        cluster,
        input.observed,
        input.previous.cluster_id.as_deref(),
    );
    let caught_up = caught_up_since(&view, input, config);
    let initialized = view.cluster_id.is_some() || input.previous.cluster_id.is_some();
    let (tls, tls_trouble) = tls_mode(input, initialized);

    // Checked once; a paused cluster is checked too, for its status.
    let checked = validate(input.spec);
    let valid = checked.as_ref().ok().copied();
    let (mut decision, replicas) = match (&checked, input.spec.paused) {
        (_, true) => (Decision::default(), current_replicas(input.observed)),
        (Err(message), false) => (
            Decision::hold(Reason::InvalidSpec, message.clone()),
            current_replicas(input.observed),
        ),
        (Ok(_), false) if view.cluster_id.is_none() => {
            let decision = decide_uninitialized(&view, input);
            let replicas = current_replicas(input.observed).max(1);
            (decision, replicas)
        }
        (Ok(valid), false) => {
            let mut decision = decide_membership(&view, input, config, &caught_up, *valid);
            if decision.trouble.is_none() {
                decision.trouble = trouble(&view, input);
            }
            let replicas = if decision.hold.is_some() {
                // Held: no growth or shrink, but pods of members come back
                // (restoring a voter's pod can only help a missing quorum).
                current_replicas(input.observed)
                    .max(pods_for_members(&view))
                    .max(1)
            } else {
                statefulset_replicas(&view, input, *valid)
            };
            (decision, replicas)
        }
    };

    if !input.spec.paused && tls_trouble.is_some() {
        decision.trouble = tls_trouble;
    }
    // What is applied this round: nothing while paused or invalid.
    let applying = valid.filter(|_| !input.spec.paused);
    let mut recovered = None;
    match applying.and_then(|_| recovery(&view, input)) {
        None => {}
        Some(Recovery::Detected(message)) => {
            decision.step = None;
            decision.hold = Some((Reason::QuorumLost, message));
        }
        Some(Recovery::Run(run)) => {
            decision.step = Some(run.step);
            decision.hold = Some((Reason::QuorumLost, run.message));
            recovered = Some(run.record);
        }
        Some(Recovery::Refused(message)) => {
            decision.trouble = Some((Reason::RecoveryRefused, message));
        }
    }
    let auth = auth::plan_auth(
        input.spec,
        input.observed,
        tls,
        view.leader.filter(|_| view.cluster_id.is_some()),
    );
    if applying.is_some() && decision.hold.is_none() {
        // Before any membership step: no member is added to an open cluster.
        if let Some(step) = auth.step.clone() {
            decision.step = Some(step);
        }
        if decision.trouble.is_none() {
            decision.trouble = auth.trouble.clone();
        }
    }

    // Pods are replaced only when nothing else is to be done: no
    // membership step, no wait, no hold, the StatefulSet at its size.
    let rollout = rollout(&view, input, config);
    let idle = decision.step.is_none()
        && decision.hold.is_none()
        && decision.waiting.is_none()
        && view.cluster_id.is_some()
        && valid.is_some_and(|v| i64::from(v.replicas) == i64::from(replicas))
        && current_replicas(input.observed) == replicas;
    if applying.is_some() && idle {
        match rollout.action.clone() {
            Some(Action::Step(step)) => decision.step = Some(step),
            Some(Action::Wait(message)) => {
                decision.waiting = Some((Reason::RollingUpdate, message));
            }
            Some(Action::Stuck(message)) => {
                decision.hold = Some((Reason::RolloutStuck, message));
            }
            None => {}
        }
    }

    let (resize_pvcs, orphan_statefulset) = match (applying, storage_change(input)) {
        (
            Some(_),
            Some(StorageChange::Expand {
                resize,
                replace_statefulset,
            }),
        ) => (
            resize,
            replace_statefulset && !input.observed.statefulset_deleting,
        ),
        _ => (Vec::new(), false),
    };
    let delete_pvcs = match applying {
        Some(valid) if decision.hold.is_none() => pvcs_to_delete(&view, input, valid),
        _ => Vec::new(),
    };
    let objects = applying.map(|_| desired(input, config, replicas, tls));
    let certificates = objects
        .as_ref()
        .filter(|o| o.tls == TlsMode::Operator)
        .map(|_| {
            certs::plan_certificates(&CertInput {
                cluster,
                namespace: &input.owner.namespace,
                cluster_domain: &config.cluster_domain,
                pods: certificate_pods(input, replicas),
                tls: &input.observed.tls,
                now: offset_time(input.now),
            })
        });
    let mut notices = notices(input, &decision);
    if !resize_pvcs.is_empty() {
        notices.push(Notice {
            warning: false,
            reason: Reason::ExpandVolume,
            message: format!(
                "requested {} for {}",
                input.spec.storage.size.0,
                resize_pvcs.join(", ")
            ),
        });
    }
    if orphan_statefulset {
        notices.push(Notice {
            warning: false,
            reason: Reason::ReplaceStatefulSet,
            message: format!(
                "deleting StatefulSet {cluster} with its pods orphaned, to create it again with \
                 volumes of {}",
                input.spec.storage.size.0
            ),
        });
    }
    let mut status = status(
        input, &view, &decision, &caught_up, replicas, valid, &rollout,
    );
    status.auth = auth.state;
    status.rollout = rollout.status;
    status.recovery = recovered.or_else(|| input.previous.recovery.clone());
    let converged = status.phase == Some(Phase::Running) && decision.step.is_none();
    let requeue_after = decision
        .requeue
        .unwrap_or(if converged || input.spec.paused {
            STEADY_REQUEUE
        } else {
            ACTIVE_REQUEUE
        });
    Plan {
        objects,
        step: decision.step,
        delete_pvcs,
        resize_pvcs,
        orphan_statefulset,
        certificates,
        create_root_secret: applying.is_some() && auth.create_secret,
        status,
        notices,
        requeue_after,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tls_tests;
