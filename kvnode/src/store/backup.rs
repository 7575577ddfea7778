//! Backups, and the offline steps that found a cluster on existing state.
//!
//! - `stream`: the state machine as one snapshot in the format of
//!   `kvapi::snapshot`, read from a RocksDB snapshot, so writes go on while
//!   it streams and memory stays flat whatever the data size. `GET
//!   /v1/snapshot` sends it.
//! - `seed_from_snapshot`: an empty data dir given a snapshot's state as the
//!   only voter of a new cluster (`kvnode restore`).
//! - `reseed_own_state`: a data dir's own state made the only voter, every
//!   other member dropped (`kvnode force-new-cluster`), for when a majority
//!   is lost for good.
//!
//! Both offline steps leave what openraft reads as a one-voter cluster whose
//! log was compacted at a log id `at`: the state machine applied up to `at`
//! with the new membership, a snapshot file for `at` (what a member added
//! later is sent), the log empty and purged up to `at`, and this node's
//! committed vote in `at`'s term. Started, the node elects itself.

use std::io::{self, Write};
use std::path::Path;

use kvapi::snapshot::{Encoder, Trailer};
use openraft::vote::{RaftLeaderId, RaftLeaderIdExt};
use rocksdb::WriteBatch;

use super::sm::{self, Head};
use super::{Db, SnapshotFile, StoreError, log};
use crate::raft::types::{
    LogId, MemberInfo, Membership, NodeId, SnapshotMeta, StoredMembership, TypeConfig, Vote,
};

type LeaderId = <TypeConfig as openraft::RaftTypeConfig>::LeaderId;

/// Writes the state machine to `out` as one snapshot. `started` gets the
/// store revision before the first byte is written (the HTTP handler puts
/// it in a header).
pub fn stream<W: Write>(db: &Db, started: impl FnOnce(u64), out: W) -> io::Result<Trailer> {
    // The gate only while the view is taken: a half-installed state is no
    // state, but a view, once taken, is unaffected by a later install, and
    // a slow reader must not hold installs up.
    let view = {
        let _gate = db.install_gate().read().unwrap_or_else(|p| p.into_inner());
        db.db().snapshot()
    };
    let Head {
        revision,
        auth,
        leases,
        ..
    } = sm::read_head(db, &view)?;
    started(revision);
    let mut enc = Encoder::new(out, revision, &auth, &leases)?;
    sm::each_record(db, &view, |k, rev, v| enc.add(k, rev, v))?;
    let (_, trailer) = enc.finish()?;
    Ok(trailer)
}

/// What an offline step left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    /// The log id the new one-voter cluster starts from.
    pub at: LogId,
    pub revision: u64,
    pub keys: u64,
}

/// The log id and membership of a one-voter cluster of `id` founded at
/// term `term`, index `index`.
fn founding(id: NodeId, info: MemberInfo, term: u64, index: u64) -> (LogId, StoredMembership) {
    let at = LogId::new(LeaderId::new_committed(term, id), index);
    let voters = std::collections::BTreeSet::from([id]);
    let nodes = std::collections::BTreeMap::from([(id, info)]);
    // One voter that is also the one node: `new` cannot refuse it.
    let membership = Membership::new(vec![voters], nodes).unwrap_or_default();
    (at, StoredMembership::new(Some(at), membership))
}

/// Makes the log start after `at`, with this node's committed vote, in one
/// synced batch with the applied log id and membership.
fn commit_founding(
    db: &Db,
    id: NodeId,
    at: &LogId,
    membership: &StoredMembership,
) -> Result<(), StoreError> {
    let vote = Vote::new_committed(at.committed_leader_id().term(), id);
    let mut batch = WriteBatch::default();
    sm::set_applied_in(db, &mut batch, at, membership)?;
    log::reseed_in(db, &mut batch, at, &vote)?;
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    db.db().write_opt(batch, &wo)?;
    Ok(())
}

/// What a whole snapshot file says about itself, read and checked (record
/// count and checksum) without recording anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub revision: Option<u64>,
    pub keys: u64,
}

