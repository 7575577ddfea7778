//! Table-driven tests of single decisions, and a small simulated cluster
//! (StatefulSet + raft membership) that runs whole scale-ups, scale-downs
//! and recoveries through `plan`, checking raft safety after every step and
//! replaying operator crashes between any two steps.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kvclient::{ClusterStatus, NodeId, Role};
use serde_json::json;

use super::storage::same_quantity;
use super::*;
use crate::auth::Password;
use crate::build::fixtures;
use crate::crd::{MemberRole, MemberStatus, StorageSpec};
use crate::names::{self, quorum};
use crate::observe::{NodeView, ObservedPod, ObservedPvc, ObservedTls, Revisions};
use crate::reason::Reason;

/// Operator-managed auth, on the same simulated cluster.
mod auth;
/// Disaster recovery (quorum lost), on the same simulated cluster.
mod recovery;
/// Rolling upgrades and volume expansion, on the same simulated cluster.
mod rollout;
mod world;

use world::*;

const STABILIZATION: Duration = Duration::from_secs(10);
const MAX_LAG: u64 = 100;
/// Simulated time between two reconciles.
const TICK_SECONDS: i64 = 2;
const ROLLOUT_DEADLINE: Duration = Duration::from_secs(60);

fn config() -> PlanConfig {
    PlanConfig {
        stabilization: STABILIZATION,
        max_lag: MAX_LAG,
        cluster_domain: "cluster.local".into(),
        operator_peer: OperatorPeer::default(),
        rollout_deadline: ROLLOUT_DEADLINE,
    }
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("valid time")
}

fn endpoint(ordinal: u32) -> String {
    format!("http://10.0.0.{ordinal}:7379")
}

fn pod_name(ordinal: u32) -> String {
    names::pod("kv", ordinal)
}

/// Node ids are derived from the ordinal so expectations are readable:
/// the first node of kv-1 is 101, the node after its volume was lost 201.
fn id(ordinal: u32, generation: u64) -> NodeId {
    generation * 100 + u64::from(ordinal)
}

fn run_plan(world: &World, spec: &serde_json::Value, previous: &KvClusterStatus) -> Plan {
    run_plan_observing(world, spec, previous, |_| {})
}

/// [`run_plan`] with the world's observation changed by `edit` first.
fn run_plan_observing(
    world: &World,
    spec: &serde_json::Value,
    previous: &KvClusterStatus,
    edit: impl FnOnce(&mut Observed),
) -> Plan {
    let kvc = fixtures::kvc(spec.clone());
    let owner = Owner::of(&kvc).expect("identity");
    let mut observed = world.observe();
    edit(&mut observed);
    plan(
        &PlanInput {
            recovery_request: world.recovery_request.as_deref(),
            owner: &owner,
            spec: &kvc.spec,
            generation: kvc.metadata.generation,
            previous,
            observed: &observed,
            pdb: PdbSupport::V1,
            now: at(world.now),
        },
        &config(),
    )
}

/// Short, stable text of a step for expectations.
fn summary(step: Option<&Step>) -> String {
    match step {
        None => "none".into(),
        Some(Step::Initialize { pod, .. }) => format!("init {pod}"),
        Some(Step::RestoreFromBackup { pod, .. }) => format!("restore {pod}"),
        Some(Step::AddLearner { pod, request, .. }) => format!("add {pod}#{}", request.id),
        Some(Step::Promote { pod, .. }) => format!("promote {pod}"),
        Some(Step::TransferLeadership {
            from_pod, to_pod, ..
        }) => {
            format!("transfer {from_pod}->{to_pod}")
        }
        Some(Step::Demote { pod, .. }) => format!("demote {pod}"),
        Some(Step::Remove {
            pod,
            id,
            why: Removal::ScaleDown,
            ..
        }) => format!("remove {pod}#{id}"),
        Some(Step::Remove {
            pod,
            id,
            why: Removal::LostVolume,
            ..
        }) => format!("remove-lost {pod}#{id}"),
        Some(Step::EnableAuth { pod, .. }) => format!("enable-auth {pod}"),
        Some(Step::ReplacePod { pod, .. }) => format!("replace {pod}"),
        Some(Step::ForceNewCluster { pod, id, .. }) => format!("force-new-cluster {pod}#{id}"),
    }
}

