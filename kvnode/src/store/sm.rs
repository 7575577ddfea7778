//! The state machine, kept in RocksDB (not in memory: the data set may be
//! larger than RAM). Each `apply` call becomes one atomic write batch that
//! carries the data changes together with the last-applied log id and the
//! membership, so a crash can never leave them disagreeing.
//!
//! Revisions follow etcd: the store revision is a counter that advances by
//! one for each command that changes data (every key a command writes gets
//! that revision), so a delete that finds nothing, a failed precondition or
//! a read-only transaction leaves it where it was. It is not the raft log
//! index: blank and membership entries do not advance it either.

use std::collections::HashMap;
use std::io;
use std::time::Instant;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::history::{self, Applied, Event, EventKind};
use super::leases;
use super::snapshot::{self, SnapshotFile};
use super::{CF_DATA, CF_SM, Db, Result, StoreError, decode, decode_u64, encode};
use crate::auth::AuthState;
use crate::lease::{LeaseOp, LeaseTable};
use crate::raft::types::CompareOp;
use crate::raft::types::{
    Cmp, CmpTarget, Command, CommandResult, LogId, Op, OpResult, SnapshotMeta, StoredMembership,
    TypeConfig,
};
use std::sync::Arc;

const SM_APPLIED: &[u8] = b"applied";
const SM_MEMBERSHIP: &[u8] = b"membership";
const SM_SNAPSHOT: &[u8] = b"snapshot";
/// The store revision; absent in data dirs from before it existed, where the
/// applied log index stands in (revisions were log indexes then).
pub(super) const SM_REVISION: &[u8] = b"revision";
/// The auth state (`auth::AuthState`); absent until the first auth change.
const SM_AUTH: &[u8] = b"auth";
/// Present while a snapshot install is under way: names the snapshot file,
/// so that `open` can finish an install a crash interrupted.
const SM_INSTALLING: &[u8] = b"installing";

/// A stored value with the store revision that last wrote it.
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
        let (revision, value) = Self::split(b)?;
        Ok(Record {
            revision,
            value: value.to_vec(),
        })
    }

    /// The revision and the value of an encoded record, borrowed.
    pub fn split(b: &[u8]) -> Result<(u64, &[u8])> {
        if b.len() < 8 {
            return Err(StoreError::Corrupt("data record"));
        }
        let (rev, value) = b.split_at(8);
        Ok((
            super::decode_u64(rev).ok_or(StoreError::Corrupt("data record"))?,
            value,
        ))
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
    revision: u64,
    auth: Arc<AuthState>,
}

/// Decodes a stored auth state; absent or empty is "no auth configured".
fn decode_auth(raw: Option<&[u8]>) -> Result<AuthState> {
    match raw {
        Some(b) if !b.is_empty() => decode("auth", b),
        _ => Ok(AuthState::default()),
    }
}

/// Reads the store revision from `get` (the database or one RocksDB
/// snapshot of it), falling back to the applied index for old data dirs.
fn stored_revision(raw: Option<Vec<u8>>, applied: Option<&LogId>) -> Result<u64> {
    match raw {
        Some(b) => decode_u64(&b).ok_or(StoreError::Corrupt("store revision")),
        None => Ok(applied.map(|l| l.index).unwrap_or(0)),
    }
}

impl StateMachine {
    pub fn open(db: Db) -> Result<Self> {
        if let Some(raw) = db.db().get_cf(db.cf(CF_SM)?, SM_INSTALLING)? {
            let cur: CurrentSnapshot = decode("installing", &raw)?;
            tracing::warn!(file = %cur.file, last_log_id = ?cur.meta.last_log_id,
                "finishing a snapshot install that was interrupted");
            let file = db.snapshot_dir().join(&cur.file);
            let prepared = prepare_sst(&file, &cur.meta)?;
            let _gate = db.install_gate().write().unwrap_or_else(|p| p.into_inner());
            replace_data(&db, &cur, &prepared)?;
        }
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
        let revision = stored_revision(db.db().get_cf(cf, SM_REVISION)?, applied.as_ref())?;
        db.set_applied(revision, applied.as_ref());
        let auth = Arc::new(decode_auth(db.db().get_cf(cf, SM_AUTH)?.as_deref())?);
        db.set_auth(auth.clone());
        db.set_history_floor(history::load_floor(&db, revision)?);
        *db.leases_mut() = leases::load(&db)?;
        Ok(StateMachine {
            db,
            applied,
            membership,
            revision,
            auth,
        })
    }

    fn current_snapshot(&self) -> Result<Option<CurrentSnapshot>> {
        let raw = self.db.db().get_cf(self.db.cf(CF_SM)?, SM_SNAPSHOT)?;
        raw.map(|b| decode("snapshot", &b)).transpose()
    }