/// Reads snapshot file `snapshot` to its end and checks it: the offline
/// steps refuse a bad file before they change anything in a data dir.
pub fn check_snapshot(snapshot: &Path) -> io::Result<Checked> {
    let s = super::snapshot::read_all(&std::fs::File::open(snapshot)?, |_, _| {})?;
    Ok(Checked {
        revision: s.store_revision,
        keys: s.records,
    })
}

/// Whether `db` was never part of a cluster: at most this node's identity,
/// no cluster id (one is adopted from the first raft RPC of a cluster that
/// added this node), no vote of any term, no log, nothing applied, no keys.
/// What a node that started and was never initialized leaves.
pub fn never_initialized(db: &Db) -> Result<bool, StoreError> {
    if db.cluster_id()?.is_some() || log::last_index(db)?.is_some() {
        return Ok(false);
    }
    if log::stored_vote(db)?.is_some_and(|v| v.leader_id().term() > 0 || v.is_committed()) {
        return Ok(false);
    }
    let view = db.db().snapshot();
    let head = sm::read_head(db, &view)?;
    if head.applied.is_some() || head.membership.membership().voter_ids().next().is_some() {
        return Ok(false);
    }
    let mut keys = view.iterator_cf(db.cf(super::CF_DATA)?, rocksdb::IteratorMode::Start);
    Ok(keys.next().is_none())
}

/// How `seed_from_snapshot` takes the file in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// Copied: the caller's file stays its own (`kvnode restore`).
    Copy,
    /// Hard-linked (copied if that fails): a file of the data dir that the
    /// caller removes afterwards, so the disk holds it once, not twice.
    Link,
}

/// Installs snapshot file `snapshot` (left where it is) into the empty
/// database `db` as the state of a new cluster whose only voter is `id`.
/// The whole file is checked (trailer and checksum) before anything is
/// recorded; on an error the caller discards the data dir.
pub fn seed_from_snapshot(
    db: &Db,
    snapshot: &Path,
    incoming: Incoming,
    id: NodeId,
    info: MemberInfo,
) -> io::Result<Seeded> {
    // Term 1, index 1: what a fresh cluster's first entry would be. The
    // store revision is the snapshot's, so revisions clients saw go on.
    let (at, membership) = founding(id, info, 1, 1);
    let copy = db.snapshot_dir().join("restore-incoming.tmp");
    match std::fs::remove_file(&copy) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    if incoming == Incoming::Copy || std::fs::hard_link(snapshot, &copy).is_err() {
        std::fs::copy(snapshot, &copy)?;
    }
    let meta = SnapshotMeta {
        last_log_id: Some(at),
        last_membership: membership.clone(),
    };
    let installed = sm::install(db, &meta, SnapshotFile::open(copy)?)?;
    commit_founding(db, id, &at, &membership)?;
    Ok(Seeded {
        at,
        revision: installed.revision,
        keys: installed.keys,
    })
}

/// Makes the state this data dir has applied the whole of a one-voter
/// cluster of `id`: the other members are dropped, and log entries the
/// state machine had not applied are discarded (they were not known to be
/// committed, or were not applied here; either way nobody can confirm
/// them now). The cluster id is kept: it is the same data, and members
/// added later join it.
pub fn reseed_own_state(db: &Db, id: NodeId, info: MemberInfo) -> io::Result<Seeded> {
    let vote_term = log::stored_vote(db)?
        .map(|v| v.leader_id().term())
        .unwrap_or(0);
    let last = log::last_index(db)?.unwrap_or(0);
    let mut founded = None;
    let snap = sm::build_as(db, |head| {
        let applied = head.applied.as_ref().map_or(0, |l| l.index);
        // Past anything this node ever logged or voted for, so no entry
        // left anywhere can be mistaken for one of the new cluster's.
        let (at, membership) = founding(id, info, vote_term + 1, applied.max(last) + 1);
        founded = Some((at, membership.clone(), head.revision));
        SnapshotMeta {
            last_log_id: Some(at),
            last_membership: membership,
        }
    })?;
    let (at, membership, revision) =
        founded.ok_or_else(|| io::Error::other("snapshot built without its meta"))?;
    let keys = snapshot_records(&snap.snapshot)?;
    commit_founding(db, id, &at, &membership)?;
    Ok(Seeded { at, revision, keys })
}

