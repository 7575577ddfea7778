//! The offline tools, run with the node stopped on its data dir:
//! `kvnode restore` (a new cluster's first member from a snapshot) and
//! `kvnode force-new-cluster` (the survivors' last resort when a majority
//! is gone). Both take the node's own flags (--data-dir, --id, --name,
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

/// Left in the data dir while `restore` works: a node refuses to start on
/// it, and `restore` may start over.
pub const RESTORE_MARKER: &str = "RESTORE-INCOMPLETE";

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(
        "data dir {0} already holds a node's data: restore builds the first member of a new \
         cluster and never overwrites a node (give an empty or new --data-dir)"
    )]
    NotEmpty(PathBuf),
    #[error("data dir {0} holds no node: nothing to recover")]
    NoNode(PathBuf),
    #[error("snapshot {path}: {source}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
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
/// only voter of a new cluster (new cluster id, node id from `--id` or
/// generated) holding the snapshot's keys, users, roles and leases. Grow
/// the cluster from there by adding members as learners. Returns what to
/// print.
pub fn restore(config: &Config, snapshot: &Path) -> Result<String, OfflineError> {
    let snap_err = |source| OfflineError::Snapshot {
        path: snapshot.to_path_buf(),
        source,
    };
    std::fs::File::open(snapshot).map_err(snap_err)?;
    let dir = &config.data_dir;
    let marker = dir.join(RESTORE_MARKER);
    if marker.exists() {
        // An earlier restore was interrupted: what it left is ours to redo.
        discard(dir)?;
    } else if dir.join("db").exists() {
        return Err(OfflineError::NotEmpty(dir.clone()));
    }
    std::fs::create_dir_all(dir)?;
    std::fs::File::create(&marker)?.sync_all()?;
    let built = (|| {
        let db = open(config)?;
        let identity = Identity::load(db.clone(), config.id, None)?;
        let cluster_id = new_cluster_id();
        identity.set_cluster_id(&cluster_id)?;
        let seeded = backup::seed_from_snapshot(&db, snapshot, identity.node_id, member(config))
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
            // Nothing half-made is left to be started by mistake.
            discard(dir)?;
            std::fs::remove_file(&marker)?;
            return Err(e);
        }
    };
    std::fs::remove_file(&marker)?;
    Ok(format!(
        "restored {} keys at revision {} into {}: node {id} is the only voter of new cluster \
         {cluster_id}; start kvnode on this data dir, then add members as learners",
        seeded.keys,
        seeded.revision,
        dir.display()
    ))
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