fn sts_replicas(plan: &Plan) -> Option<i32> {
    plan.objects
        .as_ref()
        .and_then(|o| o.statefulset.as_ref())
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas)
}

fn condition_reason(status: &KvClusterStatus, type_: &str) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| format!("{}/{}", c.status, c.reason))
        .unwrap_or_default()
}

/// A previous status saying the learner `id` has been caught up since `since`.
fn caught_up_status(id: NodeId, since: i64) -> KvClusterStatus {
    KvClusterStatus {
        cluster_id: Some("c1".into()),
        members: vec![MemberStatus {
            id: id.to_string(),
            pod: None,
            role: MemberRole::Learner,
            healthy: true,
            lag: Some(0),
            caught_up_since: Some(Time(at(since))),
        }],
        ..KvClusterStatus::default()
    }
}

struct Case {
    name: &'static str,
    world: World,
    spec: serde_json::Value,
    previous: KvClusterStatus,
    step: &'static str,
    replicas: Option<i32>,
    phase: Phase,
    pvcs_deleted: &'static [&'static str],
}

fn case(name: &'static str, world: World, spec: serde_json::Value) -> Case {
    Case {
        name,
        world,
        spec,
        previous: KvClusterStatus::default(),
        step: "none",
        replicas: None,
        phase: Phase::Running,
        pvcs_deleted: &[],
    }
}

impl Case {
    fn expect(mut self, step: &'static str, replicas: Option<i32>, phase: Phase) -> Case {
        self.step = step;
        self.replicas = replicas;
        self.phase = phase;
        self
    }
    fn previous(mut self, previous: KvClusterStatus) -> Case {
        self.previous = previous;
        self
    }
    fn deletes(mut self, pvcs: &'static [&'static str]) -> Case {
        self.pvcs_deleted = pvcs;
        self
    }
}

/// World builders for the table.
fn with(mut world: World, change: impl FnOnce(&mut World)) -> World {
    change(&mut world);
    world
}

fn add_learner(world: &mut World, ordinal: u32, lag: u64) {
    let node = world.pods[&ordinal].id;
    let raft = world.raft.as_mut().expect("initialized");
    raft.learners.push(node);
    raft.names.insert(node, pod_name(ordinal));
    raft.joined.insert(node);
    world.lag.insert(node, lag);
}