    /// Records `file` as the current snapshot and removes older files. Only
    /// called with the install gate held (read or write), so no install is
    /// using the files it removes.
    pub(super) fn set_current_snapshot(db: &Db, meta: &SnapshotMeta, file: &str) -> Result<()> {
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
            // .sst: the ingestion copy of an install that did not finish.
            let stale_sst = name.ends_with(".sst");
            if stale_sst || (name.ends_with(".snap") && name != file) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

/// Looks a key up in the batch being built first, then in what was read
/// ahead for the batch, then in RocksDB.
struct View<'a> {
    db: &'a Db,
    overlay: HashMap<String, Option<Record>>,
    /// The records, as stored before the batch, of the keys its commands
    /// name (read in one MultiGet, see `read_ahead`).
    ahead: HashMap<String, Option<Record>>,
}

impl View<'_> {
    fn get(&self, key: &str) -> Result<Option<Record>> {
        match self.overlay.get(key).or_else(|| self.ahead.get(key)) {
            Some(v) => Ok(v.clone()),
            None => self.db.get_ungated(key),
        }
    }

    /// Reads the keys that the batch's puts, deletes and compares name in
    /// one MultiGet: each apply reads a key's previous record (for its
    /// watch event and lease), and on a store much larger than the block
    /// cache one Get per key was the largest cost of an apply.
    fn read_ahead<'c>(&mut self, cmds: impl Iterator<Item = &'c Command>) -> Result<()> {
        let mut keys: Vec<&str> = Vec::new();
        for cmd in cmds {
            keys.extend(cmd.compare.iter().map(|c| c.key.as_str()));
            for op in cmd.success.iter().chain(&cmd.failure) {
                match op {
                    Op::Put { key, .. } | Op::Delete { key } => keys.push(key),
                    _ => {}
                }
            }
        }
        if keys.len() < 2 {
            return Ok(());
        }
        keys.sort_unstable();
        keys.dedup();
        for (key, rec) in self.db.multi_get_ungated(&keys)? {
            self.ahead.insert(key.to_owned(), rec);
        }
        Ok(())
    }

    /// Every live key in `[start, end)` (`end` None = no upper bound), as
    /// the batch being built sees them: RocksDB's keys merged with the
    /// overlay, where earlier commands of the same batch put or deleted.
    fn keys_in(&self, start: &[u8], end: Option<&[u8]>) -> Result<Vec<String>> {
        let in_range = |k: &[u8]| k >= start && end.is_none_or(|e| k < e);
        let mut ro = rocksdb::ReadOptions::default();
        if let Some(e) = end {
            ro.set_iterate_upper_bound(e.to_vec());
        }
        let iter = self.db.db().iterator_cf_opt(
            self.db.cf(CF_DATA)?,
            ro,
            rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward),
        );
        let mut keys = std::collections::BTreeSet::new();
        for kv in iter {
            let (k, _) = kv?;
            let key = String::from_utf8(k.into_vec()).map_err(|_| StoreError::Corrupt("key"))?;
            if !in_range(key.as_bytes()) {
                break;
            }
            if !matches!(self.overlay.get(&key), Some(None)) {
                keys.insert(key);
            }
        }
        for (k, v) in &self.overlay {
            if v.is_some() && in_range(k.as_bytes()) {
                keys.insert(k.clone());
            }
        }
        Ok(keys.into_iter().collect())
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

/// The lease table as the batch changes it, and which leases changed (to
/// be written with the batch).
struct LeaseWork<'a> {
    table: &'a mut LeaseTable,
    changed: &'a mut std::collections::BTreeSet<u64>,
}

impl LeaseWork<'_> {
    fn attach(&mut self, key: &str, lease: Option<u64>) {
        self.changed.extend(self.table.attach(key, lease));
    }
}

/// Deletes the existing ones of `keys` in the batch and its overlay,
/// recording each as an event of revision `next`, and detaching it from its
/// lease; how many there were.
fn delete_all(
    view: &mut View<'_>,
    batch: &mut WriteBatch,
    keys: impl IntoIterator<Item = String>,
    next: u64,
    events: &mut Vec<Event>,
    leases: &mut LeaseWork<'_>,
) -> Result<u64> {
    let cf = view.db.cf(CF_DATA)?;
    let mut n = 0;
    for key in keys {
        let Some(prev) = view.get(&key)? else {
            continue;
        };
        batch.delete_cf(cf, key.as_bytes());
        view.overlay.insert(key.clone(), None);
        leases.attach(&key, None);
        events.push(deleted(key, next, Some(prev)));
        n += 1;
    }
    Ok(n)
}

