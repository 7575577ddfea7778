//! RocksDB storage: the raft log and vote (`log.rs`), the state machine
//! (`sm.rs`) and snapshot files (`snapshot.rs`). This module is the only
//! place that touches RocksDB.
//!
//! One database, five column families:
//! - `log`: raft entries keyed by big-endian index;
//! - `meta`: vote, committed log id, last purged log id, node identity;
//! - `data`: user keys -> (revision, value);
//! - `sm`: last-applied log id, membership, store revision, the auth
//!   state and the leases (`leases.rs`), written in the same batch as the
//!   data they describe;
//! - `history`: the change events watches read (`history.rs`).

pub mod backup;
mod history;
mod leases;
mod log;
mod sm;
mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Options,
    WriteBufferManager,
};

use crate::auth::AuthState;
use crate::metrics::StoreTimings;
use crate::raft::types::LogId;

pub use history::{Applied, Batch, Event, EventKind, HistoryError, Page};
pub use log::LogStore;
pub use sm::{Record, StateMachine};
pub use snapshot::SnapshotFile;

pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_DATA: &str = "data";
pub(crate) const CF_SM: &str = "sm";
pub(crate) use history::CF_HISTORY;

const META_NODE_ID: &[u8] = b"node_id";
/// Apply batches kept for live watchers (see `Db::subscribe`): the memory
/// all watchers share (each batch's events, values included); a watcher
/// further behind reads the history from disk instead.
const APPLIED_BACKLOG: usize = 128;
const META_CLUSTER_ID: &[u8] = b"cluster_id";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("encoding: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("corrupt record {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: rmp_serde::decode::Error,
    },
    #[error("corrupt record {0}")]
    Corrupt(&'static str),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("column family {0} missing")]
    MissingCf(&'static str),
    /// The state machine is being replaced by a snapshot; retry shortly.
    #[error("installing a snapshot; retry shortly")]
    Installing,
}

impl From<StoreError> for std::io::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io(io) => io,
            other => std::io::Error::other(other),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How much memory RocksDB may use, from the node's flags. RocksDB's own
/// defaults give every column family its own 64 MiB memtables (two each)
/// and an unbounded index/filter footprint, so a node's memory would grow
/// with the number of column families and the data size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// One LRU cache shared by all column families for data blocks, and for
    /// index and filter blocks too (so they are bounded by it as well).
    pub block_cache_bytes: usize,
    /// Memtables of all column families together; a column family is
    /// flushed when the total reaches this.
    pub memtable_bytes: usize,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget {
            block_cache_bytes: 64 << 20,
            memtable_bytes: 64 << 20,
        }
    }
}

/// The opened database, shared by the log store, the state machine and
/// the read path of the API.
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<DB>,
    dir: PathBuf,
    /// Held for writing while a snapshot replaces the `data` column family
    /// (not one atomic batch: see `sm::install`), so nobody reads or dumps a
    /// half-installed state. Client reads only try it and answer "retry".
    install_gate: Arc<RwLock<()>>,
    /// The store revision of what the state machine has applied (written
    /// by `sm.rs` after each apply and install, read by status and metrics).
    revision: Arc<AtomicU64>,
    /// The auth state the state machine has applied (published by `sm.rs`,
    /// read by every authorized request without touching RocksDB).
    auth: Arc<RwLock<Arc<AuthState>>>,
    /// The lease table the state machine has applied (see `crate::lease`):
    /// changed under the write lock by `sm.rs` only.
    leases: Arc<RwLock<crate::lease::LeaseTable>>,
    /// The oldest revision in the history (see `history.rs`).
    history_floor: Arc<AtomicU64>,
    /// The raft log index the state machine has applied: forwarded writes
    /// and follower reads wait on it. Cheaper than openraft's metrics wait,
    /// which clones the whole metrics for every waiter on every change.
    applied_index: Arc<tokio::sync::watch::Sender<u64>>,
    /// What the state machine applies, for live watches.
    applied_tx: tokio::sync::broadcast::Sender<Applied>,
    pools: Arc<MemoryPools>,
    /// Log fsync and snapshot timings (reported by `crate::metrics`).
    timings: StoreTimings,
}