fn cases() -> Vec<Case> {
    let three = json!({"replicas": 3});
    vec![
        case(
            "fresh cluster: StatefulSet of one pod first",
            World::empty(),
            three.clone(),
        )
        .expect("none", Some(1), Phase::Pending),
        case(
            "bootstrap: pod 0 serves and nothing is initialized",
            with(World::empty(), |w| w.set_statefulset(1)),
            three.clone(),
        )
        .expect("init kv-0", Some(1), Phase::Pending),
        case(
            "bootstrap waits for pod 0 to answer",
            with(World::empty(), |w| {
                w.set_statefulset(1);
                w.down(0);
            }),
            three.clone(),
        )
        .expect("none", Some(1), Phase::Pending),
        case(
            "scale-up: grow the StatefulSet by one",
            World::running(1, 0),
            three.clone(),
        )
        .expect("none", Some(2), Phase::Scaling),
        case(
            "scale-up: the new pod serves, add it as learner",
            with(World::running(1, 0), |w| w.set_statefulset(2)),
            three.clone(),
        )
        .expect("add kv-1#101", Some(2), Phase::Scaling),
        case(
            "scale-up: caught-up learner waits for the stabilization time",
            with(World::running(1, 0), |w| {
                w.set_statefulset(2);
                add_learner(w, 1, 0);
                w.now = 100;
            }),
            three.clone(),
        )
        .previous(caught_up_status(101, 95))
        .expect("none", Some(2), Phase::Scaling),
        case(
            "scale-up: learner caught up for the stabilization time is promoted",
            with(World::running(1, 0), |w| {
                w.set_statefulset(2);
                add_learner(w, 1, 0);
                w.now = 100;
            }),
            three.clone(),
        )
        .previous(caught_up_status(101, 90))
        .expect("promote kv-1", Some(2), Phase::Scaling),
        case(
            "scale-up: lagging learner is not promoted however long ago it caught up",
            with(World::running(1, 0), |w| {
                w.set_statefulset(2);
                add_learner(w, 1, MAX_LAG + 1);
                w.now = 100;
            }),
            three.clone(),
        )
        .previous(caught_up_status(101, 0))
        .expect("none", Some(2), Phase::Scaling),
        case(
            "scale-up: grows again once the new pod is a voter",
            with(World::running(2, 0), |w| w.set_statefulset(2)),
            three.clone(),
        )
        .expect("none", Some(3), Phase::Scaling),
        case("converged", World::running(3, 1), three.clone()).expect(
            "none",
            Some(3),
            Phase::Running,
        ),
        case(
            "scale-down: the leader is on the removed ordinal, transfer first",
            World::running(3, 2),
            json!({"replicas": 2}),
        )
        .expect("transfer kv-2->kv-0", Some(3), Phase::Scaling),
        case(
            "scale-down: transfer goes to the least lagging voter that stays",
            with(World::running(3, 2), |w| {
                w.lag.insert(id(0, 1), 50);
            }),
            json!({"replicas": 2}),
        )
        .expect("transfer kv-2->kv-1", Some(3), Phase::Scaling),
        case(
            "scale-down: drop the highest ordinal from the voters, keep its pod",
            World::running(3, 0),
            json!({"replicas": 2}),
        )
        .expect("demote kv-2", Some(3), Phase::Scaling),
        case(
            "scale-down: remove the demoted member",
            with(World::running(2, 0), |w| {
                w.set_statefulset(3);
                add_learner(w, 2, 0);
            }),
            json!({"replicas": 2}),
        )
        .expect("remove kv-2#102", Some(3), Phase::Scaling),
        case(
            "scale-down: shrink the StatefulSet once the pod is no member",
            with(World::running(2, 0), |w| w.set_statefulset(3)),
            json!({"replicas": 2}),
        )
        .expect("none", Some(2), Phase::Scaling),
        case(
            "scale-down: delete the PVC of the removed pod when whenScaled is Delete",
            with(World::running(2, 0), |w| {
                w.set_statefulset(3);
                w.set_statefulset(2);
            }),
            json!({"replicas": 2, "pvcRetentionPolicy": {"whenScaled": "Delete"}}),
        )
        .expect("none", Some(2), Phase::Running)
        .deletes(&["data-kv-2"]),
        case(
            "scale-down: keep the PVC when whenScaled is Retain",
            with(World::running(2, 0), |w| {
                w.set_statefulset(3);
                w.set_statefulset(2);
            }),
            json!({"replicas": 2}),
        )
        .expect("none", Some(2), Phase::Running),
        case(
            "scale-down never leaves fewer healthy voters than a quorum",
            with(World::running(3, 0), |w| w.down(1)),
            json!({"replicas": 1}),
        )
        .expect("none", Some(3), Phase::Degraded),
        case(
            "unhealthy quorum holds every change",
            with(World::running(3, 0), |w| {
                w.down(1);
                w.down(2);
                w.set_statefulset(4);
            }),
            json!({"replicas": 5}),
        )
        .expect("none", Some(4), Phase::Degraded),
        case(
            "no reachable leader holds every change",
            with(World::running(3, 0), |w| w.down(0)),
            json!({"replicas": 5}),
        )
        .expect("none", Some(3), Phase::Degraded),
        case(
            "lost volume of a voter: remove its stale id first",
            with(World::running(3, 0), |w| w.lose_volume(1)),
            three.clone(),
        )
        .expect("remove-lost kv-1#101", Some(3), Phase::Scaling),
        case(
            "lost volume: then add the new id as learner",
            with(World::running(3, 0), |w| {
                w.lose_volume(1);
                let raft = w.raft.as_mut().expect("raft");
                raft.voters.retain(|v| *v != id(1, 1));
            }),
            three.clone(),
        )
        .expect("add kv-1#201", Some(3), Phase::Scaling),
        case(
            "an initialized cluster whose nodes all lost their data is not re-initialized",
            with(World::empty(), |w| w.set_statefulset(3)),
            three.clone(),
        )
        .previous(KvClusterStatus {
            cluster_id: Some("c1".into()),
            ..KvClusterStatus::default()
        })
        .expect("none", Some(3), Phase::Degraded),
        case(
            "paused: no step, nothing applied",
            with(World::running(3, 0), |w| w.set_statefulset(4)),
            json!({"replicas": 5, "paused": true}),
        )
        .expect("none", None, Phase::Paused),
        case(
            "invalid raft timing holds everything",
            World::running(3, 0),
            json!({"replicas": 3, "raft": {"heartbeatIntervalMs": 100, "electionTimeoutMs": 250}}),
        )
        .expect("none", None, Phase::Degraded),
        case(
            "more than 9 members: kv-10 is removed before kv-9 (numeric order)",
            World::running(11, 0),
            json!({"replicas": 9}),
        )
        .expect("demote kv-10", Some(11), Phase::Scaling),
        case(
            "StatefulSet scaled down by hand under voters: their pods come back",
            with(World::running(3, 0), |w| w.set_statefulset(1)),
            three.clone(),
        )
        .expect("none", Some(3), Phase::Degraded),
        case(
            "StatefulSet deleted with orphaned pods: recreate it large enough to keep them",
            with(World::running(3, 0), |w| w.statefulset = None),
            three.clone(),
        )
        .expect("none", Some(3), Phase::Running),
    ]
}

