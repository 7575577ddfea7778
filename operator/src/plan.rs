//! PURE decisions: (spec, observed state, last status) -> the objects to
//! apply, the StatefulSet size, at most one membership step, PVCs to delete
//! and the new status. No client, no clock: `now` is an input, so every
//! rule here is covered by table-driven tests.
//!
//! Everything the planner needs to remember between reconciles lives in the
//! KvCluster status (cluster id, learners' caught-up-since), so an operator
//! that restarts between two steps decides the same next step.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

pub mod auth;
pub mod certs;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kvclient::{AddLearnerRequest, ClusterStatus, NodeId, Role};

use crate::auth::Password;
use crate::build::{self, OperatorPeer, Owner, StatefulSetParams, TlsMode};
use crate::crd::{
    KvClusterSpec, KvClusterStatus, MAX_REPLICAS, MemberRole, MemberStatus, Phase, RetentionPolicy,
    TlsIssuer,
};
use crate::names::{self, quorum};
use crate::observe::{Observed, ObservedPod, PdbSupport};
use certs::{CertInput, CertPlan};

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
}

pub struct PlanInput<'a> {
    pub owner: &'a Owner,
    pub spec: &'a KvClusterSpec,
    pub generation: Option<i64>,
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
    pub statefulset: StatefulSet,
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

/// One membership change. Each is idempotent on the node side, and the
/// planner re-derives it from observed state, so executing it twice (an
/// operator crash after the call, before the status write) is harmless.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Make pod 0's node a one-node cluster.
    Initialize { pod: String, endpoint: String },
    AddLearner {
        leader: String,
        pod: String,
        request: AddLearnerRequest,
    },
    Promote {
        leader: String,
        pod: String,
        id: NodeId,
        voters: Vec<NodeId>,
    },
    TransferLeadership {
        leader: String,
        from_pod: String,
        to_pod: String,
        to: NodeId,
    },
    /// Drop a voter from the voter set (scale-down).
    Demote {
        leader: String,
        pod: String,
        id: NodeId,
        voters: Vec<NodeId>,
    },
    Remove {
        leader: String,
        pod: String,
        id: NodeId,
        why: Removal,
    },
    /// Make the user root (role root) with root's password and turn auth
    /// on (`spec.auth`). Not a membership change, but the same kind of
    /// idempotent call through the leader.
    EnableAuth {
        leader: String,
        pod: String,
        password: Password,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    ScaleDown,
    /// The pod came back with a new node id: its volume was lost.
    LostVolume,
}

impl Step {
    /// The pod whose member the step changes (the leader's pod for a
    /// leadership transfer away from it).
    pub fn pod(&self) -> &str {
        match self {
            Step::Initialize { pod, .. }
            | Step::AddLearner { pod, .. }
            | Step::Promote { pod, .. }
            | Step::Demote { pod, .. }
            | Step::Remove { pod, .. }
            | Step::EnableAuth { pod, .. } => pod,
            Step::TransferLeadership { from_pod, .. } => from_pod,
        }
    }

