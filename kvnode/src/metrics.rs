//! Prometheus metrics: HTTP request counts and latencies (recorded by a
//! middleware), and raft/storage gauges refreshed at scrape time.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use openraft::async_runtime::WatchReceiver;

use crate::node::Node;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type IntGauge = Gauge<i64, std::sync::atomic::AtomicI64>;
type U64Gauge = Gauge<u64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    term: U64Gauge,
    leader_id: U64Gauge,
    is_leader: IntGauge,
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("raftkv");
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
        Metrics {
            registry,
            requests,
            latency,
            term,
            leader_id,
            is_leader,
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
        self.last_log_index.set(m.last_log_index.unwrap_or(0));
        let committed = idx(&m.local_committed);
        let applied = idx(&m.last_applied);
        self.committed_index.set(committed);
        self.applied_index.set(applied);
        self.apply_lag.set(committed.saturating_sub(applied));
        self.snapshot_index.set(idx(&m.snapshot));
        self.purged_index.set(idx(&m.purged));
        let mem = m.membership_config.membership();
        self.voters.set(mem.voter_ids().count() as i64);
        self.learners.set(mem.learner_ids().count() as i64);
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