fn snapshot_records(file: &SnapshotFile) -> io::Result<u64> {
    Ok(super::snapshot::read_all(&file.file, |_, _| {})?.records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sm::Record;

    fn info(name: &str) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            peer_url: format!("http://{name}:7380"),
            client_url: format!("http://{name}:7379"),
        }
    }

    fn put_raw(db: &Db, key: &str, rev: u64, value: &str) {
        let rec = Record {
            revision: rev,
            value: value.as_bytes().to_vec(),
        };
        db.db()
            .put_cf(db.cf(super::super::CF_DATA).expect("cf"), key, rec.encode())
            .expect("put");
    }

    #[test]
    fn a_streamed_snapshot_seeds_a_new_one_voter_cluster() {
        let src_dir = tempfile::tempdir().expect("tempdir");
        let src = Db::open(src_dir.path()).expect("open");
        for i in 0..50u64 {
            put_raw(&src, &format!("k{i:02}"), i + 1, &format!("v{i}"));
        }
        let mut out = Vec::new();
        let mut seen_rev = None;
        let trailer = stream(&src, |r| seen_rev = Some(r), &mut out).expect("stream");
        assert_eq!(trailer.records, 50);
        assert_eq!(trailer.bytes, out.len() as u64);
        assert!(seen_rev.is_some());
        let file = src_dir.path().join("backup.snap");
        std::fs::write(&file, &out).expect("write");

        let dst_dir = tempfile::tempdir().expect("tempdir");
        let dst = Db::open(dst_dir.path()).expect("open");
        let seeded = seed_from_snapshot(&dst, &file, Incoming::Copy, 7, info("n7")).expect("seed");
        assert_eq!(seeded.keys, 50);
        assert_eq!(seeded.at.index, 1);
        assert_eq!(
            dst.get("k13").expect("get"),
            Some(Record {
                revision: 14,
                value: b"v13".to_vec()
            })
        );
        // The log is empty and starts after `at`, with a committed vote.
        assert_eq!(log::last_index(&dst).expect("last"), None);
        let vote = log::stored_vote(&dst).expect("vote").expect("some");
        assert!(vote.is_committed());
        // The input file is left where it was.
        assert!(file.exists());
    }

    #[test]
    fn a_corrupt_snapshot_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = Db::open(dir.path()).expect("open");
        put_raw(&src, "a", 1, "a value");
        let mut out = Vec::new();
        stream(&src, |_| {}, &mut out).expect("stream");
        // Past the value: the end mark (4 bytes), the count (8), the digest (32).
        let n = out.len();
        out[n - 44 - 2] ^= 1;
        let file = dir.path().join("bad.snap");
        std::fs::write(&file, &out).expect("write");
        let dst_dir = tempfile::tempdir().expect("tempdir");
        let dst = Db::open(dst_dir.path()).expect("open");
        let err =
            seed_from_snapshot(&dst, &file, Incoming::Copy, 7, info("n7")).expect_err("corrupt");
        assert!(err.to_string().contains("checksum"), "{err}");
        assert_eq!(dst.get("a").expect("get"), None);
    }

    #[test]
    fn force_new_cluster_keeps_the_data_and_leaves_one_voter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        put_raw(&db, "kept", 3, "yes");
        let seeded = reseed_own_state(&db, 5, info("n5")).expect("reseed");
        assert_eq!(seeded.keys, 1);
        assert_eq!(seeded.at.committed_leader_id().term(), 1);
        assert_eq!(
            db.get("kept").expect("get").map(|r| r.value),
            Some(b"yes".to_vec())
        );
        let vote = log::stored_vote(&db).expect("vote").expect("some");
        assert_eq!(vote.leader_id().term(), 1);
        // Again: a later recovery moves past the first one's term.
        let again = reseed_own_state(&db, 5, info("n5")).expect("reseed");
        assert_eq!(again.at.committed_leader_id().term(), 2);
        assert!(again.at.index > seeded.at.index);
    }
}
