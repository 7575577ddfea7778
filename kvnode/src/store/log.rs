//! The raft log and vote in RocksDB.
//!
//! Durability rule: openraft is told an append is flushed only after the
//! write batch is synced to the WAL. An append writes its batch (visible at
//! once, so replication can start) and hands the flush callback to a
//! dedicated sync thread; that thread fsyncs the WAL once for every batch
//! queued so far (group commit) and then completes their callbacks.
//! Other writes (vote, truncation, purge) are synced inline on the blocking
//! pool so an fsync never stalls a runtime worker.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use rocksdb::{WriteBatch, WriteOptions};

use super::{CF_LOG, CF_META, Db, Result, StoreError, decode, encode};
use crate::raft::types::{Entry, LogId, TypeConfig, Vote};

const META_VOTE: &[u8] = b"vote";
const META_COMMITTED: &[u8] = b"committed";
const META_PURGED: &[u8] = b"last_purged";

#[derive(Debug, Clone)]
pub struct LogStore {
    db: Db,
    syncer: Arc<Syncer>,
    recent: Arc<Mutex<Recent>>,
}

/// Most entries and bytes kept in [`Recent`].
const RECENT_ENTRIES: usize = 4096;
const RECENT_BYTES: usize = 16 << 20;

/// The newest appended entries, in memory. The leader's replication reads
/// every entry once per follower right after appending it; from RocksDB
/// that is an iterator seek and a MessagePack decode per entry and
/// follower (8% of the leader's CPU under writes). Invariant: the entries
/// are contiguous and end at the last appended one, so a range that starts
/// inside them is answered from here whole.
#[derive(Debug, Default)]
struct Recent {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn push(&mut self, entry: Entry, size: usize) {
        let follows = self
            .entries
            .back()
            .is_none_or(|(last, _)| last.log_id.index + 1 == entry.log_id.index);
        if !follows {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.entries.len() > RECENT_ENTRIES || self.bytes > RECENT_BYTES {
            let Some((_, n)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= n;
        }
    }

    /// Drops entries from index `from` on (a truncation).
    fn truncate(&mut self, from: u64) {
        while let Some((e, n)) = self.entries.back() {
            if e.log_id.index < from {
                break;
            }
            self.bytes -= n;
            self.entries.pop_back();
        }
    }

    /// Drops entries up to index `upto` (a purge).
    fn purge(&mut self, upto: u64) {
        while let Some((e, n)) = self.entries.front() {
            if e.log_id.index > upto {
                break;
            }
            self.bytes -= n;
            self.entries.pop_front();
        }
    }

    /// The entries from `start` to `end`, if the cache holds all of them.
    fn get(&self, start: u64, end: Bound<u64>) -> Option<Vec<Entry>> {
        let first = self.first()?;
        let last = self.entries.back()?.0.log_id.index;
        let covered = match end {
            Bound::Included(x) => x <= last,
            Bound::Excluded(x) => x <= last + 1,
            Bound::Unbounded => true,
        };
        if start < first || !covered {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .map(|(e, _)| e)
                .take_while(|e| match end {
                    Bound::Included(x) => e.log_id.index <= x,
                    Bound::Excluded(x) => e.log_id.index < x,
                    Bound::Unbounded => true,
                })
                .cloned()
                .collect(),
        )
    }
}

/// The sync thread and the sending end of its queue. Dropped with the last
/// LogStore clone: closing the queue ends the thread, and the drop waits for
/// it, so the thread's database handle is released before the drop returns.
/// (Left detached, the thread could close RocksDB while the process exits,
/// which aborts in RocksDB's background threads.)
#[derive(Debug)]
struct Syncer {
    tx: Option<std::sync::mpsc::Sender<IOFlushed<TypeConfig>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn synced() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

impl LogStore {
    pub fn new(db: Db) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<IOFlushed<TypeConfig>>();
        let sync_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let started = std::time::Instant::now();
                    crate::crash::slow_sync(sync_db.dir());
                    let res = sync_db.sync();
                    sync_db
                        .timings()
                        .log_fsync
                        .observe(started.elapsed().as_secs_f64());
                    for cb in waiting {
                        cb.io_completed(match &res {
                            Ok(()) => Ok(()),
                            Err(e) => Err(io::Error::other(e.to_string())),
                        });
                    }
                }
            })
            .inspect_err(|e| tracing::error!(error = %e, "cannot start log sync thread"))
            .ok();
        LogStore {
            db,
            syncer: Arc::new(Syncer {
                tx: Some(tx),
                thread,
            }),
            recent: Arc::default(),
        }
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>> {
        let raw = self.db.db().get_cf(self.db.cf(CF_META)?, key)?;
        raw.map(|b| decode(what, &b)).transpose()
    }