    /// Event reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Step::Initialize { .. } => "InitializeCluster",
            Step::AddLearner { .. } => "AddLearner",
            Step::Promote { .. } => "PromoteVoter",
            Step::TransferLeadership { .. } => "TransferLeadership",
            Step::Demote { .. } => "DemoteVoter",
            Step::EnableAuth { .. } => "EnableAuth",
            Step::Remove {
                why: Removal::ScaleDown,
                ..
            } => "RemoveMember",
            Step::Remove {
                why: Removal::LostVolume,
                ..
            } => "RemoveLostMember",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Initialize { pod, .. } => write!(f, "initialize the cluster on {pod}"),
            Step::AddLearner { pod, request, .. } => {
                write!(f, "add {pod} (id {}) as learner", request.id)
            }
            Step::Promote { pod, id, .. } => write!(f, "promote {pod} (id {id}) to voter"),
            Step::TransferLeadership {
                from_pod,
                to_pod,
                to,
                ..
            } => write!(
                f,
                "transfer leadership from {from_pod} to {to_pod} (id {to})"
            ),
            Step::Demote { pod, id, .. } => write!(f, "remove {pod} (id {id}) from the voters"),
            Step::EnableAuth { pod, .. } => {
                write!(f, "create the user root and turn auth on via {pod}")
            }
            Step::Remove {
                pod,
                id,
                why: Removal::ScaleDown,
                ..
            } => write!(f, "remove {pod} (id {id}) from the cluster"),
            Step::Remove {
                pod,
                id,
                why: Removal::LostVolume,
                ..
            } => write!(
                f,
                "remove stale id {id} of {pod}: the pod came back with a new id (volume lost)"
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The raft cluster as the nodes report it.
struct View<'a> {
    leader: Option<(&'a ObservedPod, &'a ClusterStatus)>,
    cluster_id: Option<&'a str>,
    joint: bool,
    /// Sorted by ordinal (numerically), members without one last.
    members: Vec<MemberView<'a>>,
    any_serving: bool,
    all_serving: bool,
}

struct MemberView<'a> {
    id: NodeId,
    name: &'a str,
    /// From the member's name: the pod it was added for.
    ordinal: Option<u32>,
    voter: bool,
    /// The pod whose node reports this id.
    pod: Option<&'a ObservedPod>,
    healthy: bool,
    lag: Option<u64>,
}

impl<'a> View<'a> {
    /// `known_cluster` is the cluster id recorded in status: once known,
    /// nodes of any other cluster (a volume from elsewhere) are ignored,
    /// however high their term.
    fn new(cluster: &str, observed: &'a Observed, known_cluster: Option<&str>) -> View<'a> {
        let serving: Vec<(&ObservedPod, &ClusterStatus)> = observed
            .pods
            .iter()
            .filter_map(|p| Some((p, p.status()?)))
            .collect();
        let initialized = serving.iter().filter(|(_, s)| {
            s.cluster_id.is_some()
                && known_cluster.is_none_or(|c| s.cluster_id.as_deref() == Some(c))
        });
        // Two nodes may both still claim leadership after a partition; the
        // higher term is the real one.
        let leader = initialized
            .clone()
            .filter(|(_, s)| s.role == Role::Leader)
            .max_by_key(|(_, s)| s.term)
            .copied();
        let source = leader.or_else(|| initialized.max_by_key(|(_, s)| s.term).copied());
        let cluster_id = source.and_then(|(_, s)| s.cluster_id.as_deref());
        let mut members = Vec::new();
        if let Some((_, status)) = source {
            let voters = status.membership.voters.iter().map(|m| (m, true));
            let learners = status.membership.learners.iter().map(|m| (m, false));
            for (member, voter) in voters.chain(learners) {
                let pod = serving
                    .iter()
                    .find(|(_, s)| s.id == member.id && s.cluster_id.as_deref() == cluster_id)
                    .map(|(p, _)| *p);
                let healthy = pod.zip(pod.and_then(|p| p.status())).is_some_and(|(p, s)| {
                    !p.terminating && !matches!(s.role, Role::Uninitialized | Role::Shutdown)
                });
                let lag = leader.and_then(|(_, l)| {
                    if l.id == member.id {
                        Some(0)
                    } else {
                        l.followers
                            .iter()
                            .flatten()
                            .find(|f| f.id == member.id)
                            .map(|f| f.lag)
                    }
                });
                members.push(MemberView {
                    id: member.id,
                    name: &member.info.name,
                    ordinal: names::pod_ordinal(cluster, &member.info.name),
                    voter,
                    pod,
                    healthy,
                    lag,
                });
            }
        }
        members.sort_by_key(|m| (m.ordinal.unwrap_or(u32::MAX), m.id));
        View {
            leader,
            cluster_id,
            joint: source.is_some_and(|(_, s)| s.membership.joint),
            members,
            any_serving: !serving.is_empty(),
            all_serving: serving.len() == observed.pods.len(),
        }
    }

    fn contains(&self, id: NodeId) -> bool {
        self.members.iter().any(|m| m.id == id)
    }

    fn voters(&self) -> impl Iterator<Item = &MemberView<'a>> {
        self.members.iter().filter(|m| m.voter)
    }