#[test]
fn plan_table() {
    for case in cases() {
        let plan = run_plan(&case.world, &case.spec, &case.previous);
        assert_eq!(
            summary(plan.step.as_ref()),
            case.step,
            "{}: step",
            case.name
        );
        assert_eq!(
            sts_replicas(&plan),
            case.replicas,
            "{}: StatefulSet replicas",
            case.name
        );
        assert_eq!(plan.status.phase, Some(case.phase), "{}: phase", case.name);
        assert_eq!(
            plan.delete_pvcs, case.pvcs_deleted,
            "{}: PVCs deleted",
            case.name
        );
    }
}

#[test]
fn held_changes_report_degraded_with_a_reason_and_one_warning() {
    let mut world = World::running(3, 0);
    world.down(1);
    world.down(2);
    let plan = run_plan(&world, &json!({"replicas": 3}), &KvClusterStatus::default());
    // A leader without a healthy quorum: reported as a lost quorum (the
    // operator still only acts when asked, see tests/recovery.rs).
    assert_eq!(
        condition_reason(&plan.status, "Degraded"),
        "True/QuorumLost"
    );
    assert_eq!(
        condition_reason(&plan.status, "Available"),
        "False/QuorumUnhealthy"
    );
    assert_eq!(
        plan.notices.iter().map(|n| n.reason).collect::<Vec<_>>(),
        [Reason::QuorumLost]
    );
    // The next reconcile, still held, does not repeat the warning.
    let again = run_plan(&world, &json!({"replicas": 3}), &plan.status);
    assert!(again.notices.is_empty(), "{:?}", again.notices);
    let degraded = |s: &KvClusterStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .map(|c| c.last_transition_time.clone())
    };
    assert_eq!(degraded(&again.status), degraded(&plan.status));
}

