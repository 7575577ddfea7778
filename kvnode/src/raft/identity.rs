//! Who this node is: its raft id (kept in the data dir, never reused for an
//! empty one) and the id of the cluster it belongs to.

use std::net::IpAddr;
use std::sync::RwLock;

use crate::store::{Db, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "data dir belongs to node {stored} but --id {requested} was given; \
         refusing to start (wipe the data dir to join as a new node)"
    )]
    Mismatch { stored: u64, requested: u64 },
    #[error("node id 0 is reserved")]
    Zero,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
pub struct Identity {
    pub node_id: u64,
    cluster_id: RwLock<Option<String>>,
    db: Db,
    peer_bind_ip: Option<IpAddr>,
}

/// Why a peer RPC is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
/// Why a peer RPC was refused. The messages go back to the caller, so they
/// name no ids: a prober learns nothing about the node it reached.
pub enum PeerReject {
    #[error("rpc addressed to another node")]
    WrongNode { target: u64, me: u64 },
    #[error("rpc for another cluster")]
    WrongCluster { theirs: String, mine: String },
    #[error("rpc without a target node id")]
    MissingTarget,
    #[error("rpc without a cluster id")]
    MissingCluster,
}

impl Identity {
    /// Loads the id from the data dir, or adopts `requested` / a fresh
    /// random id on an empty one. Ids stay below 2^53 so that JSON clients
    /// that parse numbers as doubles see them exactly.
    pub fn load(
        db: Db,
        requested: Option<u64>,
        peer_bind_ip: Option<IpAddr>,
    ) -> Result<Self, IdentityError> {
        if requested == Some(0) {
            return Err(IdentityError::Zero);
        }
        let node_id = match (db.node_id()?, requested) {
            (Some(stored), Some(req)) if stored != req => {
                return Err(IdentityError::Mismatch {
                    stored,
                    requested: req,
                });
            }
            (Some(stored), _) => stored,
            (None, req) => {
                let id = req.unwrap_or_else(|| rand::random_range(1..(1u64 << 53)));
                db.set_node_id(id)?;
                tracing::info!(node_id = id, "new node identity persisted");
                id
            }
        };
        let cluster_id = db.cluster_id()?;
        Ok(Identity {
            node_id,
            cluster_id: RwLock::new(cluster_id),
            db,
            peer_bind_ip,
        })
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id.read().ok().and_then(|g| g.clone())
    }

    pub fn peer_bind_ip(&self) -> Option<IpAddr> {
        self.peer_bind_ip
    }

    /// Sets the cluster id when this node founds a cluster.
    pub fn set_cluster_id(&self, id: &str) -> Result<(), StoreError> {
        self.db.set_cluster_id(id)?;
        if let Ok(mut g) = self.cluster_id.write() {
            *g = Some(id.to_owned());
        }
        Ok(())
    }

    /// Checks an incoming peer RPC. A node that has no cluster yet adopts
    /// the cluster id of the first RPC addressed to its own id: that is how
    /// members added by the leader learn which cluster they are in.
    pub fn admit(&self, target: Option<u64>, cluster: Option<&str>) -> Result<(), PeerReject> {
        let target = target.ok_or(PeerReject::MissingTarget)?;
        let cluster = Some(cluster.ok_or(PeerReject::MissingCluster)?);
        if target != self.node_id {
            return Err(PeerReject::WrongNode {
                target,
                me: self.node_id,
            });
        }
        match (self.cluster_id(), cluster) {
            (Some(mine), Some(theirs)) if mine != theirs => Err(PeerReject::WrongCluster {
                theirs: theirs.to_owned(),
                mine,
            }),
            (None, Some(theirs)) => {
                if let Err(e) = self.set_cluster_id(theirs) {
                    tracing::error!(error = %e, "failed to persist adopted cluster id");
                }
                tracing::info!(cluster_id = theirs, "joined cluster");
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A fresh random cluster id (128 bits, hex).
pub fn new_cluster_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        (dir, db)
    }

    #[test]
    fn id_is_generated_once_and_kept() {
        let (dir, db) = db();
        let a = Identity::load(db, None, None).expect("load").node_id;
        assert!(a > 0 && a < (1 << 53));
        let db = Db::open(dir.path()).expect("reopen");
        let b = Identity::load(db, None, None).expect("load").node_id;
        assert_eq!(a, b);
    }

    #[test]
    fn mismatched_id_refuses_to_start() {
        let (dir, db) = db();
        Identity::load(db, Some(7), None).expect("load");
        let db = Db::open(dir.path()).expect("reopen");
        let err = Identity::load(db, Some(8), None).expect_err("must refuse");
        assert!(matches!(
            err,
            IdentityError::Mismatch {
                stored: 7,
                requested: 8
            }
        ));
    }

    #[test]
    fn admit_checks_target_and_cluster() {
        let (_dir, db) = db();
        let id = Identity::load(db, Some(3), None).expect("load");
        assert_eq!(
            id.admit(Some(4), Some("c")),
            Err(PeerReject::WrongNode { target: 4, me: 3 })
        );
        assert_eq!(id.admit(None, Some("c")), Err(PeerReject::MissingTarget));
        assert_eq!(id.admit(Some(3), None), Err(PeerReject::MissingCluster));
        assert_eq!(id.cluster_id(), None, "nothing adopted from a refused rpc");
        id.admit(Some(3), Some("c1")).expect("adopts");
        assert_eq!(id.cluster_id().as_deref(), Some("c1"));
        assert!(matches!(
            id.admit(Some(3), Some("c2")),
            Err(PeerReject::WrongCluster { .. })
        ));
    }
}