    fn voter_ids(&self) -> Vec<NodeId> {
        self.voters().map(|m| m.id).collect()
    }

    fn healthy_voters(&self) -> usize {
        self.voters().filter(|m| m.healthy).count()
    }

    fn has_quorum(&self) -> bool {
        self.healthy_voters() >= quorum(self.voters().count())
    }

    /// The voter set without `id` still has a healthy quorum of its own.
    /// The change itself commits in the joint configuration, which also
    /// needs the current quorum: checked before any step by `has_quorum`.
    fn can_drop_voter(&self, id: NodeId) -> bool {
        let remaining: Vec<_> = self.voters().filter(|m| m.id != id).collect();
        !remaining.is_empty()
            && remaining.iter().filter(|m| m.healthy).count() >= quorum(remaining.len())
    }

    /// The pod with `ordinal` runs one of the voters.
    fn pod_is_voter(&self, ordinal: u32) -> bool {
        self.voters()
            .any(|m| m.pod.is_some_and(|p| p.ordinal == ordinal))
    }
}

/// What to do this round, before it is turned into status.
#[derive(Default)]
struct Decision {
    step: Option<Step>,
    /// Changes are held: (reason, message) for the Degraded condition.
    hold: Option<(&'static str, String)>,
    /// Nothing to do but wait: (reason, message) for Progressing.
    waiting: Option<(&'static str, String)>,
    /// Problems that do not stop other changes.
    trouble: Option<(&'static str, String)>,
    requeue: Option<Duration>,
}

impl Decision {
    fn hold(reason: &'static str, message: String) -> Decision {
        Decision {
            hold: Some((reason, message)),
            ..Decision::default()
        }
    }

    fn wait(reason: &'static str, message: String) -> Decision {
        Decision {
            waiting: Some((reason, message)),
            ..Decision::default()
        }
    }

    fn step(step: Step) -> Decision {
        Decision {
            step: Some(step),
            ..Decision::default()
        }
    }
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

    let (mut decision, replicas) = if input.spec.paused {
        (Decision::default(), current_replicas(input.observed))
    } else if let Err(message) = validate(input.spec) {
        (
            Decision::hold("InvalidSpec", message),
            current_replicas(input.observed),
        )
    } else if view.cluster_id.is_none() {
        let decision = decide_uninitialized(&view, input);
        let replicas = current_replicas(input.observed).max(1);
        (decision, replicas)
    } else {
        let mut decision = decide_membership(&view, input, config, &caught_up);
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
            statefulset_replicas(&view, input)
        };
        (decision, replicas)
    };

    if !input.spec.paused && tls_trouble.is_some() {
        decision.trouble = tls_trouble;
    }
    let valid = !input.spec.paused && validate(input.spec).is_ok();
    let auth = auth::plan_auth(
        input.spec,
        input.observed,
        tls,
        view.leader.filter(|_| view.cluster_id.is_some()),
    );
    if valid && decision.hold.is_none() {
        // Before any membership step: no member is added to an open cluster.
        if let Some(step) = auth.step.clone() {
            decision.step = Some(step);
        }
        if decision.trouble.is_none() {
            decision.trouble = auth.trouble.clone();
        }
    }

    let delete_pvcs = if input.spec.paused || decision.hold.is_some() {
        Vec::new()
    } else {
        pvcs_to_delete(&view, input)
    };
    let objects = valid.then(|| desired(input, config, replicas, tls));
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
    let notices = notices(input, &decision);
    let mut status = status(input, &view, &decision, &caught_up, replicas);
    status.auth = auth.state;
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
        certificates,
        create_root_secret: valid && auth.create_secret,
        status,
        notices,
        requeue_after,
    }
}

/// The TLS the pods get, and why it is not what the spec asks for. An
/// initialized cluster keeps the mode it runs: its members' advertised
/// URLs carry the scheme, and pods rolling from one CA or scheme to another
/// could not talk to each other half-way.
fn tls_mode(input: &PlanInput, initialized: bool) -> (TlsMode, Option<(&'static str, String)>) {
    let wanted = wanted_tls(input.spec);
    let describe = |mode| match mode {
        TlsMode::Plaintext => "no TLS",
        TlsMode::Operator => "TLS from the operator's CA",
        TlsMode::CertManager => "TLS from cert-manager",
    };
    match input.observed.statefulset_tls {
        Some(running) if initialized && running != wanted => (
            running,
            Some((
                "TlsChangeNotApplied",
                format!(
                    "spec.tls asks for {} but the cluster runs with {}; an initialized cluster \
                     keeps its TLS mode (its members advertise their URLs with the scheme). Set \
                     spec.tls back, or move the data to a new cluster",
                    describe(wanted),
                    describe(running)
                ),
            )),
        ),
        _ if wanted == TlsMode::CertManager && input.observed.tls.cert_manager == Some(false) => (
            wanted,
            Some((
                "CertManagerMissing",
                "spec.tls.issuer is certManager but the server does not serve \
                 cert-manager.io/v1 Certificates: install cert-manager (the pods cannot start \
                 without their certificate Secret) or use issuer operator"
                    .into(),
            )),
        ),
        _ => (wanted, None),
    }
}

/// The TLS mode `spec.tls` asks for.
pub fn wanted_tls(spec: &KvClusterSpec) -> TlsMode {
    match (spec.tls.enabled, spec.tls.issuer) {
        (false, _) => TlsMode::Plaintext,
        (true, TlsIssuer::Operator) => TlsMode::Operator,
        (true, TlsIssuer::CertManager) => TlsMode::CertManager,
    }
}

/// Certificates for every pod that exists, the StatefulSet's size this
/// round and the desired size: the next pod's is in the Secret before the
/// StatefulSet grows to it.
fn certificate_pods(input: &PlanInput, replicas: i32) -> u32 {
    let pods = input
        .observed
        .pods
        .iter()
        .map(|p| p.ordinal.saturating_add(1))
        .max()
        .unwrap_or(0);
    let sizes = [
        replicas,
        input.spec.replicas,
        current_replicas(input.observed),
    ];
    sizes
        .into_iter()
        .map(|n| u32::try_from(n).unwrap_or(0))
        .chain([pods])
        .max()
        .unwrap_or(0)
}

fn offset_time(now: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(now.as_second())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn validate(spec: &KvClusterSpec) -> Result<(), String> {
    if !(1..=MAX_REPLICAS).contains(&spec.replicas) {
        return Err(format!(
            "replicas must be between 1 and {MAX_REPLICAS}, got {}",
            spec.replicas
        ));
    }
    if spec.image.trim().is_empty() {
        return Err("image must not be empty".into());
    }
    if let (Some(heartbeat), Some(election)) = (
        spec.raft.heartbeat_interval_ms,
        spec.raft.election_timeout_ms,
    ) && i64::from(election) <= 2 * i64::from(heartbeat)
    {
        return Err(format!(
            "raft.electionTimeoutMs ({election}) must exceed twice raft.heartbeatIntervalMs ({heartbeat})"
        ));
    }
    let tls = &spec.tls;
    if tls.enabled && tls.issuer == TlsIssuer::CertManager && tls.cert_manager.is_none() {
        return Err("tls.issuer certManager needs tls.certManager.issuerRef".into());
    }
    if spec.auth.enabled && !tls.enabled {
        return Err(
            "auth.enabled needs tls.enabled: the operator is root on the nodes by its client              certificate; set auth.enabled: false for a cluster without TLS"
                .into(),
        );
    }
    Ok(())
}

fn desired_replicas(spec: &KvClusterSpec) -> u32 {
    u32::try_from(spec.replicas.clamp(1, MAX_REPLICAS)).unwrap_or(1)
}

/// Replicas the StatefulSet has now. Without a StatefulSet, enough to keep
/// every pod that still exists: a StatefulSet recreated smaller would adopt
/// the orphaned pods and delete the ones above its size, voters included.
fn current_replicas(observed: &Observed) -> i32 {
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

fn decide_uninitialized(view: &View, input: &PlanInput) -> Decision {
    let pod0 = input.observed.pods.iter().find(|p| p.ordinal == 0);
    if let Some(cluster_id) = &input.previous.cluster_id {
        // Initializing again would silently start an empty cluster under the
        // same name: only a human may decide the data is gone.
        return if view.any_serving && view.all_serving {
            Decision::hold(
                "ClusterLost",
                format!(
                    "cluster {cluster_id} was initialized, but no node reports it (all volumes lost?); \
                     not re-initializing: delete and recreate the KvCluster to start over"
                ),
            )
        } else {
            Decision::wait("WaitingForNodes", "no node reports the cluster yet".into())
        };
    }
    match pod0 {
        Some(pod) if !pod.terminating => match (&pod.node, pod.status()) {
            (crate::observe::NodeView::Serving { endpoint, .. }, Some(_)) => {
                Decision::step(Step::Initialize {
                    pod: pod.name.clone(),
                    endpoint: endpoint.clone(),
                })
            }
            _ => Decision::wait(
                "WaitingForPod",
                format!("waiting for {} to serve", pod.name),
            ),
        },
        _ => Decision::wait(
            "WaitingForPod",
            format!("waiting for {}", names::pod(&input.owner.name, 0)),
        ),
    }
}

fn decide_membership(
    view: &View,
    input: &PlanInput,
    config: &PlanConfig,
    caught_up: &[(NodeId, Timestamp)],
) -> Decision {
    let Some((leader_pod, leader)) = view.leader else {
        return Decision::hold(
            "NoLeader",
            "no reachable node is the raft leader; membership changes are held".into(),
        );
    };
    let via = leader_pod.endpoint().unwrap_or_default().to_owned();
    if view.joint {
        return Decision::wait(
            "MembershipChangeInProgress",
            "a joint configuration is being committed".into(),
        );
    }
    if !view.has_quorum() {
        return Decision::hold(
            "QuorumUnhealthy",
            format!(
                "{} of {} voters healthy, {} needed; membership changes are held",
                view.healthy_voters(),
                view.voters().count(),
                quorum(view.voters().count())
            ),
        );
    }
    let n = desired_replicas(input.spec);

    // 1. Lost volumes: a member whose pod now reports another id.
    for member in view.members.iter().filter(|m| m.pod.is_none()) {
        let Some(ordinal) = member.ordinal else {
            continue;
        };
        let replacement = input.observed.pods.iter().find(|p| {
            p.ordinal == ordinal && !p.terminating && p.status().is_some_and(|s| s.id != member.id)
        });
        if replacement.is_none() {
            continue;
        }
        if member.voter && !view.can_drop_voter(member.id) {
            return Decision::hold(
                "WouldLoseQuorum",
                format!(
                    "removing the stale voter {} of {} would leave fewer healthy voters than a quorum",
                    member.id, member.name
                ),
            );
        }
        return Decision::step(Step::Remove {
            leader: via,
            pod: member.name.to_owned(),
            id: member.id,
            why: Removal::LostVolume,
        });
    }

    // 2. Scale-down: the highest ordinal at or above the desired size first.
    if let Some(member) = view
        .members
        .iter()
        .filter(|m| m.ordinal.is_some_and(|o| o >= n))
        .max_by_key(|m| m.ordinal)
    {
        if member.id == leader.id {
            // Removing the leader itself would leave the cluster without
            // one until an election; hand leadership to a voter that stays.
            let target = view
                .voters()
                .filter(|m| m.healthy && m.ordinal.is_some_and(|o| o < n))
                .min_by_key(|m| (m.lag.unwrap_or(u64::MAX), m.ordinal));
            return match target {
                Some(target) => Decision::step(Step::TransferLeadership {
                    leader: via,
                    from_pod: member.name.to_owned(),
                    to_pod: target.name.to_owned(),
                    to: target.id,
                }),
                None => Decision::hold(
                    "NoTransferTarget",
                    format!(
                        "{} leads and no healthy voter that stays can take over",
                        member.name
                    ),
                ),
            };
        }
        if member.voter {
            if !view.can_drop_voter(member.id) {
                return Decision::hold(
                    "WouldLoseQuorum",
                    format!(
                        "removing voter {} would leave fewer healthy voters than a quorum",
                        member.name
                    ),
                );
            }
            let voters = view
                .voter_ids()
                .into_iter()
                .filter(|id| *id != member.id)
                .collect();
            return Decision::step(Step::Demote {
                leader: via,
                pod: member.name.to_owned(),
                id: member.id,
                voters,
            });
        }
        return Decision::step(Step::Remove {
            leader: via,
            pod: member.name.to_owned(),
            id: member.id,
            why: Removal::ScaleDown,
        });
    }

    // 3. Add serving pods that are not members yet, lowest ordinal first.
    for pod in input
        .observed
        .pods
        .iter()
        .filter(|p| p.ordinal < n && !p.terminating)
    {
        let Some(status) = pod.status() else {
            continue;
        };
        if view.contains(status.id) {
            continue;
        }
        if status.cluster_id.is_some() && status.cluster_id.as_deref() != view.cluster_id {
            // Reported as trouble; adding it would mix two clusters.
            continue;
        }
        return Decision::step(Step::AddLearner {
            leader: via,
            pod: pod.name.clone(),
            request: AddLearnerRequest {
                id: status.id,
                name: pod.name.clone(),
                peer_url: status.peer_url.clone(),
                client_url: status.client_url.clone(),
            },
        });
    }

    // 4. Promote learners that stayed caught up for the stabilization time.
    let mut wait: Option<(Duration, &MemberView)> = None;
    for learner in view
        .members
        .iter()
        .filter(|m| !m.voter && m.ordinal.is_some_and(|o| o < n))
    {
        let since = caught_up.iter().find(|(id, _)| *id == learner.id);
        let Some((_, since)) = since else {
            wait = wait.or(Some((ACTIVE_REQUEUE, learner)));
            continue;
        };
        let waited = millis(input.now.duration_since(*since).as_millis());
        let needed = millis(config.stabilization.as_millis());
        if waited >= needed {
            let mut voters = view.voter_ids();
            voters.push(learner.id);
            return Decision::step(Step::Promote {
                leader: via,
                pod: learner.name.to_owned(),
                id: learner.id,
                voters,
            });
        }
        let remaining = Duration::from_millis(needed.saturating_sub(waited));
        if wait.is_none_or(|(d, _)| remaining < d) {
            wait = Some((remaining, learner));
        }
    }
    if let Some((remaining, learner)) = wait {
        let mut decision = Decision::wait(
            "WaitingForCatchUp",
            format!(
                "learner {} must stay caught up (lag <= {}) for {:?} before promotion",
                learner.name, config.max_lag, config.stabilization
            ),
        );
        decision.requeue = Some(remaining.clamp(Duration::from_millis(100), ACTIVE_REQUEUE));
        return decision;
    }
    Decision::default()
}

fn millis(ms: impl TryInto<u64>) -> u64 {
    ms.try_into().unwrap_or(0)
}

/// Problems worth a Degraded condition that do not block other changes.
fn trouble(view: &View, input: &PlanInput) -> Option<(&'static str, String)> {
    let foreign: Vec<&str> = input
        .observed
        .pods
        .iter()
        .filter(|p| {
            p.status().is_some_and(|s| {
                s.cluster_id.is_some() && s.cluster_id.as_deref() != view.cluster_id
            })
        })
        .map(|p| p.name.as_str())
        .collect();
    if !foreign.is_empty() {
        return Some((
            "ForeignNode",
            format!(
                "{} hold data of another raft cluster; they are not added (check their volumes)",
                foreign.join(", ")
            ),
        ));
    }
    let unhealthy: Vec<&str> = view
        .members
        .iter()
        .filter(|m| !m.healthy)
        .map(|m| m.name)
        .collect();
    if !unhealthy.is_empty() {
        return Some((
            "MembersUnhealthy",
            format!("unhealthy members: {}", unhealthy.join(", ")),
        ));
    }
    storage_change(input).map(|m| ("StorageChangeNotApplied", m))
}

/// Why `spec.storage` differs from the volumes the StatefulSet creates, if
/// it does. A StatefulSet's volume claim templates are immutable, so the
/// change is reported and not applied.
fn storage_change(input: &PlanInput) -> Option<String> {
    let kept = input.observed.statefulset_storage.as_ref()?;
    let want = &input.spec.storage;
    let mut changes = Vec::new();
    if !same_quantity(&kept.size.0, &want.size.0) {
        changes.push(format!("size {} -> {}", kept.size.0, want.size.0));
    }
    if kept.storage_class_name != want.storage_class_name {
        let class = |c: &Option<String>| c.clone().unwrap_or_else(|| "(default)".into());
        changes.push(format!(
            "storageClassName {} -> {}",
            class(&kept.storage_class_name),
            class(&want.storage_class_name)
        ));
    }
    (!changes.is_empty()).then(|| {
        format!(
            "spec.storage changed ({}) but a StatefulSet's volume templates cannot change: \
             existing and new volumes keep the old values. Expand the PVCs yourself if the \
             storage class allows it, or set spec.storage back",
            changes.join(", ")
        )
    })
}

/// Quantities compare by value: `1Gi` and `1024Mi` are the same size.
fn same_quantity(a: &str, b: &str) -> bool {
    match (quantity_value(a), quantity_value(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()),
        _ => a.trim() == b.trim(),
    }
}

fn quantity_value(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// The StatefulSet grows by one pod once every existing pod is a voter,
/// and shrinks only past pods that are no longer members. A member below
/// the desired size always gets its pod back (someone scaled the
/// StatefulSet down by hand).
fn statefulset_replicas(view: &View, input: &PlanInput) -> i32 {
    let n = i32::try_from(desired_replicas(input.spec)).unwrap_or(1);
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
fn pods_for_members(view: &View) -> i32 {
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
fn pvcs_to_delete(view: &View, input: &PlanInput) -> Vec<String> {
    if input.spec.pvc_retention_policy.when_scaled != RetentionPolicy::Delete {
        return Vec::new();
    }
    let keep_below = desired_replicas(input.spec)
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

fn desired(input: &PlanInput, config: &PlanConfig, replicas: i32, tls: TlsMode) -> Desired {
    let owner = input.owner;
    // The StatefulSet keeps the volume template it was created with, or the
    // API server would refuse the whole apply, image and resources included.
    let spec = match &input.observed.statefulset_storage {
        Some(kept) if storage_change(input).is_some() => &KvClusterSpec {
            storage: kept.clone(),
            ..input.spec.clone()
        },
        _ => input.spec,
    };
    Desired {
        statefulset: build::statefulset(
            owner,
            spec,
            &StatefulSetParams {
                replicas,
                cluster_domain: &config.cluster_domain,
                tls,
            },
        ),
        peer_service: build::peer_service(owner),
        client_service: build::client_service(owner),
        pdb: (input.pdb != PdbSupport::None)
            .then(|| build::pod_disruption_budget(owner, input.spec.replicas)),
        network_policy: input.spec.network_policy.enabled.then(|| {
            build::network_policy(owner, &input.spec.network_policy, &config.operator_peer)
        }),
        certificates: match (&input.spec.tls.cert_manager, tls) {
            // Absent cert-manager: applying would only fail; the
            // CertManagerMissing condition says what to do.
            (Some(cm), TlsMode::CertManager) if input.observed.tls.cert_manager != Some(false) => {
                vec![
                    build::node_certificate(owner, &cm.issuer_ref, &config.cluster_domain),
                    build::client_certificate(owner, &cm.issuer_ref),
                ]
            }
            _ => Vec::new(),
        },
        tls,
    }
}

/// Learners that are healthy and within the lag threshold, with the time
/// they first were (carried over from the previous status).
fn caught_up_since(
    view: &View,
    input: &PlanInput,
    config: &PlanConfig,
) -> Vec<(NodeId, Timestamp)> {
    view.members
        .iter()
        .filter(|m| !m.voter && m.healthy && m.lag.is_some_and(|lag| lag <= config.max_lag))
        .map(|m| {
            let id = m.id.to_string();
            let since = input
                .previous
                .members
                .iter()
                .find(|p| p.id == id)
                .and_then(|p| p.caught_up_since.as_ref())
                .map_or(input.now, |t| t.0);
            (m.id, since)
        })
        .collect()
}

fn notices(input: &PlanInput, decision: &Decision) -> Vec<Notice> {
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
                reason,
                message: message.clone(),
            });
        }
    }
    let new_generation = input.previous.observed_generation != input.generation;
    if input.pdb == PdbSupport::None && new_generation && !input.spec.paused {
        notices.push(Notice {
            warning: true,
            reason: "PodDisruptionBudgetUnsupported",
            message: "the server has no policy/v1 or policy/v1beta1 PodDisruptionBudget; \
                      voluntary disruptions are not limited to keep a quorum"
                .into(),
        });
    }
    notices
}

fn status(
    input: &PlanInput,
    view: &View,
    decision: &Decision,
    caught_up: &[(NodeId, Timestamp)],
    replicas: i32,
) -> KvClusterStatus {
    let cluster = input.owner.name.as_str();
    let n = desired_replicas(input.spec);
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
    let converged = view.cluster_id.is_some()
        && decision.step.is_none()
        && decision.waiting.is_none()
        && replicas == input.spec.replicas
        && current_replicas(input.observed) == input.spec.replicas
        && view.members.len() == voters
        && voters == usize::try_from(n).unwrap_or(0)
        && (0..n).all(|o| view.pod_is_voter(o));

    let phase = if input.spec.paused {
        Phase::Paused
    } else if decision.hold.is_some() {
        Phase::Degraded
    } else if view.cluster_id.is_none() {
        Phase::Pending
    } else if converged {
        Phase::Running
    } else {
        Phase::Scaling
    };

    let available_cond = if available {
        (
            "True",
            "QuorumAvailable",
            format!("leader {}", leader_name(view)),
        )
    } else if view.cluster_id.is_none() {
        (
            "False",
            "NotInitialized",
            "the raft cluster is not initialized yet".into(),
        )
    } else if view.leader.is_none() {
        (
            "False",
            "NoLeader",
            "no reachable node is the raft leader".into(),
        )
    } else {
        (
            "False",
            "QuorumUnhealthy",
            "fewer healthy voters than a quorum".into(),
        )
    };
    let progressing_cond = if input.spec.paused {
        (
            "False",
            "Paused",
            "spec.paused is set: no changes are made".to_owned(),
        )
    } else if let Some(step) = &decision.step {
        ("True", step.reason(), step.to_string())
    } else if let Some((reason, message)) = &decision.waiting {
        ("True", *reason, message.clone())
    } else if decision.hold.is_some() {
        ("False", "Held", "changes are held, see Degraded".into())
    } else if converged {
        ("False", "Converged", format!("{n} healthy voters"))
    } else {
        (
            "True",
            "Scaling",
            format!("StatefulSet at {replicas} of {} pods", input.spec.replicas),
        )
    };
    let degraded_cond = match decision.hold.as_ref().or(decision.trouble.as_ref()) {
        Some((reason, message)) => ("True", *reason, message.clone()),
        None => ("False", "Healthy", "all members are healthy".into()),
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
        conditions,
        observed_generation: input.generation,
    }
}

fn leader_name(view: &View) -> String {
    view.leader.map(|(p, _)| p.name.clone()).unwrap_or_default()
}

/// A condition whose transition time moves only when its status changes.
fn condition(
    input: &PlanInput,
    type_: &str,
    status: &str,
    reason: &str,
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
        reason: reason.into(),
        message,
        observed_generation: input.generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tls_tests;
