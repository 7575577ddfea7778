//! Leases: keys that disappear when their owner stops renewing.
//!
//! The table (which leases exist, their TTLs, which keys each holds) is
//! state-machine state: it changes only through raft entries (`LeaseOp`,
//! and puts that attach a key), so every node holds the same table, it
//! survives restarts and travels in snapshots. Time is not: when a lease
//! runs out is decided by the leader alone (`clock.rs`), which then
//! proposes the revoke through raft, so expiry applies at the same point of
//! the log on every node.
//!
//! This file is pure data and rules; no I/O.

pub mod clock;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// One lease as the table keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Seconds granted (already raised to the minimum).
    pub ttl: u64,
    pub keys: BTreeSet<String>,
}

/// A change to the table, proposed through raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseOp {
    Grant {
        id: u64,
        ttl: u64,
    },
    /// Ends the lease and deletes every key it holds (an expiry is a
    /// revoke the leader proposes).
    Revoke {
        id: u64,
    },
}

/// Every lease, with the reverse index from key to lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseTable {
    leases: BTreeMap<u64, Lease>,
    by_key: HashMap<String, u64>,
}

impl LeaseTable {
    /// Rebuilds the table from stored leases.
    pub fn from_leases(leases: impl IntoIterator<Item = (u64, Lease)>) -> Self {
        let mut t = LeaseTable::default();
        for (id, l) in leases {
            for k in &l.keys {
                t.by_key.insert(k.clone(), id);
            }
            t.leases.insert(id, l);
        }
        t
    }

    pub fn get(&self, id: u64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &Lease)> {
        self.leases.iter().map(|(id, l)| (*id, l))
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// The lease a key is attached to.
    pub fn lease_of(&self, key: &str) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    /// False (and no change) if the id is taken.
    pub fn grant(&mut self, id: u64, ttl: u64) -> bool {
        if self.leases.contains_key(&id) {
            return false;
        }
        self.leases.insert(
            id,
            Lease {
                ttl,
                keys: BTreeSet::new(),
            },
        );
        true
    }

    /// Removes the lease; its keys (to delete), or `None` if it did not
    /// exist.
    pub fn revoke(&mut self, id: u64) -> Option<BTreeSet<String>> {
        let l = self.leases.remove(&id)?;
        for k in &l.keys {
            self.by_key.remove(k);
        }
        Some(l.keys)
    }

    /// Records that `key` now belongs to `lease` (`None`: to no lease, as
    /// after a put without one). Returns the leases whose key sets changed.
    /// The caller has checked that `lease` exists.
    pub fn attach(&mut self, key: &str, lease: Option<u64>) -> Vec<u64> {
        let old = self.by_key.get(key).copied();
        if old == lease {
            return Vec::new();
        }
        let mut changed = Vec::new();
        if let Some(o) = old {
            if let Some(l) = self.leases.get_mut(&o) {
                l.keys.remove(key);
            }
            self.by_key.remove(key);
            changed.push(o);
        }
        if let Some(n) = lease
            && let Some(l) = self.leases.get_mut(&n)
        {
            l.keys.insert(key.to_owned());
            self.by_key.insert(key.to_owned(), n);
            changed.push(n);
        }
        changed
    }
}

/// The shortest TTL granted: a lease must outlive a leader change, or it
/// could expire while no leader can hear its keep-alives (etcd uses 1.5
/// election timeouts; ours go up to twice the minimum).
pub fn min_ttl_secs(election_timeout_ms: u64) -> u64 {
    (3 * election_timeout_ms).div_ceil(1000).max(1)
}

/// Lease ids are handed to JSON clients, some of which read numbers as
/// doubles: keep them below 2^53.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// The longest TTL accepted: a year.
pub const MAX_TTL_SECS: u64 = 365 * 24 * 3600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_their_last_put_and_leave_with_the_lease() {
        let mut t = LeaseTable::default();
        assert!(t.grant(1, 10));
        assert!(t.grant(2, 10));
        assert!(!t.grant(1, 99), "an id is granted once");
        assert_eq!(t.attach("a", Some(1)), [1]);
        assert_eq!(t.attach("b", Some(1)), [1]);
        // Moving a key to another lease changes both; a put without a
        // lease detaches it; the same lease again changes nothing.
        assert_eq!(t.attach("b", Some(2)), [1, 2]);
        assert!(t.attach("b", Some(2)).is_empty());
        assert_eq!(t.attach("a", None), [1]);
        assert_eq!(t.lease_of("a"), None);
        assert_eq!(t.lease_of("b"), Some(2));
        let keys = t.revoke(2).expect("exists");
        assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["b"]);
        assert_eq!(t.lease_of("b"), None);
        assert!(t.revoke(2).is_none());

        let rebuilt = LeaseTable::from_leases(t.iter().map(|(id, l)| (id, l.clone())));
        assert_eq!(rebuilt, t);
    }

    #[test]
    fn the_minimum_ttl_outlasts_an_election() {
        assert_eq!(min_ttl_secs(1000), 3);
        assert_eq!(min_ttl_secs(300), 1);
        assert_eq!(min_ttl_secs(50), 1);
    }
}
