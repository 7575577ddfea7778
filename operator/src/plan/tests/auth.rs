//! `spec.auth`: root's Secret, the one EnableAuth step (before any
//! membership change), what status says, and what is refused or reported.

use super::*;
use crate::crd::AuthState;

/// A world whose nodes run with auth off and no root Secret yet.
fn open(world: World) -> World {
    World {
        auth_enabled: false,
        root_password: None,
        ..world
    }
}

fn degraded(plan: &Plan) -> String {
    condition_reason(&plan.status, "Degraded")
}

#[test]
fn a_new_cluster_turns_auth_on_right_after_initialization_before_growing() {
    let mut world = open(World::empty());
    let first = run_plan(&world, &json!({"replicas": 3}), &KvClusterStatus::default());
    assert!(
        first.create_root_secret,
        "the Secret is made before the cluster exists"
    );
    assert_eq!(first.status.auth, Some(AuthState::Pending));

    let steps = converge(&mut world, &json!({"replicas": 3}), None);
    assert_eq!(steps[0], "init kv-0");
    assert_eq!(
        steps[1], "enable-auth kv-0",
        "auth before any member is added: {steps:?}"
    );
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.starts_with("enable-auth"))
            .count(),
        1
    );
    assert!(world.auth_enabled);
    let last = run_plan(&world, &json!({"replicas": 3}), &KvClusterStatus::default());
    assert_eq!(last.status.auth, Some(AuthState::Enabled));
    assert!(!last.create_root_secret && last.step.is_none());
}

#[test]
fn auth_waits_for_the_root_secret_and_uses_its_password() {
    let world = open(World::running(3, 1));
    let plan = run_plan(&world, &json!({"replicas": 3}), &KvClusterStatus::default());
    assert!(plan.create_root_secret);
    assert_eq!(plan.step, None, "no password yet, nothing to enable with");
    assert_eq!(plan.status.auth, Some(AuthState::Pending));

    let world = World {
        root_password: Some(Password::new("from-the-secret".into())),
        ..world
    };
    let plan = run_plan(&world, &json!({"replicas": 3}), &KvClusterStatus::default());
    assert!(
        !plan.create_root_secret,
        "an existing Secret is never replaced"
    );
    match &plan.step {
        Some(Step::EnableAuth {
            leader,
            pod,
            password,
        }) => {
            assert_eq!(leader, &endpoint(1), "through the leader");
            assert_eq!(pod, "kv-1");
            assert_eq!(password.expose(), "from-the-secret");
        }
        other => panic!("expected EnableAuth, got {other:?}"),
    }
}

#[test]
fn auth_goes_before_a_pending_scale_up() {
    let world = World {
        root_password: Some(Password::new("p".into())),
        ..open(World::running(1, 0))
    };
    let plan = run_plan(&world, &json!({"replicas": 3}), &KvClusterStatus::default());
    assert_eq!(summary(plan.step.as_ref()), "enable-auth kv-0");
}

#[test]
fn the_password_never_shows_in_a_step_or_a_plan() {
    let world = World {
        root_password: Some(Password::new("s3cr3t-password".into())),
        ..open(World::running(3, 0))
    };
    let plan = run_plan(&world, &json!({"replicas": 3}), &KvClusterStatus::default());
    let step = plan.step.as_ref().expect("a step");
    assert!(!format!("{step}").contains("s3cr3t"));
    assert!(!format!("{plan:?}").contains("s3cr3t"));
}

#[test]
fn operator_restart_between_any_two_steps_of_a_bootstrap_with_auth() {
    crash_after_every_step(open(World::empty()), json!({"replicas": 3}));
}

#[test]
fn disabled_auth_makes_no_secret_and_no_step_and_says_so() {
    let spec = json!({"replicas": 3, "auth": {"enabled": false}});
    let world = open(World::running(3, 0));
    let plan = run_plan(&world, &spec, &KvClusterStatus::default());
    assert!(!plan.create_root_secret && plan.step.is_none());
    assert_eq!(plan.status.auth, Some(AuthState::Disabled));

    // Turned on earlier: the operator never turns it off, it says so.
    let world = World::running(3, 0);
    let plan = run_plan(&world, &spec, &KvClusterStatus::default());
    assert_eq!(plan.step, None);
    assert_eq!(plan.status.auth, Some(AuthState::Enabled));
    assert_eq!(degraded(&plan), "True/AuthChangeNotApplied");
}

#[test]
fn auth_without_tls_is_refused_unless_both_are_off() {
    let world = open(World::empty());
    let plan = run_plan(
        &world,
        &json!({"tls": {"enabled": false}}),
        &KvClusterStatus::default(),
    );
    assert_eq!(degraded(&plan), "True/InvalidSpec");
    assert!(plan.objects.is_none() && !plan.create_root_secret);

    let plan = run_plan(
        &world,
        &json!({"tls": {"enabled": false}, "auth": {"enabled": false}}),
        &KvClusterStatus::default(),
    );
    assert!(plan.objects.is_some());
    assert_eq!(plan.status.auth, Some(AuthState::Disabled));
}

#[test]
fn a_cluster_kept_on_plaintext_does_not_get_auth() {
    // Made before spec.tls: it keeps running plaintext, so the operator
    // could not be root by its certificate once auth were on.
    let world = open(World::running(3, 0));
    let kvc = fixtures::kvc(json!({"replicas": 3}));
    let owner = Owner::of(&kvc).expect("identity");
    let observed = Observed {
        statefulset_tls: Some(TlsMode::Plaintext),
        ..world.observe()
    };
    let previous = KvClusterStatus {
        cluster_id: Some("c1".into()),
        ..KvClusterStatus::default()
    };
    let plan = plan(
        &PlanInput {
            recovery_request: None,
            owner: &owner,
            spec: &kvc.spec,
            generation: kvc.metadata.generation,
            previous: &previous,
            observed: &observed,
            pdb: PdbSupport::V1,
            now: at(0),
        },
        &config(),
    );
    assert_eq!(plan.step, None);
    assert!(!plan.create_root_secret);
    // TLS's own notice (the cluster keeps plaintext) is the Degraded
    // reason; auth's state says it is not on.
    assert_eq!(degraded(&plan), "True/TlsChangeNotApplied");
    assert_eq!(plan.status.auth, Some(AuthState::Pending));
}

#[test]
fn nodes_without_the_auth_api_are_reported() {
    let world = open(World::running(3, 0));
    let mut observed = world.observe();
    for pod in &mut observed.pods {
        if let NodeView::Serving { auth, .. } = &mut pod.node {
            *auth = crate::auth::NodeAuth::Unsupported;
        }
    }
    observed.root_password = Some(Password::new("p".into()));
    let kvc = fixtures::kvc(json!({"replicas": 3}));
    let owner = Owner::of(&kvc).expect("identity");
    let plan = plan(
        &PlanInput {
            recovery_request: None,
            owner: &owner,
            spec: &kvc.spec,
            generation: kvc.metadata.generation,
            previous: &KvClusterStatus::default(),
            observed: &observed,
            pdb: PdbSupport::V1,
            now: at(0),
        },
        &config(),
    );
    assert_eq!(plan.step, None);
    assert_eq!(plan.status.auth, Some(AuthState::Unsupported));
    assert_eq!(degraded(&plan), "True/AuthUnsupported");
}