#[test]
fn status_reports_members_leader_and_tolerance() {
    let mut world = World::running(3, 1);
    world.lag.insert(id(2, 1), 7);
    world.down(0);
    let plan = run_plan(&world, &json!({"replicas": 3}), &KvClusterStatus::default());
    let status = &plan.status;
    assert_eq!(status.leader.as_deref(), Some("kv-1"));
    assert_eq!(status.cluster_id.as_deref(), Some("c1"));
    assert_eq!(status.replicas, 3);
    assert_eq!(status.ready_replicas, 2);
    assert_eq!(status.failure_tolerance, Some(0));
    assert_eq!(status.observed_generation, Some(4));
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/instance=kv,app.kubernetes.io/name=raftkv")
    );
    let members: Vec<_> = status
        .members
        .iter()
        .map(|m| (m.id.as_str(), m.pod.as_deref(), m.role, m.healthy, m.lag))
        .collect();
    assert_eq!(
        members,
        [
            ("100", Some("kv-0"), MemberRole::Voter, false, Some(0)),
            ("101", Some("kv-1"), MemberRole::Leader, true, Some(0)),
            ("102", Some("kv-2"), MemberRole::Voter, true, Some(7)),
        ]
    );
    assert_eq!(
        condition_reason(status, "Available"),
        "True/QuorumAvailable"
    );
    assert_eq!(
        condition_reason(status, "Degraded"),
        "True/MembersUnhealthy"
    );
}

#[test]
fn foreign_node_is_never_added() {
    let mut world = World::running(2, 0);
    world.set_statefulset(3);
    let observed_pod = world.pods.get_mut(&2).expect("pod");
    observed_pod.id = 999;
    let mut other = world.clone();
    other.raft = Some(Raft {
        cluster_id: "other".into(),
        voters: vec![999],
        learners: vec![],
        leader: 999,
        term: 9,
        names: BTreeMap::from([(999, pod_name(2))]),
        joined: BTreeSet::from([999]),
    });
    // Observe both worlds and splice the foreign node's report in.
    let mut observed = world.observe();
    observed.pods[2] = other.observe().pods[2].clone();
    if let NodeView::Serving { status, .. } = &mut observed.pods[2].node {
        status.role = Role::Follower;
    }
    let kvc = fixtures::kvc(json!({"replicas": 3}));
    let owner = Owner::of(&kvc).expect("identity");
    let plan = plan(
        &PlanInput {
            recovery_request: None,
            owner: &owner,
            spec: &kvc.spec,
            generation: Some(1),
            previous: &KvClusterStatus::default(),
            observed: &observed,
            pdb: PdbSupport::V1,
            now: at(0),
        },
        &config(),
    );
    assert_eq!(summary(plan.step.as_ref()), "none");
    assert_eq!(
        condition_reason(&plan.status, "Degraded"),
        "True/ForeignNode"
    );
}

#[test]
fn missing_pdb_api_skips_the_budget_with_one_warning() {
    let world = World::running(3, 0);
    let kvc = fixtures::kvc(json!({"replicas": 3}));
    let owner = Owner::of(&kvc).expect("identity");
    let observed = world.observe();
    let input = |previous| PlanInput {
        recovery_request: None,
        owner: &owner,
        spec: &kvc.spec,
        generation: Some(4),
        previous,
        observed: &observed,
        pdb: PdbSupport::None,
        now: at(0),
    };
    let none = KvClusterStatus::default();
    let first = plan(&input(&none), &config());
    assert!(first.objects.as_ref().is_some_and(|o| o.pdb.is_none()));
    assert_eq!(
        first.notices.iter().map(|n| n.reason).collect::<Vec<_>>(),
        [Reason::PodDisruptionBudgetUnsupported]
    );
    let second = plan(&input(&first.status), &config());
    assert!(second.notices.is_empty());
}

/// Runs reconciles until the cluster converges. `lose_status_after` makes
/// the status write of that round fail (an operator crash right after the
/// step), so the next round plans from the older status.
fn converge(
    world: &mut World,
    spec: &serde_json::Value,
    lose_status_after: Option<usize>,
) -> Vec<String> {
    let mut previous = KvClusterStatus::default();
    let mut steps = Vec::new();
    let mut quiet_rounds = 0;
    for round in 0..400 {
        let plan = run_plan(world, spec, &previous);
        // Determinism: an operator that restarts now decides the same.
        assert_eq!(
            plan,
            run_plan(world, spec, &previous),
            "round {round} is not deterministic"
        );
        world.apply_objects(&plan);
        if let Some(step) = &plan.step {
            world.execute(step);
            steps.push(summary(Some(step)));
        }
        if lose_status_after != Some(round) {
            previous = plan.status.clone();
        }
        world.now += TICK_SECONDS;
        world.tick();
        let settled = plan.step.is_none() && plan.status.phase == Some(Phase::Running);
        quiet_rounds = if settled { quiet_rounds + 1 } else { 0 };
        if quiet_rounds == 2 {
            return steps;
        }
    }
    panic!("did not converge: {steps:?} world {world:?}");
}

