//! The running node: storage, identity and the raft instance, plus the
//! operations the HTTP layer exposes (writes, read barriers, membership).
//! Nothing here knows about HTTP: an operation that does not run here says
//! why with a `Reject` (a `NodeError`, or "this must run on the leader"),
//! and `api::error` maps each `NodeError` to its wire code, once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvapi::{
    ClusterStatus, FollowerProgress, InitRequest, Member, Membership as WireMembership,
    MembershipResponse, Role,
};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::{ChangeMembers, ReadPolicy, ServerState};

use crate::config::Config;
use crate::lease::clock::LeaseClock;
use crate::metrics::{NodeInstruments, PeerInstruments};
use crate::raft::identity::{Identity, new_cluster_id};
use crate::raft::network::{Network, ProposeError, ProposeReply};
use crate::raft::proposer::Proposer;
use crate::raft::types::{Command, CommandResult, MemberInfo, NodeId, Raft, TypeConfig};
use crate::store::{self, Db};

/// Why a node operation failed, in the node's terms.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request itself is wrong (an id, a URL, an empty voter set).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The cluster's state does not allow it (already initialized
    /// differently, a member with other URLs, a membership change refused).
    #[error("{0}")]
    Conflict(String),
    #[error("cluster not initialized: POST /v1/cluster/init (kvctl init) first")]
    NotInitialized,
    /// The node already has (or had) a cluster: a restore would overwrite it.
    #[error("{0}")]
    AlreadyInitialized(String),
    #[error("no leader")]
    NoLeader,
    /// Try again, maybe at `leader`.
    #[error("{message}")]
    Unavailable {
        message: String,
        leader: Option<Member>,
    },
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Storage(#[from] store::StoreError),
}

impl NodeError {
    fn unavailable(message: impl Into<String>) -> NodeError {
        NodeError::Unavailable {
            message: message.into(),
            leader: None,
        }
    }
}

/// Why an operation did not run here.
#[derive(Debug)]
pub enum Reject {
    /// Only the leader can do this; `None` when no leader is known.
    Forward(Option<Member>),
    Failed(NodeError),
}

impl From<NodeError> for Reject {
    fn from(e: NodeError) -> Self {
        Reject::Failed(e)
    }
}

impl From<store::StoreError> for Reject {
    fn from(e: store::StoreError) -> Self {
        Reject::Failed(e.into())
    }
}

pub type Outcome<T> = Result<T, Reject>;

/// A restore in progress (see `Node::begin_restore`).
#[derive(Debug)]
pub struct RestoreGuard {
    _gate: tokio::sync::OwnedRwLockWriteGuard<()>,
}

pub struct Node {
    pub raft: Raft,
    network: Network,
    /// Batches the writes this node forwards while it follows.
    proposer: Proposer,
    pub db: Db,
    pub identity: Arc<Identity>,
    pub config: Config,
    pub info: MemberInfo,
    /// The commit index this node knew when it started: it is not ready
    /// before it has applied at least that far.
    startup_commit: Option<u64>,
    draining: tokio_util::sync::CancellationToken,
    /// Cancelled when the node must exit to finish something at its next
    /// start (force-new-cluster): the server shuts down as on SIGTERM.
    exit_requested: tokio_util::sync::CancellationToken,
    /// Held for reading by `init`, for writing by a restore (`begin_restore`)
    /// from its first byte until the node exits: neither runs while the
    /// other does, and two restores never interleave.
    restore_gate: Arc<tokio::sync::RwLock<()>>,
    /// The gate of a restore that succeeded, kept until the process exits.
    restore_done: std::sync::Mutex<Option<RestoreGuard>>,
    /// Lease deadlines, kept while this node leads (see `lease::clock`).
    pub lease_clock: LeaseClock,
    pub instruments: NodeInstruments,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("storage: {0}")]
    Store(#[from] store::StoreError),
    #[error("identity: {0}")]
    Identity(#[from] crate::raft::identity::IdentityError),
    #[error("raft config: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("peer TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(
        "data dir {0} holds an interrupted `kvnode restore`: run the restore again (it starts \
         over) or give another --data-dir"
    )]
    RestoreIncomplete(std::path::PathBuf),
}

