//! The change history that watches read: every put and delete the state
//! machine applies, kept in the `history` column family under
//! (store revision, position in the command), written in the same batch as
//! the data it describes. Every revision in `[floor, revision]` has at
//! least one event (a revision advances only when a key changes), so a
//! reader knows it has seen a revision whole.
//!
//! The window is local to each node and independent of the raft log:
//! `compact` drops events below a revision chosen by the node's retention
//! settings, and a snapshot install empties the history (the revisions it
//! skipped were never applied here) and moves the floor past the
//! snapshot's revision. Watches that need revisions below the floor are
//! told so (`compacted`), never given a gap.

use std::sync::Arc;

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::{CF_SM, Db, Result, StoreError, decode, decode_u64, encode};

pub(crate) const CF_HISTORY: &str = "history";
/// The oldest revision the history holds (every event from there on).
pub(super) const SM_HISTORY_FLOOR: &[u8] = b"history_floor";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key, as stored and as published to live watchers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    pub revision: u64,
    /// The new value of a put; empty for a delete.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The value the key held before, with the revision that wrote it.
    pub prev: Option<(u64, serde_bytes::ByteBuf)>,
}

impl Event {
    /// Approximate bytes, for batch limits.
    pub fn size(&self) -> usize {
        self.key.len() + self.value.len() + self.prev.as_ref().map_or(0, |p| p.1.len()) + 32
    }
}

/// The events of one apply as live watchers receive them, with room for
/// their encodings: the first watcher that needs an encoding makes it and
/// every other watcher reuses it, so a thousand watchers cost one
/// serialisation per event, not a thousand. (`encoded[1]` carries previous
/// values, `encoded[0]` does not; the watch layer decides the format.)
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    pub encoded: [std::sync::OnceLock<Vec<bytes::Bytes>>; 2],
}

/// What one apply published: its events and the store revision after it;
/// or a snapshot install that replaced the history.
#[derive(Debug, Clone)]
pub enum Applied {
    Events { batch: Arc<Batch>, revision: u64 },
    Reset { floor: u64 },
}