#[test]
fn fresh_cluster_of_three_bootstraps_and_grows_one_voter_at_a_time() {
    let mut world = World::empty();
    let steps = converge(&mut world, &json!({"replicas": 3}), None);
    assert_eq!(
        steps,
        [
            "init kv-0",
            "add kv-1#101",
            "promote kv-1",
            "add kv-2#102",
            "promote kv-2"
        ]
    );
    assert_eq!(world.voters_by_pod(), ["kv-0", "kv-1", "kv-2"]);
    assert_eq!(world.statefulset, Some(3));
}

#[test]
fn a_cluster_from_a_backup_restores_node_0_then_grows_as_usual() {
    let mut world = World::empty();
    let spec = json!({"replicas": 3, "bootstrap": {"fromBackup": {"kvBackup": "nightly"}}});
    let steps = converge(&mut world, &spec, None);
    assert_eq!(
        steps,
        [
            "restore kv-0",
            "add kv-1#101",
            "promote kv-1",
            "add kv-2#102",
            "promote kv-2"
        ]
    );
    assert_eq!(world.voters_by_pod(), ["kv-0", "kv-1", "kv-2"]);
    // Both or neither of s3 and key: anything else is an invalid spec.
    let half = json!({"replicas": 3, "bootstrap": {"fromBackup": {"key": "a.snap"}}});
    let plan = run_plan(&World::empty(), &half, &KvClusterStatus::default());
    assert_eq!(
        condition_reason(&plan.status, "Degraded"),
        "True/InvalidSpec"
    );
    assert!(plan.step.is_none());
    let bad_cron = json!({"replicas": 3, "backup": {"schedule": "0 25 * * *",
        "destination": {"s3": {"bucket": "b", "credentialsSecret": "s"}}}});
    let plan = run_plan(&World::empty(), &bad_cron, &KvClusterStatus::default());
    assert_eq!(
        condition_reason(&plan.status, "Degraded"),
        "True/InvalidSpec"
    );
    // A volume: the path must stay on it; s3 and pvc together are refused.
    for (why, bad) in [
        (
            "a path off the volume",
            json!({"fromBackup": {"pvc": {"claimName": "b"}, "key": "../x.snap"}}),
        ),
        (
            "two sources",
            json!({"fromBackup": {"pvc": {"claimName": "b"}, "key": "x.snap",
                "s3": {"bucket": "bb", "credentialsSecret": "s"}}}),
        ),
    ] {
        let spec = json!({"replicas": 3, "bootstrap": bad});
        let plan = run_plan(&World::empty(), &spec, &KvClusterStatus::default());
        assert_eq!(
            condition_reason(&plan.status, "Degraded"),
            "True/InvalidSpec",
            "{why}"
        );
    }
    for (why, backup) in [
        (
            "both destinations",
            json!({"schedule": "@daily", "destination": {"pvc": {"claimName": "b"},
                "s3": {"bucket": "bb", "credentialsSecret": "s"}}}),
        ),
        (
            "no destination",
            json!({"schedule": "@daily", "destination": {}}),
        ),
        (
            "a prefix off the volume",
            json!({"schedule": "@daily", "destination": {"pvc": {"claimName": "b", "prefix": "../up"}}}),
        ),
    ] {
        let spec = json!({"replicas": 3, "backup": backup});
        let plan = run_plan(&World::empty(), &spec, &KvClusterStatus::default());
        assert_eq!(
            condition_reason(&plan.status, "Degraded"),
            "True/InvalidSpec",
            "{why}"
        );
    }
    let from_volume = json!({"replicas": 1,
        "bootstrap": {"fromBackup": {"pvc": {"claimName": "b"}, "key": "ns/kv/x.snap"}}});
    let steps = converge(&mut World::empty(), &from_volume, None);
    assert_eq!(steps, ["restore kv-0"]);
}

