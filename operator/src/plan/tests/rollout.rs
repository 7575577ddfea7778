//! Rolling upgrades: which pod is replaced next, or why not, through
//! `plan` on the simulated cluster, with operator restarts between steps.

use super::*;

fn image(tag: &str) -> serde_json::Value {
    json!({"replicas": 3, "image": format!("raftkv/kvnode:{tag}")})
}

/// A running cluster whose pods run the template of image `a`.
fn on_image_a(n: u32, leader: u32) -> World {
    let mut world = World::running(n, leader);
    let spec = json!({"replicas": n, "image": "raftkv/kvnode:a"});
    let steps = converge(&mut world, &spec, None);
    assert!(steps.is_empty(), "{steps:?}");
    world
}

fn revisions(world: &World) -> Vec<String> {
    world.pods.values().map(|p| p.revision.clone()).collect()
}

fn ids(world: &World) -> Vec<NodeId> {
    world.pods.values().map(|p| p.id).collect()
}

fn degraded(plan: &Plan) -> (String, String) {
    plan.status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .map(|c| (c.reason.clone(), c.message.clone()))
        .expect("Degraded")
}

#[test]
fn an_image_change_replaces_followers_one_at_a_time_and_the_leader_last() {
    let mut world = on_image_a(3, 1);
    let before = ids(&world);
    let old = world.template.clone();
    world.restart_ticks = 2;
    let steps = converge(&mut world, &image("b"), None);
    assert_eq!(
        steps,
        [
            "replace kv-2",
            "replace kv-0",
            "transfer kv-1->kv-0",
            "replace kv-1"
        ]
    );
    assert_ne!(world.template, old, "a new image is a new template");
    let new = world.template.clone().expect("template");
    assert_eq!(revisions(&world), [new.clone(), new.clone(), new]);
    assert_eq!(ids(&world), before, "same volumes, same node ids");
    assert!(
        world
            .replaced
            .iter()
            .all(|(_, role)| *role == Role::Follower),
        "only followers are deleted: {:?}",
        world.replaced
    );
    let status = run_plan(&world, &image("b"), &KvClusterStatus::default()).status;
    let rollout = status.rollout.expect("rollout status");
    assert_eq!((rollout.updated, rollout.total), (3, 3));
    assert_eq!(rollout.waiting_for, None);
    assert_eq!(status.phase, Some(Phase::Running));
}

#[test]
fn the_next_pod_waits_until_the_replaced_one_is_back_and_caught_up() {
    let mut world = on_image_a(3, 0);
    world.restart_ticks = 3;
    let spec = image("b");
    let first = run_plan(&world, &spec, &KvClusterStatus::default());
    world.apply_objects(&first);
    let first = run_plan(&world, &spec, &KvClusterStatus::default());
    assert_eq!(summary(first.step.as_ref()), "replace kv-2");
    assert_eq!(first.status.phase, Some(Phase::Updating));
    let since = Some(Time(at(world.now)));
    world.execute(first.step.as_ref().expect("step"));
    let mut previous = first.status;
    for _ in 0..3 {
        world.now += TICK_SECONDS;
        let plan = run_plan(&world, &spec, &previous);
        assert_eq!(summary(plan.step.as_ref()), "none");
        assert_eq!(
            condition_reason(&plan.status, "Progressing"),
            "True/RollingUpdate"
        );
        let rollout = plan.status.rollout.clone().expect("rollout");
        assert_eq!(rollout.waiting_for.as_deref(), Some("kv-2"));
        assert_eq!(rollout.waiting_since, since, "kept from the deletion on");
        previous = plan.status;
        world.tick();
    }
    // Back, but lagging: still not the next one.
    let kv2 = world.pods[&2].id;
    world.lag.insert(kv2, MAX_LAG + 1);
    let plan = run_plan(&world, &spec, &previous);
    assert_eq!(summary(plan.step.as_ref()), "none");
    world.lag.insert(kv2, 0);
    let plan = run_plan(&world, &spec, &previous);
    assert_eq!(summary(plan.step.as_ref()), "replace kv-1");
}

