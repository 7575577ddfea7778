//! The offline tools, run with the node stopped on its data dir:
//! `kvnode restore` (a new cluster's first member from a snapshot) and
//! `kvnode force-new-cluster` (the survivors' last resort when a majority
//! is gone). A running node asks for either through the API (`POST
//! /v1/cluster/restore`, `POST /v1/cluster/force-new-cluster`) by leaving
//! a file in its data dir and exiting; the step runs at its next start,
//! before it serves (`pending_restore`, `pending_force_new_cluster`). Both take the node's own flags (--data-dir, --id, --name,
//! --advertise-*-url), so the member they record is the one that starts.
//! The storage steps are in `store::backup`.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::raft::identity::{Identity, IdentityError, new_cluster_id};
use crate::raft::types::MemberInfo;
use crate::store::{self, Db, StoreError, backup};

/// Left in the data dir by `POST /v1/cluster/force-new-cluster`: the node
/// runs `force_new_cluster` when it next starts (it cannot while it runs:
/// RocksDB is open and raft is using the log it rewrites).
pub const FORCE_NEW_CLUSTER_MARKER: &str = "FORCE-NEW-CLUSTER";

/// At start: the recovery an admin asked for before the last exit, if any.
/// Returns what it did. The marker goes only after the rewrite is durable,
/// so a crash in between repeats it (each run founds a newer term).
pub fn pending_force_new_cluster(config: &Config) -> Result<Option<String>, OfflineError> {
    let marker = config.data_dir.join(FORCE_NEW_CLUSTER_MARKER);
    if !marker.exists() {
        return Ok(None);
    }
    let done = force_new_cluster(config)?;
    std::fs::remove_file(&marker)?;
    Ok(Some(done))
}

/// Left in the data dir while a restore works: a node refuses to start on
/// it, and the restore may start over. It holds the node id being given to
/// the data dir (when one is known), so that starting over keeps it.
pub const RESTORE_MARKER: &str = "RESTORE-INCOMPLETE";

/// Left in the data dir by `POST /v1/cluster/restore`: the snapshot the
/// node received, whole and checked. At its next start the node seeds its
/// data dir from it (`pending_restore`) before it serves.
pub const RESTORE_PENDING: &str = "RESTORE-PENDING.snap";

/// Where `POST /v1/cluster/restore` writes the snapshot while it arrives;
/// renamed to `RESTORE_PENDING` once whole, removed when it is not.
pub const RESTORE_UPLOAD: &str = "RESTORE-UPLOAD.part";

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(
        "data dir {0} already holds a node's data: restore builds the first member of a new \
         cluster and never overwrites a node (give an empty or new --data-dir)"
    )]
    NotEmpty(PathBuf),
    #[error(
        "data dir {0} already holds a node's data and cannot be opened ({1}): is a node running \
         on it? restore never overwrites a node"
    )]
    InUse(PathBuf, #[source] StoreError),
    #[error("data dir {0} holds no node: nothing to recover")]
    NoNode(PathBuf),
    #[error("snapshot {path}: {source}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the restore received by POST /v1/cluster/restore cannot be applied: {source}; the data \
         dir was left as it was: remove {path} to start this node without it"
    )]
    Pending {
        path: PathBuf,
        #[source]
        source: Box<OfflineError>,
    },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn member(config: &Config) -> MemberInfo {
    MemberInfo {
        name: config.name(),
        peer_url: config.peer_url(),
        client_url: config.client_url(),
    }
}

fn open(config: &Config) -> Result<Db, StoreError> {
    Db::open_with(
        &config.data_dir,
        store::MemoryBudget {
            block_cache_bytes: config.rocksdb_block_cache_mb << 20,
            memtable_bytes: config.rocksdb_memtable_mb << 20,
        },
    )
}