#[test]
fn promotion_waits_for_the_stabilization_time() {
    let mut world = World::running(1, 0);
    world.set_statefulset(2);
    let spec = json!({"replicas": 2});
    let mut previous = KvClusterStatus::default();
    let mut promoted_at = None;
    for _ in 0..20 {
        let plan = run_plan(&world, &spec, &previous);
        if let Some(step) = &plan.step {
            if matches!(step, Step::Promote { .. }) {
                promoted_at = Some(world.now);
                break;
            }
            world.execute(step);
        }
        previous = plan.status;
        world.now += TICK_SECONDS;
    }
    // Added at t=0, first seen caught up at t=2, promoted 10s later.
    assert_eq!(promoted_at, Some(2 + 10));
}

#[test]
fn scale_one_to_three_and_back_to_one() {
    let mut world = World::running(1, 0);
    let up = converge(&mut world, &json!({"replicas": 3}), None);
    assert_eq!(
        up,
        [
            "add kv-1#101",
            "promote kv-1",
            "add kv-2#102",
            "promote kv-2"
        ]
    );

    // Put the leader on the highest ordinal, the case etcd-operator got wrong.
    let raft = world.raft.as_mut().expect("raft");
    raft.leader = id(2, 1);
    let spec = json!({"replicas": 1, "pvcRetentionPolicy": {"whenScaled": "Delete"}});
    let down = converge(&mut world, &spec, None);
    assert_eq!(
        down,
        [
            "transfer kv-2->kv-0",
            "demote kv-2",
            "remove kv-2#102",
            "demote kv-1",
            "remove kv-1#101",
        ]
    );
    assert_eq!(world.voters_by_pod(), ["kv-0"]);
    assert_eq!(world.statefulset, Some(1));
    assert_eq!(
        world.volumes.keys().copied().collect::<Vec<_>>(),
        [0],
        "PVCs of removed pods deleted"
    );
}

#[test]
fn lost_volume_voter_is_replaced_by_its_new_node() {
    let mut world = World::running(3, 0);
    world.lose_volume(2);
    let steps = converge(&mut world, &json!({"replicas": 3}), None);
    assert_eq!(
        steps,
        ["remove-lost kv-2#102", "add kv-2#202", "promote kv-2"]
    );
    assert_eq!(world.voters_by_pod(), ["kv-0", "kv-1", "kv-2"]);
}

#[test]
fn ten_plus_members_scale_down_in_numeric_order() {
    let mut world = World::running(11, 0);
    let status = run_plan(&world, &json!({"replicas": 9}), &KvClusterStatus::default()).status;
    let pods: Vec<_> = status
        .members
        .iter()
        .filter_map(|m| m.pod.as_deref())
        .collect();
    assert_eq!(
        pods[8..],
        ["kv-8", "kv-9", "kv-10"],
        "status lists members numerically"
    );
    let steps = converge(&mut world, &json!({"replicas": 9}), None);
    assert_eq!(
        steps,
        [
            "demote kv-10",
            "remove kv-10#110",
            "demote kv-9",
            "remove kv-9#109"
        ]
    );
    assert_eq!(world.statefulset, Some(9));
}

/// For every round of a scenario, crash the operator right after the step
/// (its status write is lost) and let a fresh operator carry on: it must
/// reach the same end state without breaking any rule on the way.
fn crash_after_every_step(start: World, spec: serde_json::Value) {
    let mut reference = start.clone();
    let clean = converge(&mut reference, &spec, None);
    for crash_round in 0..clean.len() * 8 {
        let mut world = start.clone();
        converge(&mut world, &spec, Some(crash_round));
        assert_eq!(
            world.voters_by_pod(),
            reference.voters_by_pod(),
            "crash at round {crash_round}"
        );
        assert_eq!(
            world.statefulset, reference.statefulset,
            "crash at round {crash_round}"
        );
    }
}