#[test]
fn a_pod_not_back_within_the_deadline_stops_the_rollout_with_one_warning() {
    let mut world = on_image_a(3, 0);
    world.restart_ticks = 1000;
    let spec = image("b");
    let mut previous = KvClusterStatus::default();
    let mut warnings = 0;
    let mut replaced = Vec::new();
    let mut stuck_at = None;
    let mut replaced_at = None;
    for _ in 0..60 {
        let plan = run_plan(&world, &spec, &previous);
        world.apply_objects(&plan);
        if let Some(step) = &plan.step {
            replaced_at = replaced_at.or(Some(world.now));
            replaced.push(summary(Some(step)));
            world.execute(step);
        }
        warnings += plan
            .notices
            .iter()
            .filter(|n| n.reason == Reason::RolloutStuck)
            .count();
        if stuck_at.is_none() && condition_reason(&plan.status, "Degraded") == "True/RolloutStuck" {
            stuck_at = Some(world.now);
            assert_eq!(condition_reason(&plan.status, "Progressing"), "False/Held");
            assert_eq!(plan.status.phase, Some(Phase::Degraded));
        }
        previous = plan.status;
        world.now += TICK_SECONDS;
        world.tick();
    }
    assert_eq!(replaced, ["replace kv-2"], "nothing after the stuck pod");
    let deadline = i64::try_from(ROLLOUT_DEADLINE.as_secs()).expect("small");
    let waited = stuck_at.zip(replaced_at).map(|(s, r)| s - r);
    assert!(
        waited.is_some_and(|t| (deadline..=deadline + TICK_SECONDS).contains(&t)),
        "stuck after {waited:?}"
    );
    assert_eq!(warnings, 1, "one event per episode");

    // The pod comes back: the rollout goes on by itself.
    world.pods.get_mut(&2).expect("kv-2").starting = 0;
    let plan = run_plan(&world, &spec, &previous);
    assert_eq!(summary(plan.step.as_ref()), "replace kv-1");
    assert_eq!(condition_reason(&plan.status, "Degraded"), "False/Healthy");
}

#[test]
fn an_operator_restart_between_any_two_steps_of_a_rollout() {
    let start = {
        let mut world = on_image_a(3, 2);
        world.restart_ticks = 2;
        world
    };
    let spec = image("b");
    let mut reference = start.clone();
    let clean = converge(&mut reference, &spec, None);
    assert_eq!(clean.last().map(String::as_str), Some("replace kv-2"));
    for crash_round in 0..clean.len() * 8 {
        let mut world = start.clone();
        converge(&mut world, &spec, Some(crash_round));
        assert_eq!(
            revisions(&world),
            revisions(&reference),
            "crash at round {crash_round}"
        );
        assert_eq!(ids(&world), ids(&start), "crash at round {crash_round}");
        assert_eq!(
            world.replaced.last().map(|(p, _)| p.as_str()),
            Some("kv-2"),
            "crash at round {crash_round}: the leader's pod goes last"
        );
        assert_eq!(
            world.replaced.len(),
            3,
            "crash at round {crash_round}: each pod once"
        );
    }
}

#[test]
fn paused_holds_the_rollout_and_still_reports_it() {
    let world = on_image_a(3, 0);
    let mut spec = image("b");
    // The template changes only when applied; one applied round first.
    let mut w = world.clone();
    w.apply_objects(&run_plan(&w, &spec, &KvClusterStatus::default()));
    spec["paused"] = json!(true);
    let plan = run_plan(&w, &spec, &KvClusterStatus::default());
    assert_eq!(summary(plan.step.as_ref()), "none");
    assert_eq!(plan.status.phase, Some(Phase::Paused));
    let rollout = plan.status.rollout.expect("rollout");
    assert_eq!((rollout.updated, rollout.total), (0, 3));
}