/// `kvnode restore --snapshot FILE`: makes `--data-dir` the data dir of the
/// only voter of a new cluster (new cluster id, node id from `--id`, the
/// one already in the data dir, or generated) holding the snapshot's keys,
/// users, roles and leases. Grow the cluster from there by adding members
/// as learners. Returns what to print.
pub fn restore(config: &Config, snapshot: &Path) -> Result<String, OfflineError> {
    seed_new_cluster(config, snapshot, Origin::Offline)
}

/// At start: the restore `POST /v1/cluster/restore` received before the
/// last exit, if any. Returns what it did. The pending file goes only once
/// the seeded data dir is durable, and the restore marker (which keeps the
/// node id) only after the pending file: a crash before the file is gone
/// seeds again from it, a crash after leaves a marker saying so. A file
/// that cannot be applied (damaged since, or a data dir that joined a
/// cluster meanwhile) is an error: the node must not start as if nothing
/// had been asked.
pub fn pending_restore(config: &Config) -> Result<Option<String>, OfflineError> {
    let dir = &config.data_dir;
    // An upload cut by a crash or a kill: nothing refers to it.
    match std::fs::remove_file(dir.join(RESTORE_UPLOAD)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let pending = dir.join(RESTORE_PENDING);
    let marker = dir.join(RESTORE_MARKER);
    if !pending.exists() {
        if read_marker(&marker)?.is_some_and(|m| m.from_api) {
            // Seeded, and the file removed; only the marker was left.
            std::fs::remove_file(&marker)?;
            sync_dir(dir)?;
            return Ok(Some(
                "finished the restore seeded before the last exit".into(),
            ));
        }
        return Ok(None);
    }
    let done =
        seed_new_cluster(config, &pending, Origin::Api).map_err(|e| OfflineError::Pending {
            path: pending.clone(),
            source: Box::new(e),
        })?;
    crate::crash::point("restore-seeded-before-pending-removed");
    std::fs::remove_file(&pending)?;
    sync_dir(dir)?;
    std::fs::remove_file(&marker)?;
    sync_dir(dir)?;
    Ok(Some(done))
}

/// Which restore is seeding a data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// `kvnode restore --snapshot FILE`: the file is the caller's.
    Offline,
    /// `POST /v1/cluster/restore`, applied at start from `RESTORE_PENDING`.
    Api,
}

/// What a restore marker says: the node id being given to the data dir
/// (when known) and whether `pending_restore` wrote it.
struct Marker {
    id: Option<u64>,
    from_api: bool,
}

/// Marker format: the node id (or an empty line), then `api` or `offline`.
/// An empty file (an older release's marker) is an offline restore
/// without an id.
fn read_marker(marker: &Path) -> std::io::Result<Option<Marker>> {
    let text = match std::fs::read_to_string(marker) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut lines = text.lines();
    let id = lines.next().and_then(|l| l.trim().parse().ok());
    let from_api = lines.next().map(str::trim) == Some("api");
    Ok(Some(Marker { id, from_api }))
}