#[test]
fn operator_restart_between_any_two_steps_of_a_bootstrap() {
    crash_after_every_step(World::empty(), json!({"replicas": 3}));
}

#[test]
fn operator_restart_between_any_two_steps_of_a_scale_down() {
    crash_after_every_step(World::running(3, 2), json!({"replicas": 1}));
}

#[test]
fn operator_restart_between_any_two_steps_of_a_volume_recovery() {
    crash_after_every_step(
        with(World::running(3, 1), |w| w.lose_volume(1)),
        json!({"replicas": 3}),
    );
}

/// Changing spec.storage after the StatefulSet exists: the StatefulSet
/// keeps its volume template (so the apply still succeeds for everything
/// else), Degraded says why, and one warning event is published.
#[test]
fn storage_change_is_reported_and_not_applied() {
    let world = World::running(3, 0);
    let kvc = fixtures::kvc(json!({
        "replicas": 3,
        "image": "raftkv/kvnode:0.2.0",
        "storage": {"size": "5Gi", "storageClassName": "fast"}
    }));
    let owner = Owner::of(&kvc).expect("identity");
    let mut observed = world.observe();
    observed.statefulset_storage = Some(StorageSpec {
        size: Quantity("1Gi".into()),
        storage_class_name: None,
    });
    let input = |previous, observed| PlanInput {
        recovery_request: None,
        owner: &owner,
        spec: &kvc.spec,
        generation: Some(2),
        previous,
        observed,
        pdb: PdbSupport::V1,
        now: at(0),
    };
    let none = KvClusterStatus::default();
    let first = plan(&input(&none, &observed), &config());
    let sts = first
        .objects
        .as_ref()
        .and_then(|o| o.statefulset.as_ref())
        .expect("statefulset");
    let sts_spec = sts.spec.as_ref().expect("spec");
    let claim = sts_spec.volume_claim_templates.as_ref().expect("claims")[0]
        .spec
        .as_ref()
        .expect("claim spec");
    let size = claim
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    assert_eq!(size, Some(&Quantity("1Gi".into())));
    assert_eq!(claim.storage_class_name, None);
    let image = sts_spec
        .template
        .spec
        .as_ref()
        .expect("pod spec")
        .containers[0]
        .image
        .clone();
    assert_eq!(
        image.as_deref(),
        Some("raftkv/kvnode:0.2.0"),
        "other changes still apply"
    );
    assert_eq!(
        condition_reason(&first.status, "Degraded"),
        "True/StorageChangeNotApplied"
    );
    let degraded = first
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded");
    assert!(
        degraded.message.contains("size 1Gi -> 5Gi")
            && degraded
                .message
                .contains("storageClassName (default) -> fast"),
        "{}",
        degraded.message
    );
    assert_eq!(
        first.notices.iter().map(|n| n.reason).collect::<Vec<_>>(),
        [Reason::StorageChangeNotApplied]
    );
    assert_eq!(first.status.phase, Some(Phase::Running));
    let second = plan(&input(&first.status, &observed), &config());
    assert!(second.notices.is_empty(), "one event per episode");

    // The same size written differently is no change.
    let kvc_same = fixtures::kvc(json!({"replicas": 3, "storage": {"size": "1024Mi"}}));
    let same = plan(
        &PlanInput {
            recovery_request: None,
            spec: &kvc_same.spec,
            ..input(&none, &observed)
        },
        &config(),
    );
    assert_eq!(condition_reason(&same.status, "Degraded"), "False/Healthy");
}

#[test]
fn quantities_compare_by_value() {
    assert!(same_quantity("1Gi", "1024Mi"));
    assert!(same_quantity("1G", "1000M"));
    assert!(same_quantity("1.5Gi", "1536Mi"));
    assert!(!same_quantity("1Gi", "1G"));
    assert!(!same_quantity("1Gi", "2Gi"));
    assert!(same_quantity("odd", "odd"));
    assert!(!same_quantity("odd", "1Gi"));
}
