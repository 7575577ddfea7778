//! Prometheus metrics: HTTP request counts and latencies (recorded by a
//! middleware), instruments the node's parts record as they work (log
//! fsync, snapshots, peer RPCs, proposals, leader changes), raft/storage
//! gauges refreshed at scrape time, and the `process_*` series.
//!
//! Every series is listed in docs/api.md ("Metrics"); an integration test
//! compares that table with what `/metrics` serves, both ways.

mod process;

use std::collections::HashSet;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use openraft::alias::WatchReceiverOf;
use openraft::async_runtime::WatchReceiver;
use openraft::metrics::RaftServerMetrics;

use crate::node::Node;
use crate::raft::types::{NodeId, TypeConfig};

/// Labels of the HTTP series. Static strings, so that counting a request
/// allocates nothing (see [`Routes`] and [`method_label`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub method: &'static str,
}

/// The route templates seen so far, each leaked once: the router's
/// templates are a fixed, small set, so this is bounded by the routes the
/// code registers, never by what clients send.
#[derive(Debug, Default)]
pub struct Routes(RwLock<HashSet<&'static str>>);

impl Routes {
    pub fn intern(&self, route: &str) -> &'static str {
        if let Some(r) = self.0.read().unwrap_or_else(|p| p.into_inner()).get(route) {
            return r;
        }
        let mut set = self.0.write().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = set.get(route) {
            return r;
        }
        let r: &'static str = Box::leak(route.to_owned().into_boxed_str());
        set.insert(r);
        r
    }
}

/// The method as a label; methods the API does not serve are "other", so
/// that a client cannot make up label values.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type IntGauge = Gauge<i64, std::sync::atomic::AtomicI64>;
type U64Gauge = Gauge<u64, AtomicU64>;

/// Storage timings, recorded by `store` (held by `Db`).
#[derive(Clone, Debug)]
pub struct StoreTimings {
    /// One WAL sync of the log's group commit (`store/log.rs`).
    pub log_fsync: Histogram,
    pub snapshot_build: Histogram,
    pub snapshot_install: Histogram,
}

impl Default for StoreTimings {
    fn default() -> Self {
        StoreTimings {
            // 1 ms .. 8 s, as etcd's WAL fsync histogram.
            log_fsync: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            // 10 ms .. 80 s: a snapshot dumps or ingests the whole store.
            snapshot_build: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            snapshot_install: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
        }
    }
}

/// The label of the per-peer series: the peer's node id (never its URL,
/// which may carry credentials and changes with the address).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: NodeId,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn rtt_histogram() -> Histogram {
    // 0.1 ms .. 3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Peer RPC instruments of this node's client side (held by `Network`).
#[derive(Clone, Debug)]
pub struct PeerInstruments {
    rtt: HistogramFamily<PeerLabel>,
    sent: Family<PeerLabel, Counter>,
    received: Family<PeerLabel, Counter>,
}

impl Default for PeerInstruments {
    fn default() -> Self {
        PeerInstruments {
            rtt: Family::new_with_constructor(rtt_histogram),
            sent: Family::default(),
            received: Family::default(),
        }
    }
}

/// One peer's series, resolved once per client so that an RPC only
/// touches atomics.
#[derive(Clone, Debug)]
pub struct PeerHandles {
    pub rtt: Histogram,
    pub sent: Counter,
    pub received: Counter,
}

impl PeerInstruments {
    pub fn peer(&self, peer: NodeId) -> PeerHandles {
        let label = PeerLabel { peer };
        PeerHandles {
            rtt: self.rtt.get_or_create(&label).clone(),
            sent: self.sent.get_or_create(&label).clone(),
            received: self.received.get_or_create(&label).clone(),
        }
    }
}

/// What `Node` records: its proposals and the leader changes it sees.
#[derive(Clone, Debug, Default)]
pub struct NodeInstruments {
    pub proposals_pending: IntGauge,
    pub proposals_failed: Counter,
    pub leader_changes: Counter,
}

/// Counts one proposal as pending until dropped, so a proposal whose
/// client went away (its future dropped) is not pending forever.
pub struct PendingProposal(IntGauge);

impl NodeInstruments {
    pub fn proposal(&self) -> PendingProposal {
        self.proposals_pending.inc();
        PendingProposal(self.proposals_pending.clone())
    }
}

