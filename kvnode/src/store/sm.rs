//! The state machine, kept in RocksDB (not in memory: the data set may be
//! larger than RAM). Each `apply` call becomes one atomic write batch that
//! carries the data changes together with the last-applied log id and the
//! membership, so a crash can never leave them disagreeing.

use std::collections::HashMap;
use std::io;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::snapshot::{self, SnapshotFile};
use super::{CF_DATA, CF_SM, Db, Result, StoreError, decode, encode};
use crate::raft::types::{
    Cmp, CmpTarget, Command, CommandResult, LogId, Op, OpResult, SnapshotMeta, StoredMembership,
    TypeConfig,
};
use kvclient::CompareOp;

const SM_APPLIED: &[u8] = b"applied";
const SM_MEMBERSHIP: &[u8] = b"membership";
const SM_SNAPSHOT: &[u8] = b"snapshot";

/// A stored value with the revision (log index) that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub revision: u64,
    pub value: Vec<u8>,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + self.value.len());
        v.extend_from_slice(&self.revision.to_be_bytes());
        v.extend_from_slice(&self.value);
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() < 8 {
            return Err(StoreError::Corrupt("data record"));
        }
        let (rev, value) = b.split_at(8);
        Ok(Record {
            revision: super::decode_u64(rev).ok_or(StoreError::Corrupt("data record"))?,
            value: value.to_vec(),
        })
    }
}

/// Which snapshot file is current, persisted in the `sm` column family.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CurrentSnapshot {
    meta: SnapshotMeta,
    file: String,
}

#[derive(Debug)]
pub struct StateMachine {
    db: Db,
    applied: Option<LogId>,
    membership: StoredMembership,
}

impl StateMachine {
    pub fn open(db: Db) -> Result<Self> {
        let cf = db.cf(CF_SM)?;
        let applied = db
            .db()
            .get_cf(cf, SM_APPLIED)?
            .map(|b| decode("applied", &b))
            .transpose()?;
        let membership = db
            .db()
            .get_cf(cf, SM_MEMBERSHIP)?
            .map(|b| decode("membership", &b))
            .transpose()?
            .unwrap_or_default();
        Ok(StateMachine {
            db,
            applied,
            membership,
        })
    }

    fn current_snapshot(&self) -> Result<Option<CurrentSnapshot>> {
        let raw = self.db.db().get_cf(self.db.cf(CF_SM)?, SM_SNAPSHOT)?;
        raw.map(|b| decode("snapshot", &b)).transpose()
    }

    /// Records `file` as the current snapshot and removes older files.
    fn set_current_snapshot(db: &Db, meta: &SnapshotMeta, file: &str) -> Result<()> {
        let cur = CurrentSnapshot {
            meta: meta.clone(),
            file: file.to_owned(),
        };
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        db.db()
            .put_cf_opt(db.cf(CF_SM)?, SM_SNAPSHOT, encode(&cur)?, &wo)?;
        for e in std::fs::read_dir(db.snapshot_dir())?.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".snap") && name != file {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

/// Looks a key up in the batch being built first, then in RocksDB.
struct View<'a> {
    db: &'a Db,
    overlay: HashMap<String, Option<Record>>,
}

impl View<'_> {
    fn get(&self, key: &str) -> Result<Option<Record>> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.db.get(key),
        }
    }

    fn holds(&self, c: &Cmp) -> Result<bool> {
        let cur = self.get(&c.key)?;
        Ok(match &c.target {
            CmpTarget::Exists(want) => cur.is_some() == *want,
            CmpTarget::Revision(r) => compare(cur.map(|r| r.revision).unwrap_or(0), *r, c.op),
            // An absent key has no value to compare, whatever the operator.
            CmpTarget::Value(v) => cur.is_some_and(|rec| compare(&rec.value, v, c.op)),
        })
    }
}

fn compare<T: Ord>(have: T, want: T, op: CompareOp) -> bool {
    match op {
        CompareOp::Eq => have == want,
        CompareOp::Ne => have != want,
        CompareOp::Lt => have < want,
        CompareOp::Gt => have > want,
    }
}