#[test]
fn pods_are_replaced_only_while_every_voter_is_healthy() {
    let mut world = on_image_a(3, 0);
    let spec = image("b");
    world.apply_objects(&run_plan(&world, &spec, &KvClusterStatus::default()));
    let new = world.template.clone().expect("template");

    // An outdated pod that is down anyway goes first: it costs nothing.
    let mut down = world.clone();
    down.down(1);
    let plan = run_plan(&down, &spec, &KvClusterStatus::default());
    assert_eq!(
        summary(plan.step.as_ref()),
        "replace kv-1",
        "{:#?}",
        plan.status
    );

    // Two down: no quorum without them, nothing is touched.
    down.down(2);
    let plan = run_plan(&down, &spec, &KvClusterStatus::default());
    assert_eq!(summary(plan.step.as_ref()), "none");
    assert_eq!(plan.status.phase, Some(Phase::Degraded));

    // An updated pod down: wait for it, replace nothing else.
    let mut updated_down = world.clone();
    let kv2 = updated_down.pods.get_mut(&2).expect("kv-2");
    kv2.revision = new;
    updated_down.down(2);
    let plan = run_plan(&updated_down, &spec, &KvClusterStatus::default());
    assert_eq!(summary(plan.step.as_ref()), "none");
    assert_eq!(
        condition_reason(&plan.status, "Progressing"),
        "True/RollingUpdate"
    );
    assert_eq!(
        plan.status.rollout.and_then(|r| r.waiting_for).as_deref(),
        Some("kv-2")
    );

    // Nothing while the StatefulSet controller lags behind the template.
    let plan = run_plan_observing(&world, &spec, &KvClusterStatus::default(), |o| {
        if let Some(r) = o.statefulset_revisions.as_mut() {
            r.fresh = false;
        }
    });
    assert_eq!(summary(plan.step.as_ref()), "none");
}

#[test]
fn a_scale_up_with_a_new_image_grows_first_then_replaces_the_old_pods() {
    let mut world = on_image_a(3, 0);
    let spec = json!({"replicas": 5, "image": "raftkv/kvnode:b"});
    let steps = converge(&mut world, &spec, None);
    let first_replace = steps
        .iter()
        .position(|s| s.starts_with("replace"))
        .expect("a replacement");
    assert!(
        steps[..first_replace]
            .iter()
            .filter(|s| s.starts_with("promote"))
            .count()
            == 2,
        "both new members are voters before any pod is replaced: {steps:?}"
    );
    assert!(
        !steps.contains(&"replace kv-3".to_owned()) && !steps.contains(&"replace kv-4".to_owned()),
        "new pods start on the new template: {steps:?}"
    );
    assert_eq!(steps.last().map(String::as_str), Some("replace kv-0"));
    assert_eq!(world.voters_by_pod().len(), 5);
}

#[test]
fn a_single_node_cluster_is_replaced_in_place() {
    let mut world = on_image_a(1, 0);
    let steps = converge(
        &mut world,
        &json!({"replicas": 1, "image": "raftkv/kvnode:b"}),
        None,
    );
    assert_eq!(steps, ["replace kv-0"]);
}

#[test]
fn a_statefulset_of_an_older_operator_switches_to_on_delete() {
    let world = on_image_a(3, 0);
    let plan = run_plan_observing(&world, &image("a"), &KvClusterStatus::default(), |o| {
        o.statefulset_update_strategy = Some("RollingUpdate".into());
    });
    assert!(plan.objects.expect("objects").switch_to_on_delete);
    let plan = run_plan(&world, &image("a"), &KvClusterStatus::default());
    assert!(!plan.objects.expect("objects").switch_to_on_delete);
}

#[test]
fn env_the_operator_sets_is_refused() {
    let world = on_image_a(3, 0);
    let spec = json!({"replicas": 3, "image": "raftkv/kvnode:a",
                      "pod": {"env": [{"name": "KVNODE_DATA_DIR", "value": "/x"}]}});
    let plan = run_plan(&world, &spec, &KvClusterStatus::default());
    assert_eq!(plan.objects, None);
    let (reason, message) = degraded(&plan);
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("KVNODE_DATA_DIR") && message.contains("--data-dir"),
        "{message}"
    );
}

fn pvcs(observed: &mut Observed, size: &str, class: &str) {
    for pvc in &mut observed.pvcs {
        pvc.requested = Some(Quantity(size.into()));
        pvc.storage_class = Some(class.into());
    }
}