fn deleted(key: String, revision: u64, prev: Option<Record>) -> Event {
    Event {
        kind: EventKind::Delete,
        key,
        revision,
        value: Vec::new(),
        prev: prev.map(|r| (r.revision, serde_bytes::ByteBuf::from(r.value))),
    }
}

/// The auth state as the batch being built sees it: copied from the applied
/// one at the first auth change in the batch.
struct AuthWork<'a> {
    applied: &'a AuthState,
    changed: Option<AuthState>,
}

impl AuthWork<'_> {
    fn apply(&mut self, op: crate::auth::AuthOp) -> Option<crate::auth::AuthError> {
        let applied = self.applied;
        self.changed
            .get_or_insert_with(|| applied.clone())
            .apply(op)
            .err()
    }

    /// The auth revision as of this point in the batch.
    fn revision(&self) -> u64 {
        self.changed.as_ref().unwrap_or(self.applied).revision
    }
}

/// Executes one command, adding its writes to `batch`. `revision` is the
/// store revision before it; it advances by one if the command changes data
/// (auth changes have their own revision, as in etcd).
fn execute(
    view: &mut View<'_>,
    batch: &mut WriteBatch,
    cmd: Command,
    revision: &mut u64,
    auth: &mut AuthWork<'_>,
    events: &mut Vec<Event>,
    leases: &mut LeaseWork<'_>,
) -> Result<CommandResult> {
    let cf = view.db.cf(CF_DATA)?;
    if cmd.auth_revision.is_some_and(|r| r != auth.revision()) {
        return Ok(CommandResult {
            revision: *revision,
            auth_stale: true,
            ..CommandResult::default()
        });
    }
    let next = *revision + 1;
    let mut changed = false;
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
    // A put may only name a lease that exists where the entry applies;
    // otherwise nothing of the command runs (etcd: "lease not found").
    let missing = ops.iter().find_map(|op| match op {
        Op::Put {
            lease: Some(id), ..
        } if !leases.table.contains(*id) => Some(*id),
        _ => None,
    });
    if missing.is_some() {
        return Ok(CommandResult {
            revision: *revision,
            missing_lease: missing,
            ..CommandResult::default()
        });
    }
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        results.push(match op {
            Op::Put { key, value, lease } => {
                let prev = view.get(&key)?;
                leases.attach(&key, lease);
                events.push(Event {
                    kind: EventKind::Put,
                    key: key.clone(),
                    revision: next,
                    value: value.clone(),
                    prev: prev.map(|r| (r.revision, serde_bytes::ByteBuf::from(r.value))),
                });
                let rec = Record {
                    revision: next,
                    value,
                };
                batch.put_cf(cf, key.as_bytes(), rec.encode());
                view.overlay.insert(key, Some(rec));
                changed = true;
                OpResult::Put { revision: next }
            }
            Op::Delete { key } => {
                let n = delete_all(view, batch, [key], next, events, leases)?;
                changed |= n > 0;
                OpResult::Delete { deleted: n > 0 }
            }
            Op::DeleteRange { start, end } => {
                let keys = view.keys_in(start.as_bytes(), Some(end.as_bytes()))?;
                let deleted = delete_all(view, batch, keys, next, events, leases)?;
                changed |= deleted > 0;
                OpResult::DeleteRange { deleted }
            }
            Op::DeletePrefix { prefix } => {
                let upper = super::prefix_upper_bound(prefix.as_bytes());
                let keys = view.keys_in(prefix.as_bytes(), upper.as_deref())?;
                let deleted = delete_all(view, batch, keys, next, events, leases)?;
                changed |= deleted > 0;
                OpResult::DeleteRange { deleted }
            }
            Op::Lease(LeaseOp::Grant { id, ttl }) => {
                let granted = leases.table.grant(id, ttl);
                if granted {
                    leases.changed.insert(id);
                }
                OpResult::LeaseGrant { granted }
            }
            Op::Lease(LeaseOp::Revoke { id }) => match leases.table.revoke(id) {
                None => OpResult::LeaseRevoke {
                    found: false,
                    deleted: 0,
                },
                Some(keys) => {
                    leases.changed.insert(id);
                    let deleted = delete_all(view, batch, keys, next, events, leases)?;
                    changed |= deleted > 0;
                    OpResult::LeaseRevoke {
                        found: true,
                        deleted,
                    }
                }
            },
            Op::Get { key } => OpResult::Get {
                found: view
                    .get(&key)?
                    .map(|r| (r.revision, serde_bytes::ByteBuf::from(r.value))),
            },
            Op::Auth(op) => OpResult::Auth {
                error: auth.apply(op),
            },
        });
    }
    if changed {
        *revision = next;
    }
    Ok(CommandResult {
        succeeded,
        revision: *revision,
        results,
        current_revisions,
        ..CommandResult::default()
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
        let mut revision = self.revision;
        let mut membership = None;
        let mut auth = AuthWork {
            applied: &self.auth,
            changed: None,
        };
        let mut events = Vec::new();
        let mut leases_changed = std::collections::BTreeSet::new();
        {
            let mut view = View {
                db: &self.db,
                overlay: HashMap::new(),
                ahead: HashMap::new(),
            };
            // The batch is in memory already (openraft hands over entries it
            // holds); collecting it lets its reads go together.
            let mut items = Vec::new();
            while let Some(item) = entries.next().await {
                items.push(item?);
            }
            view.read_ahead(items.iter().filter_map(|(entry, _)| match &entry.payload {
                EntryPayload::Normal(cmd) => Some(cmd),
                _ => None,
            }))?;
            for (entry, responder) in items {
                let result = match entry.payload {
                    EntryPayload::Blank => CommandResult::default(),
                    EntryPayload::Normal(cmd) => {
                        // Held per command, never across an await.
                        let mut table = self.db.leases_mut();
                        let mut leases = LeaseWork {
                            table: &mut table,
                            changed: &mut leases_changed,
                        };
                        execute(
                            &mut view,
                            &mut batch,
                            cmd,
                            &mut revision,
                            &mut auth,
                            &mut events,
                            &mut leases,
                        )?
                    }
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
        batch.put_cf(sm_cf, SM_REVISION, revision.to_be_bytes());
        if let Some(m) = &membership {
            batch.put_cf(sm_cf, SM_MEMBERSHIP, encode(m)?);
        }
        let auth = auth.changed.map(Arc::new);
        if let Some(a) = &auth {
            batch.put_cf(sm_cf, SM_AUTH, encode(a.as_ref())?);
        }
        history::put_events(&self.db, &mut batch, &events)?;
        leases::write_changed(&self.db, &mut batch, &self.db.leases(), &leases_changed)?;
        crate::crash::point("sm-apply-before-write");
        // Not synced per batch: the synced raft log can rebuild it, and
        // `purge` syncs before dropping any log entry.
        self.db.db().write(batch).map_err(StoreError::from)?;
        self.applied = applied;
        self.revision = revision;
        self.db.set_applied(revision, applied.as_ref());
        if let Some(m) = membership {
            self.membership = m;
        }
        if let Some(a) = auth {
            self.db.set_auth(a.clone());
            self.auth = a;
        }
        if !events.is_empty() {
            self.db.publish(Applied::Events {
                batch: Arc::new(history::Batch {
                    events,
                    ..Default::default()
                }),
                revision,
            });
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
        let started = Instant::now();
        self.revision =
            tokio::task::spawn_blocking(move || install(&db, &meta2, snap).map(|i| i.revision))
                .await
                .map_err(io::Error::other)??;
        self.db
            .timings()
            .snapshot_install
            .observe(started.elapsed().as_secs_f64());
        self.db
            .set_applied(self.revision, meta.last_log_id.as_ref());
        self.auth = self.db.auth();
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

/// Replaces the whole state machine with a snapshot without holding it in
/// memory: the records are written into an SST file that RocksDB ingests.
/// Deleting the old data, ingesting and recording the new applied index and
/// membership are three writes, not one batch, so a synced marker naming the
/// snapshot file goes first and `StateMachine::open` repeats the steps (each
/// can be redone) if a crash falls between them.
pub(super) fn install(db: &Db, meta: &SnapshotMeta, snap: SnapshotFile) -> io::Result<Installed> {
    // Taken first: a snapshot being built meanwhile would delete our files
    // when it becomes the current one.
    let _gate = db.install_gate().write().unwrap_or_else(|p| p.into_inner());
    let name = snapshot_file_name(meta);
    let dest = db.snapshot_dir().join(&name);
    if snap.path != dest {
        std::fs::rename(&snap.path, &dest)?;
    }
    let prepared = prepare_sst(&dest, meta)?;
    let cur = CurrentSnapshot {
        meta: meta.clone(),
        file: name,
    };
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    db.db()
        .put_cf_opt(db.cf(CF_SM)?, SM_INSTALLING, encode(&cur)?, &wo)
        .map_err(StoreError::from)?;
    crate::crash::point("snapshot-install-after-marker");
    replace_data(db, &cur, &prepared)?;
    Ok(Installed {
        revision: prepared.store_revision,
        keys: prepared.records,
    })
}

/// What an install put in place.
#[derive(Debug)]
pub(super) struct Installed {
    /// The store revision the snapshot carried.
    pub revision: u64,
    pub keys: u64,
}

/// A snapshot file made ready for ingestion.
struct Prepared {
    /// `None` for a snapshot without records (RocksDB cannot write an
    /// empty SST).
    sst: Option<std::path::PathBuf>,
    store_revision: u64,
    records: u64,
    /// The snapshot's auth state and leases, checked to decode before
    /// anything is replaced.
    auth: AuthState,
    leases: Vec<(u64, crate::lease::Lease)>,
}

/// Writes the records of snapshot file `snap` into a sorted SST file next
/// to it. Fails on unsorted or duplicate keys, which a snapshot built by
/// `build` never has.
fn prepare_sst(snap: &std::path::Path, meta: &SnapshotMeta) -> io::Result<Prepared> {
    let sst = snap.with_extension("sst");
    let opts = rocksdb::Options::default();
    let mut w = rocksdb::SstFileWriter::create(&opts);
    w.open(&sst).map_err(StoreError::from)?;
    let mut failed = None;
    let summary = snapshot::read_all(&std::fs::File::open(snap)?, |k, rec| {
        if failed.is_none()
            && let Err(e) = w.put(&k, rec.encode())
        {
            failed = Some(e);
        }
    })?;
    if let Some(e) = failed {
        let _ = std::fs::remove_file(&sst);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot {}: {e}", snap.display()),
        ));
    }
    // A version-1 snapshot's revisions were log indexes, none above its last.
    let store_revision = summary
        .store_revision
        .unwrap_or_else(|| meta.last_log_id.as_ref().map(|l| l.index).unwrap_or(0));
    let auth = decode_auth(Some(summary.auth.as_slice()))?;
    let leases = leases::undump(&summary.leases)?;
    if summary.records == 0 {
        drop(w);
        let _ = std::fs::remove_file(&sst);
        return Ok(Prepared {
            sst: None,
            store_revision,
            records: 0,
            auth,
            leases,
        });
    }
    w.finish().map_err(StoreError::from)?;
    tracing::debug!(keys = summary.records, sst = %sst.display(), "snapshot converted for ingestion");
    Ok(Prepared {
        sst: Some(sst),
        store_revision,
        records: summary.records,
        auth,
        leases,
    })
}

/// The install steps after the marker: empty `data`, ingest the SST, then
/// record applied index, store revision and membership and drop the marker
/// in one synced batch. The caller holds the install gate.
fn replace_data(db: &Db, cur: &CurrentSnapshot, prepared: &Prepared) -> io::Result<()> {
    let data = db.cf(CF_DATA)?;
    // Keys are UTF-8, which never contains 0xFF: this range is every key.
    db.db()
        .delete_range_cf(data, &b""[..], &b"\xff"[..])
        .map_err(StoreError::from)?;
    crate::crash::point("snapshot-install-after-delete");
    if let Some(sst) = &prepared.sst {
        let mut io = rocksdb::IngestExternalFileOptions::default();
        // The SST is rebuilt from the snapshot file if this has to be redone.
        io.set_move_files(true);
        db.db()
            .ingest_external_file_cf_opts(data, &io, vec![sst])
            .map_err(StoreError::from)?;
        crate::crash::point("snapshot-install-after-ingest");
    }
    let sm = db.cf(CF_SM)?;
    let mut batch = WriteBatch::default();
    batch.put_cf(sm, SM_APPLIED, encode(&cur.meta.last_log_id)?);
    batch.put_cf(sm, SM_MEMBERSHIP, encode(&cur.meta.last_membership)?);
    batch.put_cf(sm, SM_REVISION, prepared.store_revision.to_be_bytes());
    batch.put_cf(sm, SM_AUTH, encode(&prepared.auth)?);
    // The revisions the snapshot skipped were never applied here: the
    // history restarts after it.
    let floor = prepared.store_revision + 1;
    history::reset_in(db, &mut batch, floor)?;
    leases::replace_in(db, &mut batch, &prepared.leases)?;
    batch.delete_cf(sm, SM_INSTALLING);
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    db.db().write_opt(batch, &wo).map_err(StoreError::from)?;
    db.set_auth(Arc::new(prepared.auth.clone()));
    *db.leases_mut() = LeaseTable::from_leases(prepared.leases.iter().cloned());
    db.set_history_floor(floor);
    db.publish(Applied::Reset { floor });
    StateMachine::set_current_snapshot(db, &cur.meta, &cur.file)?;
    tracing::info!(last_log_id = ?cur.meta.last_log_id, file = %cur.file, "installed snapshot");
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
        let started = Instant::now();
        let snapshot = tokio::task::spawn_blocking(move || build(&db))
            .await
            .map_err(io::Error::other)??;
        self.db
            .timings()
            .snapshot_build
            .observe(started.elapsed().as_secs_f64());
        Ok(snapshot)
    }
}

/// Dumps the state machine as of one RocksDB snapshot, so data, applied
/// index and membership in the file all describe the same moment.
fn build(db: &Db) -> io::Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>> {
    build_as(db, |head| SnapshotMeta {
        last_log_id: head.applied,
        last_membership: head.membership.clone(),
    })
}

/// `build`, recording the file under the meta `meta` makes of the state
/// (`backup::reseed_own_state` gives it a new log id and membership).
pub(super) fn build_as(
    db: &Db,
    meta: impl FnOnce(&Head) -> SnapshotMeta,
) -> io::Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>> {
    // Not during an install (its intermediate states are no state at all),
    // and an install waits for this dump before it replaces files.
    let _gate = db.install_gate().read().unwrap_or_else(|p| p.into_inner());
    let view = db.db().snapshot();
    let head = read_head(db, &view)?;
    let meta = meta(&head);
    let name = snapshot_file_name(&meta);
    let tmp = db.snapshot_dir().join(format!("{name}.tmp"));
    let mut w = snapshot::Writer::create(&tmp, head.revision, &head.auth, &head.leases)?;
    each_record(db, &view, |k, rev, v| w.add(k, rev, v))?;
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

/// What a snapshot of the state machine starts with, read from one view.
pub(super) struct Head {
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    pub revision: u64,
    /// Encoded auth state (empty for none) and lease table.
    pub auth: Vec<u8>,
    pub leases: Vec<u8>,
}

pub(super) fn read_head(db: &Db, view: &rocksdb::Snapshot<'_>) -> io::Result<Head> {
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
    let revision = stored_revision(
        view.get_cf(sm, SM_REVISION).map_err(StoreError::from)?,
        applied.as_ref(),
    )?;
    let auth = view
        .get_cf(sm, SM_AUTH)
        .map_err(StoreError::from)?
        .unwrap_or_default();
    let leases = leases::dump(db, view)?;
    Ok(Head {
        applied,
        membership,
        revision,
        auth,
        leases,
    })
}

/// Calls `f(key, revision, value)` for every key of the view, in order,
/// without copying values out of RocksDB's buffers.
pub(super) fn each_record(
    db: &Db,
    view: &rocksdb::Snapshot<'_>,
    mut f: impl FnMut(&[u8], u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    for kv in view.iterator_cf(db.cf(CF_DATA)?, rocksdb::IteratorMode::Start) {
        let (k, v) = kv.map_err(StoreError::from)?;
        let (rev, value) = Record::split(&v)?;
        f(&k, rev, value)?;
    }
    Ok(())
}

/// Records the state machine as a one-voter cluster at `at` (in `batch`):
/// the offline steps of `backup.rs`.
pub(super) fn set_applied_in(
    db: &Db,
    batch: &mut WriteBatch,
    at: &LogId,
    membership: &StoredMembership,
) -> Result<()> {
    let sm = db.cf(CF_SM)?;
    batch.put_cf(sm, SM_APPLIED, encode(&Some(*at))?);
    batch.put_cf(sm, SM_MEMBERSHIP, encode(membership)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::NodeId;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(openraft::testing::log_id::<TypeConfig>(
                2,
                NodeId::from(1u64),
                index,
            )),
            last_membership: StoredMembership::default(),
        }
    }

    /// The auth state every test snapshot carries: one user.
    fn auth_blob() -> Vec<u8> {
        let mut a = AuthState::default();
        a.apply(crate::auth::AuthOp::UserAdd {
            name: "snap-user".into(),
            password_hash: None,
            roles: vec![],
        })
        .expect("add");
        encode(&a).expect("encode")
    }

    /// The lease table every test snapshot carries: lease 7 holding "k".
    fn lease_blob() -> Vec<u8> {
        let mut t = LeaseTable::default();
        t.grant(7, 30);
        t.attach("k", Some(7));
        let leases: Vec<_> = t.iter().map(|(id, l)| (id, l.clone())).collect();
        encode(&leases).expect("encode")
    }

    /// A snapshot file in the receiver's spool location, as peer.rs leaves it.
    fn snapshot_file(db: &Db, records: &[(&str, u64, &str)]) -> SnapshotFile {
        let path = db.snapshot_dir().join("incoming-test.tmp");
        let mut w =
            snapshot::Writer::create(&path, 77, &auth_blob(), &lease_blob()).expect("create");
        for (k, rev, v) in records {
            w.add(k.as_bytes(), *rev, v.as_bytes()).expect("add");
        }
        w.finish().expect("finish");
        SnapshotFile::open(path).expect("open")
    }

    fn put(db: &Db, key: &str, rev: u64, value: &str) {
        let rec = Record {
            revision: rev,
            value: value.as_bytes().to_vec(),
        };
        db.db()
            .put_cf(db.cf(CF_DATA).expect("cf"), key, rec.encode())
            .expect("put");
    }

    fn contents(db: &Db) -> Vec<(String, u64, String)> {
        let (items, more, _) = db.scan("", "", 1000, false).expect("scan");
        assert!(more.is_none());
        items
            .into_iter()
            .map(|(k, r)| (k, r.revision, String::from_utf8(r.value).expect("utf8")))
            .collect()
    }

    fn files(db: &Db) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(db.snapshot_dir())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn install_replaces_every_key_and_records_the_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        put(&db, "a", 1, "old-a");
        put(&db, "b", 2, "old-b");
        put(&db, "zz", 3, "old-zz");
        let snap = snapshot_file(&db, &[("b", 7, "new-b"), ("c", 8, "new-c")]);
        install(&db, &meta(9), snap).expect("install");

        assert_eq!(
            contents(&db),
            vec![
                ("b".into(), 7, "new-b".into()),
                ("c".into(), 8, "new-c".into())
            ]
        );
        let sm = StateMachine::open(db.clone()).expect("reopen sm");
        assert_eq!(sm.applied.map(|l| l.index), Some(9));
        // The counter comes from the file, not from the log index or keys.
        assert_eq!(sm.revision, 77);
        // Users and roles come with the snapshot, published to the API too.
        assert!(sm.auth.users.contains_key("snap-user"));
        assert!(db.auth().users.contains_key("snap-user"));
        // Leases too, kept on disk: the reopened state machine reads them.
        assert_eq!(db.leases().lease_of("k"), Some(7));
        *db.leases_mut() = LeaseTable::default();
        StateMachine::open(db.clone()).expect("reopen sm");
        assert_eq!(db.leases().get(7).map(|l| l.ttl), Some(30));
        // The history restarts after the snapshot's revision.
        assert_eq!(db.history_floor(), 78);
        let cur = sm.current_snapshot().expect("read").expect("current");
        assert_eq!(cur.meta.last_log_id.map(|l| l.index), Some(9));
        // Only the installed snapshot is left: no spool file, no SST copy.
        assert_eq!(files(&db), vec![cur.file.clone()]);
        assert!(
            db.db()
                .get_cf(db.cf(CF_SM).expect("cf"), SM_INSTALLING)
                .expect("get")
                .is_none()
        );
    }

    /// A put stamped with auth revision `r` (None: unstamped).
    fn stamped_put(key: &str, r: Option<u64>) -> Command {
        Command {
            success: vec![Op::Put {
                key: key.into(),
                value: b"v".to_vec(),
                lease: None,
            }],
            auth_revision: r,
            ..Command::default()
        }
    }

    #[test]
    fn keys_read_ahead_give_the_stored_records_and_the_batch_still_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        put(&db, "a", 1, "one");
        put(&db, "c", 2, "two");
        let mut view = View {
            db: &db,
            overlay: HashMap::new(),
            ahead: HashMap::new(),
        };
        let mut cmd = stamped_put("b", None);
        cmd.success.push(Op::Delete { key: "a".into() });
        cmd.compare.push(Cmp {
            key: "c".into(),
            op: CompareOp::Eq,
            target: CmpTarget::Revision(2),
        });
        let puts = [stamped_put("a", None), cmd];
        view.read_ahead(puts.iter()).expect("read ahead");
        let seen = |v: &View<'_>, k: &str| v.get(k).expect("get").map(|r| (r.revision, r.value));
        // All three read in one go, absent keys included: no Get later.
        assert_eq!(view.ahead.len(), 3, "{:?}", view.ahead.keys());
        assert_eq!(view.ahead.get("b"), Some(&None));
        assert_eq!(seen(&view, "a"), Some((1, b"one".to_vec())));
        assert_eq!(seen(&view, "c"), Some((2, b"two".to_vec())));
        // What the batch writes is what later commands of it see.
        view.overlay.insert(
            "a".into(),
            Some(Record {
                revision: 9,
                value: b"nine".to_vec(),
            }),
        );
        assert_eq!(seen(&view, "a"), Some((9, b"nine".to_vec())));
        view.overlay.insert("c".into(), None);
        assert_eq!(seen(&view, "c"), None);
    }

    #[test]
    fn a_command_authorized_against_an_older_auth_state_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        let applied = AuthState::default();
        let mut auth = AuthWork {
            applied: &applied,
            changed: None,
        };
        let mut view = View {
            db: &db,
            overlay: HashMap::new(),
            ahead: HashMap::new(),
        };
        let mut batch = WriteBatch::default();
        let mut revision = 3;
        let mut table = LeaseTable::default();
        let mut changed = Default::default();
        let mut leases = LeaseWork {
            table: &mut table,
            changed: &mut changed,
        };
        macro_rules! run {
            ($cmd:expr) => {
                execute(
                    &mut view,
                    &mut batch,
                    $cmd,
                    &mut revision,
                    &mut auth,
                    &mut Vec::new(),
                    &mut leases,
                )
                .expect("execute")
            };
        }

        let res = run!(stamped_put("a", Some(0)));
        assert!(!res.auth_stale && res.succeeded && revision == 4, "{res:?}");
        // An auth change earlier in the same batch moves the revision on:
        // a command checked before it is refused, whole and without effect.
        let add = Command {
            success: vec![Op::Auth(crate::auth::AuthOp::RoleAdd { name: "r".into() })],
            ..Command::default()
        };
        run!(add);
        assert_eq!(auth.revision(), 1);
        let res = run!(stamped_put("b", Some(0)));
        assert!(
            res.auth_stale && !res.succeeded && res.results.is_empty(),
            "{res:?}"
        );
        assert_eq!(revision, 4, "a refused command takes no store revision");
        assert!(view.get("b").expect("get").is_none());
        // Checked against the current state, or not stamped (entries from
        // before the stamp existed): executed.
        assert!(!run!(stamped_put("b", Some(1))).auth_stale);
        assert!(!run!(stamped_put("c", None)).auth_stale);
        assert_eq!(revision, 6);
    }

    #[test]
    fn empty_snapshot_empties_the_state_machine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        put(&db, "a", 1, "x");
        let snap = snapshot_file(&db, &[]);
        install(&db, &meta(4), snap).expect("install");
        assert!(contents(&db).is_empty());
    }

    #[test]
    fn unsorted_snapshot_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        put(&db, "a", 1, "kept");
        let snap = snapshot_file(&db, &[("b", 2, "x"), ("a", 3, "y")]);
        let err = install(&db, &meta(5), snap).expect_err("unsorted keys");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert_eq!(contents(&db), vec![("a".into(), 1, "kept".into())]);
        assert!(StateMachine::open(db).expect("sm").applied.is_none());
    }

    /// A crash after the marker (here: right after the old data was deleted,
    /// before the ingest) is finished by the next open.
    #[test]
    fn interrupted_install_is_finished_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = Db::open(dir.path()).expect("open");
            put(&db, "a", 1, "old-a");
            put(&db, "q", 2, "old-q");
            let snap = snapshot_file(&db, &[("k1", 5, "v1"), ("k2", 6, "v2")]);
            let name = "00000000000000000006-crash.snap";
            std::fs::rename(&snap.path, db.snapshot_dir().join(name)).expect("rename");
            let cur = CurrentSnapshot {
                meta: meta(6),
                file: name.into(),
            };
            let sm = db.cf(CF_SM).expect("cf");
            db.db()
                .put_cf(sm, SM_INSTALLING, encode(&cur).expect("encode"))
                .expect("marker");
            db.db()
                .delete_range_cf(db.cf(CF_DATA).expect("cf"), &b"a"[..], &b"b"[..])
                .expect("partial delete");
        }
        let db = Db::open(dir.path()).expect("reopen");
        let sm = StateMachine::open(db.clone()).expect("sm finishes the install");
        assert_eq!(sm.applied.map(|l| l.index), Some(6));
        assert_eq!(
            contents(&db),
            vec![("k1".into(), 5, "v1".into()), ("k2".into(), 6, "v2".into())]
        );
        assert_eq!(
            sm.current_snapshot()
                .expect("read")
                .map(|c| c.file)
                .as_deref(),
            Some("00000000000000000006-crash.snap")
        );
    }

    #[test]
    fn client_reads_answer_retry_while_an_install_holds_the_gate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        put(&db, "a", 1, "x");
        {
            let _held = db.install_gate().write().expect("gate");
            assert!(matches!(db.get("a"), Err(StoreError::Installing)));
            assert!(matches!(
                db.scan("", "", 10, false),
                Err(StoreError::Installing)
            ));
        }
        assert_eq!(db.get("a").expect("get").map(|r| r.revision), Some(1));
    }
}