impl Drop for PendingProposal {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts leader changes as etcd does: each time the known leader becomes
/// `Some` id other than the last one seen (an election that ends with the
/// same leader after a spell without one counts too). Ends with raft.
pub async fn count_leader_changes(
    mut rx: WatchReceiverOf<TypeConfig, RaftServerMetrics<TypeConfig>>,
    changes: Counter,
) {
    let mut last = None;
    loop {
        let leader = rx.borrow_watched().current_leader;
        if leader.is_some() && leader != last {
            changes.inc();
        }
        last = leader;
        if rx.changed().await.is_err() {
            return;
        }
    }
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub routes: Routes,
    term: U64Gauge,
    leader_id: U64Gauge,
    is_leader: IntGauge,
    has_leader: IntGauge,
    /// Raft log indexes as counters (etcd's proposals committed/applied):
    /// set from the indexes at scrape time, never lowered.
    proposals_committed: Counter,
    proposals_applied: Counter,
    /// To pre-create a zero series for every member (see `render`).
    peers: PeerInstruments,
    last_log_index: U64Gauge,
    committed_index: U64Gauge,
    applied_index: U64Gauge,
    apply_lag: U64Gauge,
    snapshot_index: U64Gauge,
    purged_index: U64Gauge,
    voters: IntGauge,
    learners: IntGauge,
    store_revision: U64Gauge,
    auth_enabled: U64Gauge,
    auth_revision: U64Gauge,
    sst_bytes: U64Gauge,
    memtable_bytes: U64Gauge,
    block_cache_bytes: U64Gauge,
    /// Open watches (changed by the watch tasks themselves).
    pub watchers: IntGauge,
    history_floor: U64Gauge,
    leases: U64Gauge,
}

impl Metrics {
    /// Registers the node's instruments beside the scrape-time gauges.
    pub fn new(node: &Node) -> Self {
        // `process_*` carry no prefix: they are the same series every
        // Prometheus client library exports.
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("raftkv");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served on the client port",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0002, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency on the client port",
            latency.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let g = U64Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let term = gauge("raft_term", "Current raft term");
        let leader_id = gauge("raft_leader_id", "Id of the known leader (0 = none)");
        let last_log_index = gauge("raft_last_log_index", "Last raft log index");
        let committed_index = gauge("raft_committed_index", "Committed raft log index");
        let applied_index = gauge("raft_applied_index", "Applied raft log index");
        let apply_lag = gauge("raft_apply_lag", "Committed minus applied index");
        let snapshot_index = gauge("raft_snapshot_index", "Last log index of the snapshot");
        let purged_index = gauge("raft_purged_index", "Last purged raft log index");
        let store_revision = gauge("store_revision", "Store revision applied on this node");
        let auth_enabled = gauge("auth_enabled", "1 when authentication is enabled");
        let auth_revision = gauge("auth_revision", "Auth revision applied on this node");
        let sst_bytes = gauge("rocksdb_sst_bytes", "Size of RocksDB SST files");
        let memtable_bytes = gauge("rocksdb_memtable_bytes", "Size of RocksDB memtables");
        let history_floor = gauge(
            "history_oldest_revision",
            "Oldest revision a watch can start from on this node",
        );
        let leases = gauge("leases", "Leases held in the state machine");
        let block_cache_bytes = gauge(
            "rocksdb_block_cache_bytes",
            "Bytes in RocksDB's block cache (bounded by --rocksdb-block-cache-mb)",
        );
        let mut igauge = |name: &str, help: &str| {
            let g = IntGauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let is_leader = igauge("raft_is_leader", "1 if this node is the leader");
        let has_leader = igauge("raft_has_leader", "1 if this node knows a leader");
        let watchers = igauge("watchers", "Watches open on this node");
        let voters = igauge("raft_voters", "Number of voters in the membership");
        let learners = igauge("raft_learners", "Number of learners in the membership");
        // Constant 1 with the version as a label, the Prometheus convention
        // for joining a version onto other series.
        let build_info = Family::<BuildLabels, IntGauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: crate::VERSION.to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "kvnode build: version label, value 1",
            build_info,
        );
        let proposals_committed = Counter::default();
        registry.register(
            "proposals_committed",
            "Raft log entries committed (the commit index this node knows)",
            proposals_committed.clone(),
        );
        let proposals_applied = Counter::default();
        registry.register(
            "proposals_applied",
            "Raft log entries applied by this node's state machine (its applied index)",
            proposals_applied.clone(),
        );
        let n = &node.instruments;
        registry.register(
            "proposals_pending",
            "Writes proposed through this node and not yet answered",
            n.proposals_pending.clone(),
        );
        registry.register(
            "proposals_failed",
            "Writes proposed through this node that returned an error",
            n.proposals_failed.clone(),
        );
        registry.register(
            "raft_leader_changes",
            "Times this node saw a new leader",
            n.leader_changes.clone(),
        );
        let store = node.db.timings();
        registry.register(
            "raft_log_fsync_duration_seconds",
            "Time of one raft log WAL sync (one group commit)",
            store.log_fsync.clone(),
        );
        registry.register(
            "snapshot_build_duration_seconds",
            "Time to build a snapshot of the state machine",
            store.snapshot_build.clone(),
        );
        registry.register(
            "snapshot_install_duration_seconds",
            "Time to install a snapshot received from the leader",
            store.snapshot_install.clone(),
        );
        let peers = node.peer_instruments().clone();
        registry.register(
            "peer_round_trip_time_seconds",
            "Round trip of raft RPCs that carry no log entries (heartbeats, votes), by peer",
            peers.rtt.clone(),
        );
        registry.register(
            "peer_sent_bytes",
            "Raft RPC bytes sent to a peer (bodies, snapshots included)",
            peers.sent.clone(),
        );
        registry.register(
            "peer_received_bytes",
            "Raft RPC answer bytes received from a peer",
            peers.received.clone(),
        );
        Metrics {
            registry: root,
            requests,
            latency,
            routes: Routes::default(),
            term,
            leader_id,
            is_leader,
            has_leader,
            proposals_committed,
            proposals_applied,
            peers,
            last_log_index,
            committed_index,
            applied_index,
            apply_lag,
            snapshot_index,
            purged_index,
            voters,
            learners,
            store_revision,
            auth_enabled,
            auth_revision,
            sst_bytes,
            memtable_bytes,
            block_cache_bytes,
            watchers,
            history_floor,
            leases,
        }
    }