/// The block cache and the memtable budget the column families share;
/// kept for the usage figure (metrics) and alive as long as the database.
struct MemoryPools {
    block_cache: Cache,
    _write_buffers: WriteBufferManager,
}

impl std::fmt::Debug for MemoryPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPools")
            .field("block_cache_usage", &self.block_cache.get_usage())
            .finish()
    }
}

impl Db {
    /// Opens with the default memory budget (tests and tools).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, MemoryBudget::default())
    }

    pub fn open_with(dir: &Path, budget: MemoryBudget) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let block_cache = Cache::new_lru_cache(budget.block_cache_bytes);
        // No stall: when memtables are full RocksDB flushes; writers are
        // slowed by its usual write-stall rules, not blocked by the manager.
        let write_buffers =
            WriteBufferManager::new_write_buffer_manager(budget.memtable_bytes, false);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(3);
        opts.set_write_buffer_manager(&write_buffers);
        let cfs = [CF_LOG, CF_META, CF_DATA, CF_SM, CF_HISTORY]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options(name, &block_cache, budget)));
        let db = DB::open_cf_descriptors(&opts, dir.join("db"), cfs)?;
        std::fs::create_dir_all(dir.join("snapshots"))?;
        Ok(Db {
            inner: Arc::new(db),
            dir: dir.to_path_buf(),
            install_gate: Arc::default(),
            revision: Arc::default(),
            auth: Arc::default(),
            leases: Arc::default(),
            history_floor: Arc::default(),
            timings: StoreTimings::default(),
            applied_index: Arc::new(tokio::sync::watch::channel(0).0),
            // Messages, not events: one per apply batch. A watcher that
            // falls this far behind reads the history instead.
            applied_tx: tokio::sync::broadcast::channel(APPLIED_BACKLOG).0,
            pools: Arc::new(MemoryPools {
                block_cache,
                _write_buffers: write_buffers,
            }),
        })
    }

    /// Bytes held by the shared block cache (data, index and filter blocks).
    pub fn block_cache_usage(&self) -> u64 {
        self.pools.block_cache.get_usage() as u64
    }

    pub(crate) fn db(&self) -> &DB {
        &self.inner
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily> {
        self.inner
            .cf_handle(name)
            .ok_or(StoreError::MissingCf(name))
    }

    /// A shared hold on the state machine for a client read; fails at once
    /// while a snapshot is being installed (the caller answers 503).
    fn read_gate(&self) -> Result<RwLockReadGuard<'_, ()>> {
        match self.install_gate.try_read() {
            Ok(g) => Ok(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => Err(StoreError::Installing),
        }
    }

    /// The store revision this node has applied (see `sm.rs`).
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    pub(crate) fn set_revision(&self, r: u64) {
        self.revision.store(r, Ordering::Release);
    }

    /// Publishes what the state machine has applied: its store revision
    /// and its raft log index (after the writes, so a waiter reads them).
    pub(crate) fn set_applied(&self, revision: u64, applied: Option<&LogId>) {
        self.set_revision(revision);
        self.applied_index
            .send_replace(applied.map_or(0, |l| l.index));
    }

    /// Waits until the state machine has applied log index `index`; false
    /// if `timeout` passes first.
    pub async fn wait_applied(&self, index: u64, timeout: std::time::Duration) -> bool {
        let mut rx = self.applied_index.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|&a| a >= index)).await,
            Ok(Ok(_))
        )
    }

    /// The applied auth state; cheap (one `Arc` clone).
    pub fn auth(&self) -> Arc<AuthState> {
        self.auth.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_auth(&self, state: Arc<AuthState>) {
        *self.auth.write().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// The applied lease table; hold the guard briefly (an apply waits).
    pub fn leases(&self) -> std::sync::RwLockReadGuard<'_, crate::lease::LeaseTable> {
        self.leases.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn leases_mut(&self) -> std::sync::RwLockWriteGuard<'_, crate::lease::LeaseTable> {
        self.leases.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn install_gate(&self) -> &RwLock<()> {
        &self.install_gate
    }

    pub(crate) fn snapshot_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// The node id kept in this data dir, if any.
    pub fn node_id(&self) -> Result<Option<u64>> {
        let raw = self.db().get_cf(self.cf(CF_META)?, META_NODE_ID)?;
        raw.map(|b| decode_u64(&b).ok_or(StoreError::Corrupt("node_id")))
            .transpose()
    }

    /// Persists the node id; synced, since identity must survive a crash
    /// right after start.
    pub fn set_node_id(&self, id: u64) -> Result<()> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db()
            .put_cf_opt(self.cf(CF_META)?, META_NODE_ID, id.to_be_bytes(), &wo)?;
        Ok(())
    }

    pub fn cluster_id(&self) -> Result<Option<String>> {
        let raw = self.db().get_cf(self.cf(CF_META)?, META_CLUSTER_ID)?;
        Ok(raw.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    pub fn set_cluster_id(&self, id: &str) -> Result<()> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db()
            .put_cf_opt(self.cf(CF_META)?, META_CLUSTER_ID, id.as_bytes(), &wo)?;
        Ok(())
    }

    /// Reads one key of the state machine: `(revision, value)`.
    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        let _gate = self.read_gate()?;
        self.get_ungated(key)
    }

    /// The size of a key's value (0 when absent), without copying it out.
    pub fn value_len(&self, key: &str) -> Result<usize> {
        let _gate = self.read_gate()?;
        let v = self.db().get_pinned_cf(self.cf(CF_DATA)?, key.as_bytes())?;
        // A record is the 8-byte revision, then the value.
        Ok(v.map(|v| v.len().saturating_sub(8)).unwrap_or(0))
    }

    /// `get` for the state machine's own use (apply), which never runs
    /// during an install.
    pub(crate) fn get_ungated(&self, key: &str) -> Result<Option<Record>> {
        let raw = self.db().get_cf(self.cf(CF_DATA)?, key.as_bytes())?;
        raw.map(|b| Record::decode(&b)).transpose()
    }

    /// `get_ungated` of many keys in one RocksDB MultiGet, which shares the
    /// index and filter lookups of keys that land in the same files: what
    /// an apply batch reads before it writes. `keys` must be sorted.
    pub(crate) fn multi_get_ungated<'k>(
        &self,
        keys: &[&'k str],
    ) -> Result<Vec<(&'k str, Option<Record>)>> {
        let cf = self.cf(CF_DATA)?;
        let found = self
            .db()
            .batched_multi_get_cf(cf, keys.iter().map(|k| k.as_bytes()), true);
        keys.iter()
            .zip(found)
            .map(|(k, raw)| Ok((*k, raw?.map(|b| Record::decode(&b)).transpose()?)))
            .collect()
    }

    /// Ordered scan of keys `>= from` that start with `prefix`; returns at
    /// most `limit` items and whether more follow.
    pub fn scan(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
        keys_only: bool,
    ) -> Result<ScanPage> {
        self.scan_bounded(prefix, from, limit, keys_only, usize::MAX)
    }

    /// `scan` that also ends the page before its keys and values pass
    /// `max_bytes` (a page holds at least one item, whatever its size), so
    /// one request cannot make the node hold an unbounded response.
    pub fn scan_bounded(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
        keys_only: bool,
        max_bytes: usize,
    ) -> Result<ScanPage> {
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut next = None;
        let revision = self.visit_prefix(prefix, from, |k, v| {
            let key = String::from_utf8_lossy(k).into_owned();
            let size = k.len() + if keys_only { 0 } else { v.len() };
            if items.len() == limit || (!items.is_empty() && bytes + size > max_bytes) {
                next = Some(key);
                return Ok(false);
            }
            bytes += size;
            let mut rec = Record::decode(v)?;
            if keys_only {
                rec.value.clear();
            }
            items.push((key, rec));
            Ok(true)
        })?;
        Ok((items, next, revision))
    }

    /// Counts the keys `>= from` that start with `prefix`, from one RocksDB
    /// snapshot. With a `delimiter`, also groups them as S3 lists "common
    /// prefixes": a key whose rest after `prefix` contains the delimiter
    /// counts toward `prefix + rest up to and including its first
    /// delimiter`. At most `max_groups` groups (in key order); `count`
    /// always covers every key. Reads every key of the range: O(keys).
    pub fn count_prefix(
        &self,
        prefix: &str,
        from: &str,
        delimiter: Option<&str>,
        max_groups: usize,
    ) -> Result<PrefixCounts> {
        let mut out = PrefixCounts::default();
        let delimiter = delimiter.filter(|d| !d.is_empty()).map(str::as_bytes);
        out.revision = self.visit_prefix(prefix, from, |k, _| {
            out.count += 1;
            let Some(d) = delimiter else {
                return Ok(true);
            };
            let rest = &k[prefix.len()..];
            let Some(at) = rest.windows(d.len()).position(|w| w == d) else {
                out.direct += 1;
                return Ok(true);
            };
            let group = &k[..prefix.len() + at + d.len()];
            // Keys come in order, so a group's keys are consecutive.
            let same = out
                .groups
                .last()
                .is_some_and(|(g, _)| g.as_bytes() == group);
            if same {
                if let Some((_, n)) = out.groups.last_mut() {
                    *n += 1;
                }
            } else if out.groups.len() < max_groups {
                out.groups
                    .push((String::from_utf8_lossy(group).into_owned(), 1));
            } else {
                out.truncated = true;
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Calls `visit(key, encoded record)` for the keys `>= from` that start
    /// with `prefix`, in order, from one RocksDB snapshot, until it returns
    /// false. Returns the store revision of that snapshot.
    fn visit_prefix<F>(&self, prefix: &str, from: &str, mut visit: F) -> Result<u64>
    where
        F: FnMut(&[u8], &[u8]) -> Result<bool>,
    {
        let _gate = self.read_gate()?;
        let start = if from.as_bytes() > prefix.as_bytes() {
            from
        } else {
            prefix
        };
        // One RocksDB snapshot for the keys and the revision they are at.
        let snap = self.db().snapshot();
        let revision = match snap.get_cf(self.cf(CF_SM)?, sm::SM_REVISION)? {
            Some(b) => decode_u64(&b).ok_or(StoreError::Corrupt("store revision"))?,
            None => self.revision(),
        };
        let mut ro = rocksdb::ReadOptions::default();
        // Keys of other prefixes are never needed: let RocksDB stop early.
        if let Some(upper) = prefix_upper_bound(prefix.as_bytes()) {
            ro.set_iterate_upper_bound(upper);
        }
        let iter = snap.iterator_cf_opt(
            self.cf(CF_DATA)?,
            ro,
            rocksdb::IteratorMode::From(start.as_bytes(), rocksdb::Direction::Forward),
        );
        for kv in iter {
            let (k, v) = kv?;
            if !k.starts_with(prefix.as_bytes()) || !visit(&k, &v)? {
                break;
            }
        }
        Ok(revision)
    }

    /// On-disk sizes for the metrics endpoint: (live SST bytes, memtable bytes).
    pub fn sizes(&self) -> (u64, u64) {
        let mut sst = 0;
        let mut mem = 0;
        for name in [CF_LOG, CF_META, CF_DATA, CF_SM, CF_HISTORY] {
            if let Ok(cf) = self.cf(name) {
                sst += self
                    .db()
                    .property_int_value_cf(cf, "rocksdb.total-sst-files-size")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                mem += self
                    .db()
                    .property_int_value_cf(cf, "rocksdb.cur-size-all-mem-tables")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
            }
        }
        (sst, mem)
    }

    /// Makes everything written so far durable.
    pub fn timings(&self) -> &StoreTimings {
        &self.timings
    }

    /// The data dir this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn sync(&self) -> Result<()> {
        self.db().flush_wal(true)?;
        Ok(())
    }
}

/// One page of a scan: the items, the first key of the next page, and the
/// store revision the page was read at.
pub type ScanPage = (Vec<(String, Record)>, Option<String>, u64);

/// What `Db::count_prefix` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PrefixCounts {
    /// Every key of the range.
    pub count: u64,
    /// Keys with no delimiter after the prefix (with a delimiter only).
    pub direct: u64,
    /// (common prefix, keys under it), in key order.
    pub groups: Vec<(String, u64)>,
    /// More groups existed than were asked for.
    pub truncated: bool,
    /// The store revision the counts were read at.
    pub revision: u64,
}

/// The smallest byte string greater than every string starting with `p`.
pub(crate) fn prefix_upper_bound(p: &[u8]) -> Option<Vec<u8>> {
    let mut v = p.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xff {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

pub(crate) fn decode_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(rmp_serde::to_vec_named(v)?)
}

/// Options of one column family: every family shares the block cache, and
/// index and filter blocks live in it (pinned for L0, where every read
/// looks). The data family, where point reads land, gets a bloom filter;
/// the log is read sequentially and needs none.
fn cf_options(name: &str, cache: &Cache, budget: MemoryBudget) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    // Partitioned index and filters: an SST's index is a top level (pinned)
    // over 4 KiB partitions. With one monolithic index per file, a store
    // larger than the block cache evicted those indexes under random
    // reads, and every apply re-read and decompressed a whole one (hundreds
    // of KiB) for its one key lookup: half the CPU, and 368 writes/s
    // instead of 6,300 with 1 M keys of 1 KiB.
    table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_metadata_block_size(4096);
    table.set_pin_top_level_index_and_filter(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    if name == CF_DATA {
        table.set_bloom_filter(10.0, false);
    }
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    // A single memtable may take half the budget (two fit: one being
    // written while the other flushes).
    opts.set_write_buffer_size((budget.memtable_bytes / 2).max(1 << 20));
    opts.set_max_write_buffer_number(2);
    opts
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &'static str, b: &[u8]) -> Result<T> {
    rmp_serde::from_slice(b).map_err(|source| StoreError::Decode { what, source })
}

/// Opens the log store and the state machine over one database.
pub async fn open(dir: &Path, budget: MemoryBudget) -> Result<(Db, LogStore, StateMachine)> {
    let db = Db::open_with(dir, budget)?;
    let log = LogStore::new(db.clone());
    let sm = StateMachine::open(db.clone())?;
    Ok((db, log, sm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_bound_covers_the_prefix() {
        assert_eq!(prefix_upper_bound(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_upper_bound(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_upper_bound(b""), None);
    }

    #[test]
    fn counts_group_keys_by_their_first_delimiter_after_the_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        let cf = db.cf(CF_DATA).expect("cf");
        for (i, k) in [
            "a", "app/x", "app/y/1", "app/y/2", "app/z", "b/1", "b/2", "c", "c/1",
        ]
        .iter()
        .enumerate()
        {
            let rec = Record {
                revision: i as u64 + 1,
                value: b"v".to_vec(),
            };
            db.db().put_cf(cf, k, rec.encode()).expect("put");
        }
        let all = db.count_prefix("", "", Some("/"), 100).expect("count");
        assert_eq!(all.count, 9);
        assert_eq!(all.direct, 2, "a and c have no delimiter");
        let groups: Vec<_> = all.groups.iter().map(|(g, n)| (g.as_str(), *n)).collect();
        assert_eq!(groups, [("app/", 4), ("b/", 2), ("c/", 1)]);
        assert!(!all.truncated);

        let app = db.count_prefix("app/", "", Some("/"), 100).expect("count");
        assert_eq!((app.count, app.direct), (4, 2));
        assert_eq!(app.groups, [("app/y/".to_owned(), 2)]);

        let capped = db.count_prefix("", "", Some("/"), 1).expect("count");
        assert_eq!(capped.groups, [("app/".to_owned(), 4)]);
        assert!(capped.truncated);
        assert_eq!(capped.count, 9, "the count covers keys past the last group");

        let plain = db.count_prefix("b", "b/2", None, 100).expect("count");
        assert_eq!((plain.count, plain.groups.len()), (1, 0));
    }

    #[tokio::test]
    async fn identity_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = Db::open(dir.path()).expect("open");
            assert_eq!(db.node_id().expect("read"), None);
            db.set_node_id(42).expect("write");
            db.set_cluster_id("c1").expect("write");
        }
        let db = Db::open(dir.path()).expect("reopen");
        assert_eq!(db.node_id().expect("read"), Some(42));
        assert_eq!(db.cluster_id().expect("read").as_deref(), Some("c1"));
    }
}