fn event_key(revision: u64, seq: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&revision.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Adds `events` (one apply's, in order) to `batch`.
pub(super) fn put_events(db: &Db, batch: &mut WriteBatch, events: &[Event]) -> Result<()> {
    let cf = db.cf(CF_HISTORY)?;
    let mut last = 0;
    let mut seq = 0u32;
    for e in events {
        if e.revision != last {
            last = e.revision;
            seq = 0;
        }
        batch.put_cf(cf, event_key(e.revision, seq), encode(e)?);
        seq += 1;
    }
    Ok(())
}

/// Empties the history and sets its floor, in `batch` (snapshot install).
pub(super) fn reset_in(db: &Db, batch: &mut WriteBatch, floor: u64) -> Result<()> {
    batch.delete_range_cf(
        db.cf(CF_HISTORY)?,
        event_key(0, 0),
        event_key(u64::MAX, u32::MAX),
    );
    batch.put_cf(db.cf(CF_SM)?, SM_HISTORY_FLOOR, floor.to_be_bytes());
    Ok(())
}

/// The stored floor, or, for a data dir that has none yet (new, or from
/// before the history existed), `revision + 1`, persisted now.
pub(super) fn load_floor(db: &Db, revision: u64) -> Result<u64> {
    let cf = db.cf(CF_SM)?;
    match db.db().get_cf(cf, SM_HISTORY_FLOOR)? {
        Some(b) => decode_u64(&b).ok_or(StoreError::Corrupt("history floor")),
        None => {
            let floor = revision + 1;
            db.db().put_cf(cf, SM_HISTORY_FLOOR, floor.to_be_bytes())?;
            Ok(floor)
        }
    }
}

/// A page of history: whole revisions only.
#[derive(Debug, Default)]
pub struct Page {
    pub events: Vec<Event>,
    /// The first revision not in this page.
    pub next: u64,
}

/// Why history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("revision {wanted} is compacted; the oldest available is {oldest}")]
    Compacted { wanted: u64, oldest: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Db {
    /// The oldest revision a watch can start from on this node.
    pub fn history_floor(&self) -> u64 {
        self.history_floor
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub(super) fn set_history_floor(&self, floor: u64) {
        self.history_floor
            .store(floor, std::sync::atomic::Ordering::Release);
    }

    /// Subscribes to what the state machine applies from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Applied> {
        self.applied_tx.subscribe()
    }

    pub(super) fn publish(&self, a: Applied) {
        // No receiver is fine: nobody watches.
        let _ = self.applied_tx.send(a);
    }

    /// Events from revision `from` on, up to about `max_events` and
    /// `max_bytes` but always whole revisions; an empty page when `from`
    /// is past the applied revision.
    pub fn history(
        &self,
        from: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Page, HistoryError> {
        let cf = self.cf(CF_HISTORY)?;
        let iter = self.db().iterator_cf(
            cf,
            rocksdb::IteratorMode::From(&event_key(from, 0), rocksdb::Direction::Forward),
        );
        // Read after the iterator pinned its view: compaction raises the
        // floor before it deletes, so a floor at or below `from` here means
        // nothing this iterator sees from `from` on was deleted.
        let oldest = self.history_floor();
        if from < oldest {
            return Err(HistoryError::Compacted {
                wanted: from,
                oldest,
            });
        }
        let mut page = Page {
            events: Vec::new(),
            next: from,
        };
        let mut bytes = 0;
        for kv in iter {
            let (_, v) = kv.map_err(StoreError::from)?;
            let e: Event = decode("history event", &v)?;
            let full = page.events.len() >= max_events || bytes >= max_bytes;
            if full && page.events.last().is_some_and(|l| l.revision != e.revision) {
                break;
            }
            bytes += e.size();
            page.next = e.revision + 1;
            page.events.push(e);
        }
        Ok(page)
    }

    /// Drops events below `keep_from` (never above the applied revision + 1).
    /// The floor and the deletion are one batch: a crash cannot leave a
    /// floor below deleted events.
    pub fn compact_history(&self, keep_from: u64) -> Result<Option<u64>> {
        let keep_from = keep_from.min(self.revision() + 1);
        if keep_from <= self.history_floor() {
            return Ok(None);
        }
        // Raised before the delete becomes visible, so readers that check
        // it after pinning their view never see a hole (see `history`).
        self.set_history_floor(keep_from);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(CF_HISTORY)?,
            event_key(0, 0),
            event_key(keep_from, 0),
        );
        batch.put_cf(self.cf(CF_SM)?, SM_HISTORY_FLOOR, keep_from.to_be_bytes());
        self.db().write(batch)?;
        Ok(Some(keep_from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: u64, key: &str) -> Event {
        Event {
            kind: EventKind::Put,
            key: key.into(),
            revision: rev,
            value: b"v".to_vec(),
            prev: None,
        }
    }

    fn write(db: &Db, events: &[Event]) {
        let mut batch = WriteBatch::default();
        put_events(db, &mut batch, events).expect("events");
        db.db().write(batch).expect("write");
        db.set_revision(events.last().map(|e| e.revision).unwrap_or(0));
    }

    #[test]
    fn pages_hold_whole_revisions_and_compaction_says_where_history_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        db.set_history_floor(load_floor(&db, 0).expect("floor"));
        assert_eq!(db.history_floor(), 1);
        write(&db, &[put(1, "a"), put(1, "b"), put(1, "c")]);
        write(&db, &[put(2, "a"), put(3, "b")]);

        // A limit of one event still returns revision 1 whole.
        let p = db.history(1, 1, usize::MAX).expect("page");
        assert_eq!(p.events.len(), 3);
        assert_eq!(p.next, 2);
        let p = db.history(2, 100, usize::MAX).expect("page");
        assert_eq!(
            p.events.iter().map(|e| e.revision).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(p.next, 4);
        assert!(
            db.history(4, 100, usize::MAX)
                .expect("page")
                .events
                .is_empty()
        );

        assert_eq!(db.compact_history(3).expect("compact"), Some(3));
        match db.history(2, 100, usize::MAX) {
            Err(HistoryError::Compacted {
                wanted: 2,
                oldest: 3,
            }) => {}
            other => panic!("expected compacted, got {other:?}"),
        }
        assert_eq!(
            db.history(3, 100, usize::MAX).expect("page").events.len(),
            1
        );
        // Never past what was applied, and kept across a reopen.
        assert_eq!(db.compact_history(99).expect("compact"), Some(4));
        drop(db);
        let db = Db::open(dir.path()).expect("reopen");
        assert_eq!(load_floor(&db, 3).expect("floor"), 4);
    }
}