fn storage(size: &str) -> serde_json::Value {
    json!({"replicas": 3, "image": "raftkv/kvnode:a", "storage": {"size": size}})
}

fn kept(size: &str) -> Option<StorageSpec> {
    Some(StorageSpec {
        size: Quantity(size.into()),
        storage_class_name: None,
    })
}

#[test]
fn a_larger_size_on_an_expandable_class_resizes_the_pvcs_and_replaces_the_statefulset() {
    let world = on_image_a(3, 0);
    let none = KvClusterStatus::default();
    let plan = run_plan_observing(&world, &storage("2Gi"), &none, |o| {
        o.statefulset_storage = kept("1Gi");
        pvcs(o, "1Gi", "standard");
        o.expandable_classes.insert("standard".into(), true);
    });
    assert_eq!(plan.resize_pvcs, ["data-kv-0", "data-kv-1", "data-kv-2"]);
    assert!(plan.orphan_statefulset);
    assert_eq!(condition_reason(&plan.status, "Degraded"), "False/Healthy");
    let reasons: Vec<_> = plan.notices.iter().map(|n| n.reason).collect();
    assert_eq!(reasons, [Reason::ExpandVolume, Reason::ReplaceStatefulSet]);
    let sts = plan.objects.and_then(|o| o.statefulset).expect("sts");
    let template_size = sts.spec.and_then(|s| s.volume_claim_templates).map(|t| {
        t[0].spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.clone())
    });
    assert_eq!(
        template_size
            .flatten()
            .and_then(|r| r.get("storage").cloned()),
        Some(Quantity("1Gi".into())),
        "the old StatefulSet is applied with its own template until replaced"
    );

    // While it is deleted: no StatefulSet applied, nothing deleted again.
    let plan = run_plan_observing(&world, &storage("2Gi"), &none, |o| {
        o.statefulset_storage = kept("1Gi");
        o.statefulset_deleting = true;
        o.statefulset_revisions = None;
        pvcs(o, "2Gi", "standard");
        o.expandable_classes.insert("standard".into(), true);
    });
    assert!(plan.resize_pvcs.is_empty() && !plan.orphan_statefulset);
    assert_eq!(plan.objects.and_then(|o| o.statefulset), None);

    // Gone: created again with the new template, as large as the pods.
    let plan = run_plan_observing(&world, &storage("2Gi"), &none, |o| {
        o.statefulset_storage = None;
        o.statefulset_replicas = None;
        o.statefulset_revisions = None;
        pvcs(o, "2Gi", "standard");
    });
    assert!(plan.resize_pvcs.is_empty() && !plan.orphan_statefulset);
    assert_eq!(sts_replicas(&plan), Some(3));
    let sts = plan.objects.and_then(|o| o.statefulset).expect("sts");
    let claim = &sts
        .spec
        .and_then(|s| s.volume_claim_templates)
        .expect("claims")[0];
    let size = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned());
    assert_eq!(size, Some(Quantity("2Gi".into())));
}

#[test]
fn a_shrink_or_a_class_without_expansion_is_reported_not_applied() {
    let world = on_image_a(3, 0);
    let none = KvClusterStatus::default();
    let cases = [
        ("512Mi", Some(true), "cannot shrink"),
        ("2Gi", Some(false), "does not allow volume expansion"),
        ("2Gi", None, "could not be read"),
    ];
    for (size, expandable, why) in cases {
        let plan = run_plan_observing(&world, &storage(size), &none, |o| {
            o.statefulset_storage = kept("1Gi");
            pvcs(o, "1Gi", "standard");
            if let Some(e) = expandable {
                o.expandable_classes.insert("standard".into(), e);
            }
        });
        assert!(
            plan.resize_pvcs.is_empty() && !plan.orphan_statefulset,
            "{size}"
        );
        let (reason, message) = degraded(&plan);
        assert_eq!(reason, "StorageChangeNotApplied", "{size}");
        assert!(message.contains(why), "{message}");
    }
}
