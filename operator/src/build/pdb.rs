use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Owner;
use crate::names;

/// A budget that lets voluntary disruptions (drains) take pods only while a
/// raft quorum of `replicas` stays up. With one replica that means none:
/// such a cluster has no redundancy to spend.
///
/// Built as policy/v1; the same fields exist in policy/v1beta1, which
/// `apply` uses on servers without v1 (Kubernetes < 1.21).
pub fn pod_disruption_budget(owner: &Owner, replicas: i32) -> PodDisruptionBudget {
    let voters = usize::try_from(replicas).unwrap_or(0);
    let min_available = i32::try_from(names::quorum(voters)).unwrap_or(i32::MAX);
    PodDisruptionBudget {
        metadata: owner.meta(owner.name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(min_available)),
            selector: Some(LabelSelector {
                match_labels: Some(names::selector_labels(&owner.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::build::fixtures::kvc;

    #[test]
    fn pdb_keeps_a_quorum_of_the_desired_voters() {
        let owner = Owner::of(&kvc(json!({}))).expect("identity");
        for (replicas, min) in [(1, 1), (3, 2), (4, 3), (5, 3), (9, 5)] {
            let pdb = pod_disruption_budget(&owner, replicas);
            let spec = pdb.spec.as_ref().expect("spec");
            assert_eq!(
                spec.min_available,
                Some(IntOrString::Int(min)),
                "replicas {replicas}"
            );
            assert!(spec.max_unavailable.is_none());
            assert_eq!(
                spec.selector.as_ref().and_then(|s| s.match_labels.clone()),
                Some(names::selector_labels("kv"))
            );
        }
        let text = serde_json::to_string(&pod_disruption_budget(&owner, 3)).expect("json");
        assert!(
            !text.contains("unhealthyPodEvictionPolicy"),
            "unknown to 1.20"
        );
    }
}