impl Node {
    /// `peer_tls`: the peer certificate material when the peer port runs
    /// mutual TLS; outgoing raft RPCs then present it and verify peers.
    pub async fn start(
        config: Config,
        peer_tls: Option<Arc<crate::tls::Material>>,
    ) -> Result<Arc<Node>, StartError> {
        config.validate()?;
        if config
            .data_dir
            .join(crate::offline::RESTORE_MARKER)
            .exists()
        {
            return Err(StartError::RestoreIncomplete(config.data_dir.clone()));
        }
        let budget = store::MemoryBudget {
            block_cache_bytes: config.rocksdb_block_cache_mb << 20,
            memtable_bytes: config.rocksdb_memtable_mb << 20,
        };
        let (db, mut log, sm) = store::open(&config.data_dir, budget).await?;
        let bind_ip = Some(config.peer_addr.ip()).filter(|ip| !ip.is_unspecified());
        let identity = Arc::new(Identity::load(db.clone(), config.id, bind_ip)?);
        let startup_commit = {
            use openraft::storage::RaftLogStorage;
            log.read_committed()
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?
                .map(|l| l.index)
        };
        let (election_timeout_min, election_timeout_max) =
            election_timeouts(config.election_timeout_ms);
        let raft_config = openraft::Config {
            cluster_name: "raftkv".into(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min,
            election_timeout_max,
            // A node that cannot win (partitioned, restarted, behind) asks
            // first instead of bumping the term and unseating a live leader.
            enable_pre_vote: Some(true),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_log_threshold),
            // Keep some log behind a snapshot so that a briefly lagging
            // follower catches up from the log, not with a full snapshot.
            max_in_snapshot_log_to_keep: config.snapshot_log_threshold.min(1000),
            max_payload_entries: 128,
            // Replicate as soon as entries are written, while the local
            // fsync is still running (see store/log.rs).
            broadcast_submitted_on_append: Some(true),
            ..Default::default()
        }
        .validate()?;
        let network = Network::new(
            identity.clone(),
            peer_tls.as_ref(),
            std::time::Duration::from_millis(config.header_timeout_ms / 2),
            std::time::Duration::from_millis(config.election_timeout_ms),
        )?;
        let raft = Raft::new(
            identity.node_id,
            Arc::new(raft_config),
            network.clone(),
            log,
            sm,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let info = MemberInfo {
            name: config.name(),
            peer_url: config.peer_url(),
            client_url: config.client_url(),
        };
        tracing::info!(
            node_id = identity.node_id,
            name = %info.name,
            peer_url = %info.peer_url,
            client_url = %info.client_url,
            cluster_id = ?identity.cluster_id(),
            "node started"
        );
        let instruments = NodeInstruments::default();
        tokio::spawn(crate::metrics::count_leader_changes(
            raft.server_metrics(),
            instruments.leader_changes.clone(),
        ));
        let proposer = Proposer::start(
            network.clone(),
            Duration::from_millis(config.header_timeout_ms / 2),
        );
        Ok(Arc::new(Node {
            raft,
            proposer,
            network,
            db,
            identity,
            config,
            info,
            startup_commit,
            draining: tokio_util::sync::CancellationToken::new(),
            exit_requested: tokio_util::sync::CancellationToken::new(),
            restore_gate: Arc::default(),
            restore_done: std::sync::Mutex::default(),
            lease_clock: LeaseClock::default(),
            instruments,
        }))
    }

    /// The peer RPC series this node's network records.
    pub fn peer_instruments(&self) -> &PeerInstruments {
        self.network.instruments()
    }

    pub fn id(&self) -> NodeId {
        self.identity.node_id
    }

    fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// Reads the current metrics in place: the per-request checks use this
    /// instead of cloning the whole `RaftMetrics` (membership, replication
    /// map) several times for every request. `f` must not block.
    fn with_metrics<T>(&self, f: impl FnOnce(&openraft::RaftMetrics<TypeConfig>) -> T) -> T {
        f(&self.raft.metrics().borrow_watched())
    }

    pub fn is_leader(&self) -> bool {
        self.with_metrics(|m| m.current_leader == Some(self.id()))
    }

    /// The leader as a member, if this node knows one.
    pub fn leader(&self) -> Option<Member> {
        self.with_metrics(|m| {
            let id = m.current_leader?;
            let info = m.membership_config.membership().get_node(&id)?.clone();
            Some(Member {
                id,
                info: info.into(),
            })
        })
    }

    /// The term, while this node is the leader.
    pub fn leading_term(&self) -> Option<u64> {
        self.with_metrics(|m| {
            (m.current_leader == Some(self.id()) && m.state == ServerState::Leader)
                .then_some(m.current_term)
        })
    }

    pub fn draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    pub fn set_draining(&self) {
        self.draining.cancel();
    }

    /// Resolves when the node has asked to be stopped (see `force_new_cluster`).
    pub fn exit_requested(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.exit_requested.cancelled()
    }

    /// Disaster recovery from a running node (Kubernetes cannot run the
    /// offline tool in a pod whose node holds the data dir): checks that
    /// `cluster_id` is this node's and that no quorum answers, leaves the
    /// marker `offline::pending_force_new_cluster` acts on at the next
    /// start, and asks the server to exit (its supervisor restarts it).
    pub async fn force_new_cluster(&self, cluster_id: &str) -> Result<String, NodeError> {
        let mine = self.identity.cluster_id();
        if mine.as_deref() != Some(cluster_id) {
            return Err(NodeError::Conflict(format!(
                "cluster_id {cluster_id:?} is not this node's cluster ({})",
                mine.as_deref().unwrap_or("none yet")
            )));
        }
        // A read index confirmed by a quorum means the cluster works: then
        // this would split it in two.
        let quorum = tokio::time::timeout(
            Duration::from_millis(self.config.election_timeout_ms * 2),
            self.read_barrier(),
        )
        .await;
        if matches!(quorum, Ok(Ok(()))) {
            return Err(NodeError::Conflict(
                "a quorum of the cluster answers (a read index was confirmed): \
                 force-new-cluster is only for a majority lost for good"
                    .into(),
            ));
        }
        let marker = self
            .config
            .data_dir
            .join(crate::offline::FORCE_NEW_CLUSTER_MARKER);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&marker)?;
            std::io::Write::write_all(&mut f, cluster_id.as_bytes())?;
            f.sync_all()
        };
        write().map_err(|e| NodeError::Internal(format!("writing {}: {e}", marker.display())))?;
        tracing::warn!(
            node_id = self.id(),
            cluster_id,
            "force-new-cluster requested: exiting; the recovery runs at the next start"
        );
        self.exit_requested.cancel();
        Ok(format!(
            "node {} exits now; when restarted it is the only voter of cluster {cluster_id}",
            self.id()
        ))
    }

    /// Why this node cannot be restored into, if it cannot: only a node
    /// that was never part of a cluster can (no membership, no cluster id
    /// adopted from a leader that added it, no vote, no log, nothing
    /// applied). The same as what `offline::pending_restore` checks on disk.
    pub fn restore_refusal(&self) -> Option<NodeError> {
        let refused = |why: String| {
            Some(NodeError::AlreadyInitialized(format!(
                "{why}: a restore only makes a node that was never initialized the first member \
                 of a new cluster, and never overwrites one"
            )))
        };
        if self.is_initialized() {
            let voters: Vec<NodeId> = self.status().membership.voter_ids();
            return refused(format!(
                "node {} is already initialized (voters {voters:?})",
                self.id()
            ));
        }
        if let Some(c) = self.identity.cluster_id() {
            return refused(format!(
                "node {} already belongs to cluster {c} (a member added it)",
                self.id()
            ));
        }
        let holds_state = self.with_metrics(|m| {
            m.current_term > 0
                || m.last_log_index.is_some()
                || m.last_applied.is_some()
                || m.snapshot.is_some()
        });
        if holds_state {
            return refused(format!("node {} already holds raft state", self.id()));
        }
        None
    }

    /// Starts a restore: refused (409) on a node that cannot be restored
    /// into, and (503) while an init or another restore runs. The guard
    /// keeps inits and other restores out until it is dropped, or for good
    /// once `finish_restore` has it.
    pub fn begin_restore(&self) -> Result<RestoreGuard, NodeError> {
        if let Some(e) = self.restore_refusal() {
            return Err(e);
        }
        if self.draining() {
            return Err(NodeError::unavailable("the node is shutting down"));
        }
        let guard = self.restore_gate.clone().try_write_owned().map_err(|_| {
            NodeError::unavailable(
                "another restore or an init is running on this node; a second restore is not \
                 interleaved with it",
            )
        })?;
        // Checked again under the gate: an init may have finished meanwhile.
        if let Some(e) = self.restore_refusal() {
            return Err(e);
        }
        Ok(RestoreGuard { _gate: guard })
    }

    /// A restore whose snapshot is in place (`offline::RESTORE_PENDING`):
    /// keeps inits and restores out until the process exits, and asks the
    /// server to exit so that the next start applies it.
    pub fn finish_restore(&self, guard: RestoreGuard) {
        if let Ok(mut done) = self.restore_done.lock() {
            *done = Some(guard);
        }
        self.exit_requested.cancel();
    }

    /// Resolves once shutdown has begun (long-lived streams end then).
    pub fn drained(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.draining.cancelled()
    }

    /// Proposes a command and waits until it is applied: here when this
    /// node leads, otherwise through the leader over the peer connection.
    /// Only when that route cannot be taken (no leader known, the leader
    /// unreachable before anything was sent, leadership just moved) is the
    /// caller told to forward the HTTP request instead.
    pub async fn write(&self, cmd: Command) -> Outcome<CommandResult> {
        self.check_initialized()?;
        let _pending = self.instruments.proposal();
        let out = self.propose(cmd).await;
        if out.is_err() {
            self.instruments.proposals_failed.inc();
        }
        out
    }

    async fn propose(&self, cmd: Command) -> Outcome<CommandResult> {
        let leader = self.leader();
        let Some(leader) = leader.filter(|l| l.id != self.id()) else {
            return match self.raft.client_write(cmd).await {
                Ok(resp) => Ok(resp.data),
                Err(e) => Err(self.map_write_error(e)),
            };
        };
        let ttl = Duration::from_millis(self.config.header_timeout_ms / 2);
        match self
            .proposer
            .propose(leader.id, leader.info.clone().into(), &cmd)
            .await
        {
            // Answer once this node has applied it too, as etcd's proposing
            // member does: a client that reads here next sees its write,
            // and the auth state an auth change returns is this node's.
            Ok(ProposeReply::Applied { result, index }) => {
                // The write succeeded whatever happens here: if this node
                // is too slow to apply it, say so in the log, not to the
                // client (an error would invite a retry, a second write).
                if !self.db.wait_applied(index, ttl).await {
                    tracing::warn!(index, "forwarded write applied by the leader, not yet here");
                }
                Ok(result)
            }
            Ok(ProposeReply::NotLeader) => Err(Reject::Forward(Some(leader))),
            Ok(ProposeReply::Unavailable(message)) => Err(Reject::Failed(NodeError::Unavailable {
                message,
                leader: Some(leader),
            })),
            Err(ProposeError::NotSent(e)) => {
                tracing::debug!(error = %e, leader = leader.id, "proposal not sent; forwarding");
                Err(Reject::Forward(Some(leader)))
            }
            Err(ProposeError::Indeterminate(e)) => Err(Reject::Failed(NodeError::Unavailable {
                message: format!(
                    "the leader's answer was lost ({e}); the write may or may not have been applied"
                ),
                leader: Some(leader),
            })),
        }
    }

    /// The leader's side of `write` for a follower's proposal.
    pub async fn propose_as_leader(&self, cmd: Command) -> ProposeReply {
        match self.raft.client_write(cmd).await {
            Ok(resp) => ProposeReply::Applied {
                index: resp.log_id.index,
                result: resp.data,
            },
            Err(e) => match self.map_write_error(e) {
                Reject::Forward(_) => ProposeReply::NotLeader,
                Reject::Failed(e) => ProposeReply::Unavailable(e.to_string()),
            },
        }
    }

    fn map_write_error(&self, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Reject {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                Reject::Forward(forward_target(f))
            }
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => {
                Reject::Failed(NodeError::Unavailable {
                    message: "leader changed before the write committed; it may or may not have \
                              applied"
                        .into(),
                    leader: forward_target(f),
                })
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                Reject::Failed(NodeError::Conflict(c.to_string()))
            }
            RaftError::APIError(other) => Reject::Failed(NodeError::unavailable(other.to_string())),
            RaftError::Fatal(f) => Reject::Failed(NodeError::unavailable(stopped(&f.to_string()))),
        }
    }

    /// Why raft on this node has stopped for good (a storage error: a full
    /// disk, a failing device), if it has. Only a restart brings it back.
    pub fn stopped(&self) -> Option<String> {
        self.with_metrics(|m| m.running_state.as_ref().err().map(|f| f.to_string()))
            .map(|f| stopped(&f))
    }

    /// Blocks until a read of the local state machine is linearizable:
    /// read-index through the leader's quorum, then wait for apply. On a
    /// follower the leader supplies the read index and the read is served
    /// here; if that fails the request is forwarded instead.
    pub async fn read_barrier(&self) -> Outcome<()> {
        self.check_initialized()?;
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(f) = e.forward_to_leader() {
                    let leader = forward_target(f.clone());
                    if let Some(l) = &leader
                        && self.follower_read_barrier(l).await
                    {
                        return Ok(());
                    }
                    return Err(Reject::Forward(leader));
                }
                Err(Reject::Failed(NodeError::Unavailable {
                    message: e.to_string(),
                    leader: self.leader(),
                }))
            }
        }
    }

    async fn follower_read_barrier(&self, leader: &Member) -> bool {
        let timeout = Duration::from_millis(self.config.election_timeout_ms * 2);
        let index = match self
            .network
            .client(leader.id, &leader.info.clone().into())
            .read_index(timeout)
            .await
        {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!(error = %e, leader = leader.id, "read index from leader failed");
                return false;
            }
        };
        self.db.wait_applied(index, timeout).await
    }

    /// The leader's side of a follower read: the log index a read must see.
    pub async fn leader_read_index(&self) -> Result<u64, String> {
        let lin = self
            .raft
            .get_read_linearizer(ReadPolicy::ReadIndex)
            .await
            .map_err(|e| e.to_string())?;
        Ok(lin.read_log_id().log_id().index)
    }

    /// A serializable read needs only an initialized node.
    pub fn check_initialized(&self) -> Outcome<()> {
        if self.is_initialized() {
            Ok(())
        } else {
            Err(Reject::Failed(NodeError::NotInitialized))
        }
    }

    pub fn is_initialized(&self) -> bool {
        self.with_metrics(|m| {
            m.membership_config
                .membership()
                .voter_ids()
                .next()
                .is_some()
        })
    }

    /// Whether a peer RPC claiming to come from `from` may reach raft: from
    /// a voter or learner of this node's membership (the latest one it
    /// knows, committed or not). A node without a membership yet (just
    /// added, or never initialized) hears from whoever its cluster sends:
    /// that is how a new learner receives its first entries.
    pub fn may_send_raft_rpcs(&self, from: Option<u64>) -> bool {
        // Runs for every append: borrow the metrics, do not clone them.
        let watch = self.raft.metrics();
        let m = watch.borrow_watched();
        let mem = m.membership_config.membership();
        if mem.voter_ids().next().is_none() {
            return true;
        }
        from.is_some_and(|id| mem.get_node(&id).is_some())
    }

    fn require_leader(&self) -> Outcome<()> {
        if !self.is_initialized() {
            return Err(Reject::Failed(NodeError::NotInitialized));
        }
        if self.is_leader() {
            Ok(())
        } else {
            Err(Reject::Forward(self.leader()))
        }
    }

    pub fn status(&self) -> ClusterStatus {
        let m = self.metrics();
        let membership = wire_membership(m.membership_config.membership());
        let initialized = !membership.voters.is_empty();
        let role = match m.state {
            _ if !initialized => Role::Uninitialized,
            ServerState::Leader => Role::Leader,
            ServerState::Candidate => Role::Candidate,
            ServerState::Follower => Role::Follower,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let last = m.last_log_index.unwrap_or(0);
        let followers = m.replication.as_ref().map(|r| {
            r.iter()
                .filter(|(id, _)| **id != self.id())
                .map(|(id, matched)| {
                    let matched = matched.as_ref().map(|l| l.index);
                    FollowerProgress {
                        id: *id,
                        matched_index: matched,
                        lag: last.saturating_sub(matched.unwrap_or(0)),
                    }
                })
                .collect()
        });
        ClusterStatus {
            id: self.id(),
            name: self.info.name.clone(),
            cluster_id: self.identity.cluster_id(),
            role,
            term: m.current_term,
            leader: self.leader(),
            membership,
            last_log_index: m.last_log_index,
            committed_index: m.local_committed.as_ref().map(|l| l.index),
            applied_index: m.last_applied.as_ref().map(|l| l.index),
            revision: self.db.revision(),
            followers,
            peer_url: self.info.peer_url.clone(),
            client_url: self.info.client_url.clone(),
        }
    }

    /// `Ok` when ready to serve, else the reason.
    pub fn readiness(&self) -> Result<(), String> {
        let m = self.metrics();
        if self.draining() {
            return Err("shutting down".into());
        }
        if let Err(f) = &m.running_state {
            return Err(stopped(&f.to_string()));
        }
        let mem = m.membership_config.membership();
        if mem.voter_ids().next().is_none() {
            return Err("cluster not initialized".into());
        }
        if mem.get_node(&self.id()).is_none() {
            return Err(format!("node {} is not a member of the cluster", self.id()));
        }
        if m.current_leader.is_none() {
            return Err("no leader known".into());
        }
        let applied = m.last_applied.as_ref().map(|l| l.index);
        if applied < self.startup_commit {
            return Err(format!(
                "applied index {:?} behind the commit index {:?} known at start",
                applied, self.startup_commit
            ));
        }
        Ok(())
    }

    pub async fn init(&self, req: InitRequest) -> Outcome<MembershipResponse> {
        let Ok(_gate) = self.restore_gate.try_read() else {
            return Err(NodeError::unavailable(
                "a restore is running on this node (POST /v1/cluster/restore), or has finished \
                 and the node is restarting to apply it",
            )
            .into());
        };
        let mut members = BTreeMap::new();
        for (id, info) in req.members {
            let id: u64 = id.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
                NodeError::Invalid(format!("member id {id:?} is not a positive integer"))
            })?;
            let info = MemberInfo::from(info);
            validate_urls(&info)?;
            members.insert(id, info);
        }
        if members.is_empty() {
            members.insert(self.id(), self.info.clone());
        }
        let Some(mine) = members.get_mut(&self.id()) else {
            return Err(NodeError::Invalid(format!(
                "members must include this node (id {})",
                self.id()
            ))
            .into());
        };
        if mine.name.is_empty() {
            mine.name = self.info.name.clone();
        }
        if self.is_initialized() {
            return self.init_again(&members);
        }
        if self.identity.cluster_id().is_none() {
            self.identity.set_cluster_id(&new_cluster_id())?;
        }
        match self.raft.initialize(members.clone()).await {
            Ok(()) => {}
            Err(RaftError::APIError(openraft::errors::InitializeError::NotAllowed(_))) => {
                return self.init_again(&members);
            }
            Err(e) => return Err(NodeError::Internal(e.to_string()).into()),
        }
        tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "cluster initialized");
        Ok(MembershipResponse {
            membership: WireMembership {
                voters: members
                    .into_iter()
                    .map(|(id, info)| Member {
                        id,
                        info: info.into(),
                    })
                    .collect(),
                learners: vec![],
                joint: false,
            },
            log_index: None,
        })
    }

    /// Init on an initialized node: fine if it asks for what exists.
    fn init_again(&self, members: &BTreeMap<u64, MemberInfo>) -> Outcome<MembershipResponse> {
        let cur = self.status().membership;
        let want: BTreeSet<u64> = members.keys().copied().collect();
        let have: BTreeSet<u64> = cur.voter_ids().into_iter().collect();
        if want == have {
            Ok(MembershipResponse {
                membership: cur,
                log_index: None,
            })
        } else {
            Err(
                NodeError::Conflict(format!("cluster already initialized with voters {have:?}"))
                    .into(),
            )
        }
    }

    pub async fn add_learner(&self, id: NodeId, info: MemberInfo) -> Outcome<MembershipResponse> {
        if id == 0 {
            return Err(NodeError::Invalid("member id must be a positive integer".into()).into());
        }
        validate_urls(&info)?;
        self.require_leader()?;
        let cur = self.metrics().membership_config.membership().clone();
        if let Some(existing) = cur.get_node(&id) {
            if *existing == info || (info.name.is_empty() && existing.peer_url == info.peer_url) {
                return Ok(MembershipResponse {
                    membership: wire_membership(&cur),
                    log_index: None,
                });
            }
            return Err(
                NodeError::Conflict(format!("member {id} already exists with other URLs")).into(),
            );
        }
        let resp = self
            .raft
            .add_learner(id, info, false)
            .await
            .map_err(|e| self.map_write_error(e))?;
        tracing::info!(learner = id, "learner added");
        Ok(self.membership_response(resp.log_id.index))
    }

    pub async fn set_voters(&self, voters: Vec<NodeId>) -> Outcome<MembershipResponse> {
        let want: BTreeSet<NodeId> = voters.into_iter().collect();
        if want.is_empty() {
            return Err(NodeError::Invalid("voters must not be empty".into()).into());
        }
        self.require_leader()?;
        let cur = self.metrics().membership_config.membership().clone();
        if let Some(unknown) = want.iter().find(|id| cur.get_node(id).is_none()) {
            return Err(NodeError::Invalid(format!(
                "unknown member id {unknown}: add it as a learner first"
            ))
            .into());
        }
        let have: BTreeSet<NodeId> = cur.voter_ids().collect();
        if have == want && cur.get_joint_config().len() == 1 {
            return Ok(MembershipResponse {
                membership: wire_membership(&cur),
                log_index: None,
            });
        }
        let resp = self
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(want.clone()), true)
            .await
            .map_err(|e| self.map_write_error(e))?;
        tracing::info!(voters = ?want, "voter set changed");
        Ok(self.membership_response(resp.log_id.index))
    }

    pub async fn remove_member(&self, id: NodeId) -> Outcome<MembershipResponse> {
        self.require_leader()?;
        let cur = self.metrics().membership_config.membership().clone();
        if cur.get_node(&id).is_none() {
            return Err(NodeError::NotFound(format!("no member with id {id}")).into());
        }
        let voters: BTreeSet<NodeId> = cur.voter_ids().collect();
        let change = if voters.contains(&id) {
            let rest: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
            if rest.is_empty() {
                return Err(NodeError::Invalid("cannot remove the last voter".into()).into());
            }
            ChangeMembers::ReplaceAllVoters(rest)
        } else {
            ChangeMembers::RemoveNodes([id].into())
        };
        let resp = self
            .raft
            .change_membership(change, false)
            .await
            .map_err(|e| self.map_write_error(e))?;
        tracing::info!(member = id, "member removed");
        Ok(self.membership_response(resp.log_id.index))
    }

    /// Hands leadership to `to` and waits until it has taken over.
    pub async fn transfer_leader(&self, to: NodeId) -> Outcome<Member> {
        self.require_leader()?;
        let cur = self.metrics().membership_config.membership().clone();
        if !cur.voter_ids().any(|v| v == to) {
            return Err(NodeError::Invalid(format!("node {to} is not a voter")).into());
        }
        if to != self.id() {
            self.raft
                .trigger()
                .transfer_leader(to)
                .await
                .map_err(|e| NodeError::unavailable(e.to_string()))?;
            let deadline = Duration::from_millis(self.config.election_timeout_ms * 4);
            if !self.wait_leader(|l| l == Some(to), deadline).await {
                return Err(NodeError::Unavailable {
                    message: format!("node {to} did not take over leadership within {deadline:?}"),
                    leader: self.leader(),
                }
                .into());
            }
        }
        self.leader().ok_or(Reject::Failed(NodeError::NoLeader))
    }

    /// Waits until `pred(current_leader)` holds or `timeout` passes.
    pub async fn wait_leader(
        &self,
        pred: impl Fn(Option<NodeId>) -> bool,
        timeout: Duration,
    ) -> bool {
        let mut rx = self.raft.metrics();
        let until = Instant::now() + timeout;
        loop {
            if pred(rx.borrow_watched().current_leader) {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if tokio::time::timeout(left, rx.changed()).await.is_err() {
                return pred(rx.borrow_watched().current_leader);
            }
        }
    }

    fn membership_response(&self, log_index: u64) -> MembershipResponse {
        MembershipResponse {
            membership: self.status().membership,
            log_index: Some(log_index),
        }
    }

    /// Graceful stop: leave the leadership to the most up-to-date voter
    /// first, so the cluster does not wait an election timeout.
    pub async fn hand_off_leadership(&self) {
        let m = self.metrics();
        if m.current_leader != Some(self.id()) {
            return;
        }
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        let best = m.replication.as_ref().and_then(|r| {
            r.iter()
                .filter(|(id, _)| **id != self.id() && voters.contains(id))
                .max_by_key(|(_, matched)| matched.as_ref().map(|l| l.index))
                .map(|(id, _)| *id)
        });
        let Some(to) = best else {
            tracing::info!("no other voter to hand leadership to");
            return;
        };
        tracing::info!(to, "transferring leadership before shutdown");
        if let Err(e) = self.raft.trigger().transfer_leader(to).await {
            tracing::warn!(error = %e, "leadership transfer failed");
            return;
        }
        let me = self.id();
        let deadline = Duration::from_millis(self.config.election_timeout_ms * 3);
        if self
            .wait_leader(|l| l.is_some() && l != Some(me), deadline)
            .await
        {
            tracing::info!(leader = ?self.metrics().current_leader, "leadership handed over");
        } else {
            tracing::warn!("leadership transfer did not finish in time");
        }
    }
}