/// Executes one command at log index `index`, adding its writes to `batch`.
fn execute(
    view: &mut View<'_>,
    batch: &mut WriteBatch,
    cf: &rocksdb::ColumnFamily,
    cmd: Command,
    index: u64,
) -> Result<CommandResult> {
    let mut succeeded = true;
    for c in &cmd.compare {
        if !view.holds(c)? {
            succeeded = false;
            break;
        }
    }
    let current_revisions = if succeeded {
        Vec::new()
    } else {
        cmd.compare
            .iter()
            .map(|c| Ok(view.get(&c.key)?.map(|r| r.revision).unwrap_or(0)))
            .collect::<Result<_>>()?
    };
    let ops = if succeeded { cmd.success } else { cmd.failure };
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        results.push(match op {
            Op::Put { key, value } => {
                let rec = Record {
                    revision: index,
                    value,
                };
                batch.put_cf(cf, key.as_bytes(), rec.encode());
                view.overlay.insert(key, Some(rec));
                OpResult::Put { revision: index }
            }
            Op::Delete { key } => {
                let existed = view.get(&key)?.is_some();
                if existed {
                    batch.delete_cf(cf, key.as_bytes());
                    view.overlay.insert(key, None);
                }
                OpResult::Delete { deleted: existed }
            }
            Op::Get { key } => OpResult::Get {
                found: view
                    .get(&key)?
                    .map(|r| (r.revision, serde_bytes::ByteBuf::from(r.value))),
            },
        });
    }
    Ok(CommandResult {
        succeeded,
        revision: index,
        results,
        current_revisions,
    })
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let mut replies = Vec::new();
        let mut applied = self.applied;
        let mut membership = None;
        {
            let cf = self.db.cf(CF_DATA)?;
            let mut view = View {
                db: &self.db,
                overlay: HashMap::new(),
            };
            while let Some(item) = entries.next().await {
                let (entry, responder) = item?;
                let index = entry.log_id.index;
                let result = match entry.payload {
                    EntryPayload::Blank => CommandResult::default(),
                    EntryPayload::Normal(cmd) => execute(&mut view, &mut batch, cf, cmd, index)?,
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m));
                        CommandResult::default()
                    }
                };
                applied = Some(entry.log_id);
                if let Some(r) = responder {
                    replies.push((r, result));
                }
            }
        }
        let sm_cf = self.db.cf(CF_SM)?;
        batch.put_cf(sm_cf, SM_APPLIED, encode(&applied)?);
        if let Some(m) = &membership {
            batch.put_cf(sm_cf, SM_MEMBERSHIP, encode(m)?);
        }
        // Not synced per batch: the synced raft log can rebuild it, and
        // `purge` syncs before dropping any log entry.
        self.db.db().write(batch).map_err(StoreError::from)?;
        self.applied = applied;
        if let Some(m) = membership {
            self.membership = m;
        }
        for (r, res) in replies {
            r.send(res);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snap: SnapshotFile,
    ) -> io::Result<()> {
        let db = self.db.clone();
        let meta2 = meta.clone();
        tokio::task::spawn_blocking(move || install(&db, &meta2, snap))
            .await
            .map_err(io::Error::other)??;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>>> {
        let Some(cur) = self.current_snapshot()? else {
            return Ok(None);
        };
        let file = SnapshotFile::open(self.db.snapshot_dir().join(&cur.file))?;
        Ok(Some(openraft::storage::Snapshot {
            meta: cur.meta,
            snapshot: file,
        }))
    }
}

/// Replaces the whole state machine with the snapshot in one atomic batch.
fn install(db: &Db, meta: &SnapshotMeta, snap: SnapshotFile) -> io::Result<()> {
    let mut batch = WriteBatch::default();
    let data = db.cf(CF_DATA)?;
    // Keys are UTF-8, which never contains 0xFF: this range is every key.
    batch.delete_range_cf(data, &b""[..], &b"\xff"[..]);
    let count = snapshot::read_all(&snap.file, |k, rec| batch.put_cf(data, k, rec.encode()))?;
    let sm = db.cf(CF_SM)?;
    batch.put_cf(sm, SM_APPLIED, encode(&meta.last_log_id)?);
    batch.put_cf(sm, SM_MEMBERSHIP, encode(&meta.last_membership)?);
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    db.db().write_opt(batch, &wo).map_err(StoreError::from)?;

    let name = snapshot_file_name(meta);
    let dest = db.snapshot_dir().join(&name);
    if snap.path != dest {
        std::fs::rename(&snap.path, &dest)?;
    }
    StateMachine::set_current_snapshot(db, meta, &name)?;
    tracing::info!(keys = count, last_log_id = ?meta.last_log_id, "installed snapshot");
    Ok(())
}

fn snapshot_file_name(meta: &SnapshotMeta) -> String {
    let idx = meta.last_log_id.as_ref().map(|l| l.index).unwrap_or(0);
    let nonce: u32 = rand::random();
    format!("{idx:020}-{nonce:08x}.snap")
}

pub struct SnapshotBuilder {
    db: Db,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(
        &mut self,
    ) -> io::Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || build(&db))
            .await
            .map_err(io::Error::other)?
    }
}

/// Dumps the state machine as of one RocksDB snapshot, so data, applied
/// index and membership in the file all describe the same moment.
fn build(db: &Db) -> io::Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>> {
    let view = db.db().snapshot();
    let sm = db.cf(CF_SM)?;
    let applied: Option<LogId> = view
        .get_cf(sm, SM_APPLIED)
        .map_err(StoreError::from)?
        .map(|b| decode("applied", &b))
        .transpose()?
        .flatten();
    let membership: StoredMembership = view
        .get_cf(sm, SM_MEMBERSHIP)
        .map_err(StoreError::from)?
        .map(|b| decode("membership", &b))
        .transpose()?
        .unwrap_or_default();
    let meta = SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
    };
    let name = snapshot_file_name(&meta);
    let tmp = db.snapshot_dir().join(format!("{name}.tmp"));
    let mut w = snapshot::Writer::create(&tmp)?;
    for kv in view.iterator_cf(db.cf(CF_DATA)?, rocksdb::IteratorMode::Start) {
        let (k, v) = kv.map_err(StoreError::from)?;
        w.add(&k, &Record::decode(&v)?)?;
    }
    let count = w.finish()?;
    let path = db.snapshot_dir().join(&name);
    std::fs::rename(&tmp, &path)?;
    StateMachine::set_current_snapshot(db, &meta, &name)?;
    tracing::info!(keys = count, last_log_id = ?meta.last_log_id, "built snapshot");
    Ok(openraft::storage::Snapshot {
        meta,
        snapshot: SnapshotFile::open(path)?,
    })
}