/// Writes the restore marker durably.
fn write_marker(marker: &Path, id: Option<u64>, origin: Origin) -> std::io::Result<()> {
    let mut f = std::fs::File::create(marker)?;
    let id = id.map(|i| i.to_string()).unwrap_or_default();
    let origin = match origin {
        Origin::Offline => "offline",
        Origin::Api => "api",
    };
    std::io::Write::write_all(&mut f, format!("{id}\n{origin}\n").as_bytes())?;
    f.sync_all()?;
    if let Some(dir) = marker.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// What both restores share: checks the whole snapshot file, then makes
/// the data dir the only voter of a new cluster holding it. A data dir
/// that holds nothing but a node's identity (a node that started and was
/// never initialized) keeps that node id; one that holds more is refused.
/// The marker stays for `pending_restore` (an API restore) to remove.
fn seed_new_cluster(
    config: &Config,
    snapshot: &Path,
    origin: Origin,
) -> Result<String, OfflineError> {
    let snap_err = |source| OfflineError::Snapshot {
        path: snapshot.to_path_buf(),
        source,
    };
    // Nothing is touched for a missing, truncated or corrupt file.
    backup::check_snapshot(snapshot).map_err(snap_err)?;
    let dir = &config.data_dir;
    let marker = dir.join(RESTORE_MARKER);
    let kept = if let Some(m) = read_marker(&marker)? {
        // An earlier restore was interrupted: what it left is ours to
        // redo, with the node id it had settled on.
        m.id
    } else if dir.join("db").exists() {
        // A node running on it holds RocksDB's lock.
        let db = open(config).map_err(|e| OfflineError::InUse(dir.clone(), e))?;
        if !backup::never_initialized(&db)? {
            return Err(OfflineError::NotEmpty(dir.clone()));
        }
        db.node_id()?
    } else {
        None
    };
    let requested = match (kept, config.id) {
        (Some(stored), Some(requested)) if stored != requested => {
            return Err(IdentityError::Mismatch { stored, requested }.into());
        }
        (kept, flag) => kept.or(flag),
    };
    std::fs::create_dir_all(dir)?;
    write_marker(&marker, requested, origin)?;
    // A clean slate: the identity is written again below, with the same id.
    discard(dir)?;
    let built = (|| {
        let db = open(config)?;
        let identity = Identity::load(db.clone(), requested, None)?;
        if requested.is_none() {
            write_marker(&marker, Some(identity.node_id), origin)?;
        }
        let cluster_id = new_cluster_id();
        identity.set_cluster_id(&cluster_id)?;
        let incoming = match origin {
            Origin::Offline => backup::Incoming::Copy,
            Origin::Api => backup::Incoming::Link,
        };
        let seeded =
            backup::seed_from_snapshot(&db, snapshot, incoming, identity.node_id, member(config))
                .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => snap_err(e),
                _ => OfflineError::Io(e),
            })?;
        db.sync()?;
        Ok::<_, OfflineError>((identity.node_id, cluster_id, seeded))
    })();
    let (id, cluster_id, seeded) = match built {
        Ok(b) => b,
        Err(e) => {
            // Nothing half-made is left to be started by mistake; the
            // marker stays, so a node refuses this dir and a restore run
            // again starts over with the same node id.
            discard(dir)?;
            return Err(e);
        }
    };
    if origin == Origin::Offline {
        std::fs::remove_file(&marker)?;
        sync_dir(dir)?;
    }
    Ok(format!(
        "restored {} keys at revision {} into {}: node {id} is the only voter of new cluster \
         {cluster_id}; start kvnode on this data dir, then add members as learners",
        seeded.keys,
        seeded.revision,
        dir.display()
    ))
}

/// Makes the creations, renames and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes what a restore creates in a data dir.
fn discard(dir: &Path) -> std::io::Result<()> {
    for sub in ["db", "snapshots"] {
        match std::fs::remove_dir_all(dir.join(sub)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// `kvnode force-new-cluster`: keeps this data dir's data and makes its
/// node the only voter of its cluster (see `backup::reseed_own_state` for
/// what is dropped). For a cluster that has lost a majority for good.
pub fn force_new_cluster(config: &Config) -> Result<String, OfflineError> {
    let dir = &config.data_dir;
    if !dir.join("db").exists() || dir.join(RESTORE_MARKER).exists() {
        return Err(OfflineError::NoNode(dir.clone()));
    }
    let db = open(config)?;
    let Some(id) = db.node_id()? else {
        return Err(OfflineError::NoNode(dir.clone()));
    };
    if let Some(requested) = config.id.filter(|r| *r != id) {
        return Err(IdentityError::Mismatch {
            stored: id,
            requested,
        }
        .into());
    }
    let seeded = backup::reseed_own_state(&db, id, member(config))?;
    db.sync()?;
    Ok(format!(
        "node {id} is now the only voter of cluster {} with {} keys at revision {} (log \
         restarts after index {}); the other members were removed: start it, then add new \
         members as learners",
        db.cluster_id()?.unwrap_or_else(|| "(none)".into()),
        seeded.keys,
        seeded.revision,
        seeded.at.index
    ))
}