fn forward_target(f: ForwardToLeader<TypeConfig>) -> Option<Member> {
    match (f.leader_id, f.leader_node) {
        (Some(id), Some(info)) => Some(Member {
            id,
            info: info.into(),
        }),
        _ => None,
    }
}

fn validate_urls(info: &MemberInfo) -> Result<(), NodeError> {
    for (what, u) in [
        ("peer_url", &info.peer_url),
        ("client_url", &info.client_url),
    ] {
        let ok = url::Url::parse(u)
            .map(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some())
            .unwrap_or(false);
        if !ok {
            return Err(NodeError::Invalid(format!(
                "{what} {u:?} is not an http:// or https:// URL with a host"
            )));
        }
    }
    Ok(())
}

pub fn wire_membership(m: &crate::raft::types::Membership) -> WireMembership {
    let member = |id: NodeId| Member {
        id,
        info: m.get_node(&id).cloned().unwrap_or_default().into(),
    };
    WireMembership {
        voters: m.voter_ids().map(member).collect(),
        learners: m.learner_ids().map(member).collect(),
        joint: m.get_joint_config().len() > 1,
    }
}

/// openraft's `(election_timeout_min, election_timeout_max)` for an election
/// timeout of `ms`, so that a follower campaigns after `ms` to `1.2 × ms`
/// without hearing from a leader.
///
/// openraft adds its leader lease (`election_timeout_max`) to a random
/// timeout in `[min, max)`: with `max = 2 × min`, as before, a follower
/// waited 3 to 4 times the flag, and a killed leader was replaced after
/// about 3.4 s. With `0.6 × ms` and `0.4 × ms` the silence before a
/// campaign is `[ms, 1.2 × ms)`; the 0.2 × ms spread keeps two followers
/// from campaigning in the same round trip.
pub fn election_timeouts(ms: u64) -> (u64, u64) {
    (ms * 2 / 5, ms * 3 / 5)
}

/// What a client is told once raft has stopped on a storage error. The
/// write that hit it may still be in the log (it is indeterminate); every
/// acknowledged write is durable. A full disk says so in words.
fn stopped(fatal: &str) -> String {
    if fatal.contains("No space left on device") {
        format!(
            "the data dir's disk is full: this node stopped accepting writes (nothing acknowledged \
             is lost); free space and restart the node ({fatal})"
        )
    } else {
        format!("raft stopped on a storage error; restart the node ({fatal})")
    }
}

#[cfg(test)]
mod tests {
    use super::election_timeouts;

    #[test]
    fn a_follower_campaigns_after_one_to_one_point_two_election_timeouts() {
        for ms in [150, 300, 1000, 5000] {
            let (min, max) = election_timeouts(ms);
            assert!(min < max, "{ms}: {min} {max}");
            // openraft: silence before a campaign is lease (= max) + [min, max).
            assert_eq!(max + min, ms, "{ms}");
            assert_eq!(max + max, ms * 6 / 5, "{ms}");
        }
    }
}
