//! Disaster recovery: detected by the operator, run only when a human asks.
//!
//! Quorum is lost when no node leads with a healthy quorum behind it and
//! fewer than a majority of the membership's voters are healthy (a node
//! that still calls itself leader without a quorum is no current leader).
//! The operator then names the voters that are gone and the survivor it
//! would use (the healthy voter with the highest applied index), and waits
//! for the annotation `raftkv.io/force-new-cluster`. A request whose value
//! is not in `status.recovery` yet makes the survivor the only voter of the
//! cluster (same cluster id, same data); the membership logic then adds
//! the other pods back. A request while the quorum is fine is refused and
//! nothing is recorded. The node itself refuses while a quorum answers, so
//! an operator that cannot reach nodes that can reach each other does no
//! harm.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kvclient::NodeId;

use super::view::View;
use super::{PlanInput, Step};
use crate::crd::RecoveryStatus;
use crate::names::{FORCE_NEW_CLUSTER_ANNOTATION, quorum};

/// What recovery wants this round.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Recovery {
    /// Quorum lost and no request: hold, and say how to recover.
    Detected(String),
    /// Quorum lost and asked to recover.
    Run(Box<Run>),
    /// Asked to recover while the quorum is fine.
    Refused(String),
}

/// The step, what to record, and the Degraded message.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Run {
    pub(super) step: Step,
    pub(super) record: RecoveryStatus,
    pub(super) message: String,
}

struct Survivor<'a> {
    pod: &'a str,
    endpoint: &'a str,
    id: NodeId,
    applied: Option<u64>,
}

pub(super) fn recovery(view: &View, input: &PlanInput) -> Option<Recovery> {
    let request = input.recovery_request.filter(|r| {
        input
            .previous
            .recovery
            .as_ref()
            .is_none_or(|p| p.request != *r)
    });
    let cluster_id = view.cluster_id?;
    let voters = view.voters().count();
    let lost_quorum = voters > 0 && !view.has_quorum();
    if !lost_quorum {
        return request.map(|r| {
            Recovery::Refused(format!(
                "annotation {FORCE_NEW_CLUSTER_ANNOTATION}={r} ignored: {} of {voters} voters \
                 are healthy, the quorum is not lost; nothing was done. Remove the annotation: \
                 left in place it would act on a later quorum loss",
                view.healthy_voters()
            ))
        });
    }
    let gone: Vec<String> = view
        .voters()
        .filter(|m| !m.healthy)
        .map(|m| {
            let now = input
                .observed
                .pods
                .iter()
                .find(|p| Some(p.ordinal) == m.ordinal)
                .map_or("no pod".to_owned(), |p| match p.status() {
                    Some(s) if s.id != m.id => format!("{} now runs new node {}", p.name, s.id),
                    Some(_) => format!("{} is not a working member", p.name),
                    None => format!("{} does not answer", p.name),
                });
            format!("{} ({now})", m.id)
        })
        .collect();
    let survivor = view
        .voters()
        .filter(|m| m.healthy)
        .filter_map(|m| {
            let pod = m.pod?;
            Some(Survivor {
                pod: &pod.name,
                endpoint: pod.endpoint()?,
                id: m.id,
                applied: pod.status().and_then(|s| s.applied_index),
            })
        })
        // Highest applied index; on a tie the lowest ordinal (members are
        // sorted by ordinal, and min_by_key keeps the first minimum).
        .min_by_key(|s| std::cmp::Reverse(s.applied));
    let lost = format!(
        "quorum lost: {} of {voters} voters healthy, {} needed; gone: {}",
        view.healthy_voters(),
        quorum(voters),
        gone.join(", ")
    );
    let Some(survivor) = survivor else {
        // A request waits (unrecorded) until a survivor answers.
        return Some(Recovery::Detected(format!(
            "{lost}; no surviving voter answers, nothing can be recovered yet"
        )));
    };
    let applied = survivor
        .applied
        .map_or("unknown".to_owned(), |a| a.to_string());
    let Some(request) = request else {
        return Some(Recovery::Detected(format!(
            "{lost}. To recover from {} (node {}, applied index {applied}), annotate the \
             KvCluster {FORCE_NEW_CLUSTER_ANNOTATION}=<any value>: it becomes the only voter \
             and the other pods join it again; writes it had not applied are lost",
            survivor.pod, survivor.id
        )));
    };
    Some(Recovery::Run(Box::new(Run {
        step: Step::ForceNewCluster {
            endpoint: survivor.endpoint.to_owned(),
            pod: survivor.pod.to_owned(),
            id: survivor.id,
            cluster_id: cluster_id.to_owned(),
            applied_index: survivor.applied,
        },
        record: RecoveryStatus {
            request: request.to_owned(),
            survivor: survivor.pod.to_owned(),
            node_id: survivor.id.to_string(),
            applied_index: survivor.applied.and_then(|a| i64::try_from(a).ok()),
            at: Time(input.now),
        },
        message: format!(
            "{lost}; recovering from {} as asked ({request})",
            survivor.pod
        ),
    })))
}
