//! Disaster recovery: a lost quorum is reported with the survivor to use,
//! acted on only when annotated, once per request value, and the cluster
//! grows back through the usual membership steps.

use super::*;

fn spec() -> serde_json::Value {
    json!({"replicas": 3})
}

fn degraded(plan: &Plan) -> (String, String) {
    plan.status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .map(|c| (format!("{}/{}", c.status, c.reason), c.message.clone()))
        .unwrap_or_default()
}

/// Three voters, two of them (`lost`) back on new volumes.
fn lost_two(lost: [u32; 2]) -> World {
    with(World::running(3, 0), |w| w.lose_volumes(&lost))
}

#[test]
fn quorum_loss_is_reported_with_the_survivor_and_nothing_is_done() {
    let mut world = lost_two([0, 1]);
    let mut previous = KvClusterStatus::default();
    for _ in 0..5 {
        let plan = run_plan(&world, &spec(), &previous);
        assert_eq!(summary(plan.step.as_ref()), "none");
        let (state, message) = degraded(&plan);
        assert_eq!(state, "True/QuorumLost");
        assert!(
            message.contains("gone: 100 (kv-0 now runs new node 200)"),
            "{message}"
        );
        assert!(
            message.contains("101 (kv-1 now runs new node 201)"),
            "{message}"
        );
        assert!(
            message.contains("from kv-2 (node 102, applied index 1000)"),
            "{message}"
        );
        assert!(message.contains("raftkv.io/force-new-cluster"), "{message}");
        assert_eq!(plan.status.phase, Some(Phase::Degraded));
        assert_eq!(plan.status.recovery, None);
        previous = plan.status;
        world.now += TICK_SECONDS;
    }
}

#[test]
fn a_surviving_leader_without_quorum_is_no_current_leader() {
    let world = lost_two([1, 2]);
    let plan = run_plan(&world, &spec(), &KvClusterStatus::default());
    let (state, message) = degraded(&plan);
    assert_eq!(state, "True/QuorumLost");
    assert!(message.contains("from kv-0 (node 100"), "{message}");
}

#[test]
fn the_survivor_is_the_voter_that_applied_the_most() {
    let world = with(World::running(5, 0), |w| w.lose_volumes(&[0, 1, 2]));
    let spec = json!({"replicas": 5});
    let plan = run_plan_observing(&world, &spec, &KvClusterStatus::default(), |o| {
        for pod in &mut o.pods {
            if let NodeView::Serving { status, .. } = &mut pod.node
                && pod.ordinal == 4
            {
                status.applied_index = Some(1200);
            }
        }
    });
    let (_, message) = degraded(&plan);
    assert!(
        message.contains("from kv-4 (node 104, applied index 1200)"),
        "{message}"
    );
}

#[test]
fn a_request_while_the_quorum_is_fine_is_refused_and_not_recorded() {
    // One voter of three lost: the quorum remains.
    let mut world = with(World::running(3, 0), |w| w.lose_volumes(&[2]));
    world.recovery_request = Some("now".into());
    let plan = run_plan(&world, &spec(), &KvClusterStatus::default());
    assert_eq!(summary(plan.step.as_ref()), "remove-lost kv-2#102");
    let (state, message) = degraded(&plan);
    assert_eq!(state, "True/RecoveryRefused");
    assert!(
        message.contains("raftkv.io/force-new-cluster=now ignored"),
        "{message}"
    );
    assert_eq!(plan.status.recovery, None);
    assert!(
        plan.notices
            .iter()
            .any(|n| n.reason == Reason::RecoveryRefused)
    );
}

#[test]
fn a_request_recovers_from_the_survivor_once_and_the_cluster_grows_back() {
    let mut world = lost_two([0, 1]);
    world.recovery_request = Some("r1".into());
    let steps = converge(&mut world, &spec(), None);
    assert_eq!(
        steps,
        [
            "force-new-cluster kv-2#102",
            "add kv-0#200",
            "add kv-1#201",
            "promote kv-0",
            "promote kv-1"
        ]
    );
    assert_eq!(world.voters_by_pod(), ["kv-0", "kv-1", "kv-2"]);
    assert!(world.raft.as_ref().is_some_and(|r| r.voters.contains(&102)));
}

#[test]
fn a_recorded_request_never_runs_again() {
    let mut world = lost_two([0, 1]);
    world.recovery_request = Some("r1".into());
    let first = run_plan(&world, &spec(), &KvClusterStatus::default());
    assert_eq!(summary(first.step.as_ref()), "force-new-cluster kv-2#102");
    let recorded = first.status.recovery.clone().expect("recorded");
    assert_eq!(
        (recorded.request.as_str(), recorded.survivor.as_str()),
        ("r1", "kv-2")
    );
    assert_eq!(
        (recorded.node_id.as_str(), recorded.applied_index),
        ("102", Some(1000))
    );

    // The call failed (nothing changed in the world): the same request
    // value does not run it again; a new value does.
    let again = run_plan(&world, &spec(), &first.status);
    assert_eq!(summary(again.step.as_ref()), "none");
    assert_eq!(degraded(&again).0, "True/QuorumLost");
    assert_eq!(again.status.recovery.as_ref(), Some(&recorded));
    world.recovery_request = Some("r2".into());
    let retry = run_plan(&world, &spec(), &first.status);
    assert_eq!(summary(retry.step.as_ref()), "force-new-cluster kv-2#102");
}

#[test]
fn operator_restart_between_any_two_steps_of_a_disaster_recovery() {
    crash_after_every_step(
        with(lost_two([0, 2]), |w| w.recovery_request = Some("r1".into())),
        spec(),
    );
}

#[test]
fn a_former_member_left_by_a_recovery_is_not_added_until_wiped() {
    let mut world = with(World::running(5, 0), |w| w.lose_volumes(&[0, 1, 2]));
    world.recovery_request = Some("r1".into());
    let spec = json!({"replicas": 5});
    let mut previous = KvClusterStatus::default();
    let mut steps = Vec::new();
    let mut last = None;
    for _ in 0..60 {
        let plan = run_plan(&world, &spec, &previous);
        world.apply_objects(&plan);
        if let Some(step) = &plan.step {
            world.execute(step);
            steps.push(summary(Some(step)));
        }
        previous = plan.status.clone();
        last = Some(plan);
        world.now += TICK_SECONDS;
        world.tick();
    }
    // Equal applied indexes: the lowest ordinal survives; kv-4 keeps the
    // old cluster's data and is left out.
    assert_eq!(steps[0], "force-new-cluster kv-3#103");
    assert!(
        !steps.iter().any(|s| s.starts_with("add kv-4")),
        "{steps:?}"
    );
    let (state, message) = degraded(last.as_ref().expect("ran"));
    assert_eq!(state, "True/StaleMember");
    assert!(message.contains("kv-4 (id 104)"), "{message}");

    // Its PVC and pod deleted by hand: it comes back empty and joins.
    world.lose_volumes(&[4]);
    converge(&mut world, &spec, None);
    assert_eq!(
        world.voters_by_pod(),
        ["kv-0", "kv-1", "kv-2", "kv-3", "kv-4"]
    );
}