    /// Refreshes the gauges from the node and renders the text format.
    pub fn render(&self, node: &Node) -> String {
        let m = node.raft.metrics().borrow_watched().clone();
        let idx = |l: &Option<crate::raft::types::LogId>| l.as_ref().map(|l| l.index).unwrap_or(0);
        self.term.set(m.current_term);
        self.leader_id.set(m.current_leader.unwrap_or(0));
        self.is_leader
            .set(i64::from(m.current_leader == Some(node.id())));
        self.has_leader.set(i64::from(m.current_leader.is_some()));
        self.last_log_index.set(m.last_log_index.unwrap_or(0));
        let committed = idx(&m.local_committed);
        let applied = idx(&m.last_applied);
        self.committed_index.set(committed);
        self.applied_index.set(applied);
        self.apply_lag.set(committed.saturating_sub(applied));
        // fetch_max: two scrapes at once may both set, never lower.
        let proposals = [
            (&self.proposals_committed, committed),
            (&self.proposals_applied, applied),
        ];
        for (counter, index) in proposals {
            counter.inner().fetch_max(index, Ordering::Relaxed);
        }
        self.snapshot_index.set(idx(&m.snapshot));
        self.purged_index.set(idx(&m.purged));
        let mem = m.membership_config.membership();
        self.voters.set(mem.voter_ids().count() as i64);
        self.learners.set(mem.learner_ids().count() as i64);
        // Every other member has its peer series from the first scrape on,
        // at zero until an RPC goes to it, so that absence means "not a
        // member", not "not yet contacted".
        for id in mem.nodes().map(|(id, _)| *id).filter(|id| *id != node.id()) {
            self.peers.peer(id);
        }
        self.store_revision.set(node.db.revision());
        let auth = node.db.auth();
        self.auth_enabled.set(u64::from(auth.enabled));
        self.auth_revision.set(auth.revision);
        let (sst, memtable) = node.db.sizes();
        self.sst_bytes.set(sst);
        self.memtable_bytes.set(memtable);
        self.block_cache_bytes.set(node.db.block_cache_usage());
        self.history_floor.set(node.db.history_floor());
        self.leases.set(node.db.leases().len() as u64);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_leaked_once() {
        let routes = Routes::default();
        let a = routes.intern("/v1/kv/{*key}");
        let b = routes.intern(&String::from("/v1/kv/{*key}"));
        assert!(std::ptr::eq(a, b), "the same template is one string");
        assert_eq!(routes.intern("/v1/txn"), "/v1/txn");
        assert_eq!(routes.0.read().expect("lock").len(), 2);
        assert_eq!(method_label(&axum::http::Method::GET), "GET");
        let made_up = axum::http::Method::from_bytes(b"BREW").expect("method");
        assert_eq!(method_label(&made_up), "other");
    }

    #[test]
    fn a_pending_proposal_counts_until_dropped() {
        let n = NodeInstruments::default();
        let first = n.proposal();
        let second = n.proposal();
        assert_eq!(n.proposals_pending.get(), 2);
        drop(first);
        drop(second);
        assert_eq!(n.proposals_pending.get(), 0);
    }

    #[test]
    fn peer_handles_record_into_the_labelled_series() {
        let peers = PeerInstruments::default();
        let mut registry = Registry::default();
        registry.register("peer_sent_bytes", "", peers.sent.clone());
        registry.register("peer_round_trip_time_seconds", "", peers.rtt.clone());
        let h = peers.peer(7);
        h.sent.inc_by(100);
        h.rtt.observe(0.001);
        peers.peer(7).sent.inc_by(20);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("peer_sent_bytes_total{peer=\"7\"} 120"),
            "{text}"
        );
        assert!(
            text.contains("peer_round_trip_time_seconds_count{peer=\"7\"} 1"),
            "{text}"
        );
    }
}