    fn read_range(&self, start: u64, end: Bound<u64>) -> Result<Vec<Entry>> {
        let iter = self.db.db().iterator_cf(
            self.db.cf(CF_LOG)?,
            rocksdb::IteratorMode::From(&start.to_be_bytes(), rocksdb::Direction::Forward),
        );
        let mut out = Vec::new();
        for kv in iter {
            let (k, v) = kv?;
            let idx = super::decode_u64(&k).ok_or(StoreError::Corrupt("log key"))?;
            let past_end = match end {
                Bound::Included(e) => idx > e,
                Bound::Excluded(e) => idx >= e,
                Bound::Unbounded => false,
            };
            if past_end {
                break;
            }
            out.push(decode("log entry", &v)?);
        }
        Ok(out)
    }

    /// Runs a blocking RocksDB operation off the async workers.
    async fn blocking<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&LogStore) -> Result<T> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::from)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = range.end_bound().cloned();
        if let Some(hit) = self.recent().get(start, end) {
            return Ok(hit);
        }
        self.read_range(start, end).map_err(io::Error::from)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.get_meta(META_VOTE, "vote").map_err(io::Error::from)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.get_meta(META_PURGED, "last purged")?;
        let cf = self.db.cf(CF_LOG)?;
        let last = match self
            .db
            .db()
            .iterator_cf(cf, rocksdb::IteratorMode::End)
            .next()
        {
            Some(kv) => {
                let (_, v) = kv.map_err(StoreError::from)?;
                let e: Entry = decode("log entry", &v)?;
                Some(e.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let bytes = encode(vote)?;
        self.blocking(move |s| {
            s.db.db()
                .put_cf_opt(s.db.cf(CF_META)?, META_VOTE, bytes, &synced())?;
            Ok(())
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Not synced: losing it only means re-applying from the last synced point.
        let cf = self.db.cf(CF_META)?;
        match committed {
            Some(c) => self
                .db
                .db()
                .put_cf(cf, META_COMMITTED, encode(&c)?)
                .map_err(StoreError::from)?,
            None => self
                .db
                .db()
                .delete_cf(cf, META_COMMITTED)
                .map_err(StoreError::from)?,
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        self.get_meta(META_COMMITTED, "committed")
            .map_err(io::Error::from)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let mut appended = Vec::new();
        {
            let cf = self.db.cf(CF_LOG)?;
            for e in entries {
                let bytes = encode(&e)?;
                batch.put_cf(cf, e.log_id.index.to_be_bytes(), &bytes);
                appended.push((e, bytes.len()));
            }
        }
        // Unsynced: a memtable insert plus a buffered WAL append.
        self.db.db().write(batch).map_err(StoreError::from)?;
        {
            let mut recent = self.recent();
            for (e, size) in appended {
                recent.push(e, size);
            }
        }
        crate::crash::point("log-append-unsynced");
        self.syncer
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("log sync thread is gone"))?
            .send(callback)
            .map_err(|_| io::Error::other("log sync thread is gone"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        // First: nobody may read a truncated entry from the cache.
        self.recent().truncate(from);
        self.blocking(move |s| {
            let cf = s.db.cf(CF_LOG)?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf, from.to_be_bytes(), u64::MAX.to_be_bytes());
            // delete_range excludes its end; the last possible index goes too.
            batch.delete_cf(cf, u64::MAX.to_be_bytes());
            s.db.db().write_opt(batch, &synced())?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let purged = encode(&log_id)?;
        self.recent().purge(log_id.index);
        self.blocking(move |s| {
            // The state machine writes are not synced one by one; make them
            // durable before the log that could rebuild them disappears.
            s.db.sync()?;
            let mut batch = WriteBatch::default();
            batch.put_cf(s.db.cf(CF_META)?, META_PURGED, purged);
            batch.delete_range_cf(
                s.db.cf(CF_LOG)?,
                0u64.to_be_bytes(),
                (log_id.index + 1).to_be_bytes(),
            );
            s.db.db().write_opt(batch, &synced())?;
            Ok(())
        })
        .await
    }
}

/// Writes into `batch` a log that starts after `at`: every entry gone, `at`
/// purged and committed, `vote` saved. The offline steps of `backup.rs`
/// use it, with the node stopped (nothing cached to keep in step).
pub(super) fn reseed_in(db: &Db, batch: &mut WriteBatch, at: &LogId, vote: &Vote) -> Result<()> {
    let meta = db.cf(CF_META)?;
    batch.delete_range_cf(db.cf(CF_LOG)?, 0u64.to_be_bytes(), u64::MAX.to_be_bytes());
    batch.put_cf(meta, META_PURGED, encode(at)?);
    batch.put_cf(meta, META_COMMITTED, encode(at)?);
    batch.put_cf(meta, META_VOTE, encode(vote)?);
    Ok(())
}

/// The index of the newest entry in the log, if any (for the offline steps).
pub(super) fn last_index(db: &Db) -> Result<Option<u64>> {
    let mut it = db
        .db()
        .iterator_cf(db.cf(CF_LOG)?, rocksdb::IteratorMode::End);
    match it.next() {
        Some(kv) => {
            let (k, _) = kv?;
            Ok(Some(
                super::decode_u64(&k).ok_or(StoreError::Corrupt("log key"))?,
            ))
        }
        None => Ok(None),
    }
}

/// The saved vote, read directly (for the offline steps).
pub(super) fn stored_vote(db: &Db) -> Result<Option<Vote>> {
    db.db()
        .get_cf(db.cf(CF_META)?, META_VOTE)?
        .map(|b| decode("vote", &b))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::{Command, TypeConfig};
    use openraft::entry::RaftEntry;
    use openraft::vote::RaftLeaderId;

    type LeaderId = openraft::alias::CommittedLeaderIdOf<TypeConfig>;

    fn entry(index: u64) -> Entry {
        Entry::new_normal(LogId::new(LeaderId::new(1, 1), index), Command::default())
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_answer_only_ranges_they_hold_whole() {
        let mut r = Recent::default();
        for i in 5..=9 {
            r.push(entry(i), 10);
        }
        assert_eq!(indexes(r.get(6, Bound::Included(8))), Some(vec![6, 7, 8]));
        assert_eq!(indexes(r.get(8, Bound::Unbounded)), Some(vec![8, 9]));
        assert_eq!(indexes(r.get(9, Bound::Excluded(10))), Some(vec![9]));
        // Older than the cache, or past its end: RocksDB answers.
        assert_eq!(indexes(r.get(4, Bound::Included(6))), None);
        assert_eq!(indexes(r.get(8, Bound::Included(10))), None);

        // A truncation drops the tail; a purge the head.
        r.truncate(8);
        assert_eq!(indexes(r.get(5, Bound::Unbounded)), Some(vec![5, 6, 7]));
        r.purge(5);
        assert_eq!(indexes(r.get(5, Bound::Unbounded)), None);
        assert_eq!(r.bytes, 20);
        // A gap (an append that does not follow) starts the cache afresh.
        r.push(entry(20), 10);
        assert_eq!(indexes(r.get(6, Bound::Unbounded)), None);
        assert_eq!(indexes(r.get(20, Bound::Unbounded)), Some(vec![20]));
        assert_eq!(r.bytes, 10);
    }

    #[test]
    fn recent_entries_are_bounded() {
        let mut r = Recent::default();
        for i in 0..(RECENT_ENTRIES as u64 + 10) {
            r.push(entry(i), 1);
        }
        assert_eq!(r.entries.len(), RECENT_ENTRIES);
        assert_eq!(r.first(), Some(10));
        r.push(entry(RECENT_ENTRIES as u64 + 10), RECENT_BYTES);
        assert_eq!(
            r.entries.len(),
            1,
            "one entry of the whole budget evicts the rest"
        );
    }
}
