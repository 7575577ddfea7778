//! StatefulSet sizes: one pod at a time up, past non-members only down, and
//! the PVCs a scale-down leaves behind.

use std::collections::BTreeSet;

use super::PlanInput;
use super::validate::Valid;
use super::view::View;
use crate::crd::RetentionPolicy;
use crate::observe::Observed;

/// Replicas the StatefulSet has now. Without a StatefulSet, enough to keep
/// every pod that still exists: a StatefulSet recreated smaller would adopt
/// the orphaned pods and delete the ones above its size, voters included.
pub(super) fn current_replicas(observed: &Observed) -> i32 {
    observed.statefulset_replicas.unwrap_or_else(|| {
        observed
            .pods
            .iter()
            .map(|p| {
                i32::try_from(p.ordinal)
                    .unwrap_or(i32::MAX)
                    .saturating_add(1)
            })
            .max()
            .unwrap_or(0)
    })
}

/// The StatefulSet grows by one pod once every existing pod is a voter,
/// and shrinks only past pods that are no longer members. A member below
/// the desired size always gets its pod back (someone scaled the
/// StatefulSet down by hand).
pub(super) fn statefulset_replicas(view: &View, input: &PlanInput, valid: Valid) -> i32 {
    let n = i32::try_from(valid.replicas).unwrap_or(1);
    let current = current_replicas(input.observed);
    let members_need = pods_for_members(view);
    let next = if current > n {
        members_need.clamp(n, current)
    } else if current < n && (0..u32::try_from(current).unwrap_or(0)).all(|o| view.pod_is_voter(o))
    {
        current + 1
    } else {
        current
    };
    next.max(members_need.min(n)).max(1)
}

/// StatefulSet size that gives every member with an ordinal its pod.
pub(super) fn pods_for_members(view: &View) -> i32 {
    view.members
        .iter()
        .filter_map(|m| m.ordinal)
        .max()
        .map_or(0, |o| {
            i32::try_from(o).unwrap_or(i32::MAX).saturating_add(1)
        })
}

/// PVCs of pods removed by a scale-down, once the pod is gone, when the
/// spec says so. Never one a member or the StatefulSet still needs.
pub(super) fn pvcs_to_delete(view: &View, input: &PlanInput, valid: Valid) -> Vec<String> {
    if input.spec.pvc_retention_policy.when_scaled != RetentionPolicy::Delete {
        return Vec::new();
    }
    let keep_below = valid
        .replicas
        .max(u32::try_from(current_replicas(input.observed)).unwrap_or(u32::MAX));
    let members: BTreeSet<u32> = view.members.iter().filter_map(|m| m.ordinal).collect();
    input
        .observed
        .pvcs
        .iter()
        .filter(|pvc| {
            pvc.ordinal >= keep_below
                && !members.contains(&pvc.ordinal)
                && !input.observed.pods.iter().any(|p| p.ordinal == pvc.ordinal)
        })
        .map(|pvc| pvc.name.clone())
        .collect()
}
