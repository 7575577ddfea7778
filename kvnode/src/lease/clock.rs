//! When leases run out, as the leader sees it. Deadlines live only in the
//! leader's memory: keep-alives reset them without a raft round (as etcd's
//! lessor does), and a lease whose deadline passes is revoked through raft
//! by the leader's expiry loop, so every node deletes its keys at the same
//! point of the log.
//!
//! A new leader does not know when keep-alives last reached the old one:
//! it gives every lease its full TTL plus `extension` (at least an election
//! timeout) from the moment it starts leading, so no lease expires early
//! because of a leader change. Followers keep no deadlines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::LeaseOp;
use crate::node::Node;
use crate::raft::types::{Command, Op};

#[derive(Debug, Default)]
pub struct LeaseClock {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The term this node leads in, if it leads.
    leading: Option<u64>,
    deadlines: HashMap<u64, Instant>,
}

impl LeaseClock {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pass of the expiry loop: brings the deadlines in line with who
    /// leads and which leases exist (`(id, ttl)`), and returns the leases
    /// whose deadline has passed. Pure apart from the clock's own state.
    pub fn due(
        &self,
        leading: Option<u64>,
        leases: impl Iterator<Item = (u64, u64)>,
        now: Instant,
        extension: Duration,
    ) -> Vec<u64> {
        let mut s = self.state();
        if leading != s.leading {
            s.deadlines.clear();
            s.leading = leading;
        }
        if leading.is_none() {
            return Vec::new();
        }
        let mut live = HashMap::with_capacity(s.deadlines.len());
        let mut due = Vec::new();
        for (id, ttl) in leases {
            let d = s
                .deadlines
                .get(&id)
                .copied()
                .unwrap_or_else(|| now + Duration::from_secs(ttl) + extension);
            if d <= now {
                due.push(id);
            }
            live.insert(id, d);
        }
        s.deadlines = live;
        due
    }

    /// A keep-alive (or a grant) on the leader: the full TTL from now.
    /// `leading` as for `due`; false when this node does not lead, so the
    /// caller can say so.
    pub fn keep_alive(&self, id: u64, ttl: u64, leading: Option<u64>, now: Instant) -> bool {
        let mut s = self.state();
        if leading != s.leading {
            // Leadership changed since the loop last looked: start over
            // (the loop gives the other leases their extension).
            s.deadlines.clear();
            s.leading = leading;
        }
        if leading.is_none() {
            return false;
        }
        s.deadlines.insert(id, now + Duration::from_secs(ttl));
        true
    }

    /// Time left, if this node leads and tracks the lease.
    pub fn remaining(&self, id: u64, now: Instant) -> Option<Duration> {
        let s = self.state();
        s.leading?;
        s.deadlines
            .get(&id)
            .map(|d| d.saturating_duration_since(now))
    }
}

/// Proposes the revoke of every lease whose time is up, for as long as the
/// node runs; does nothing on followers.
pub async fn expire(node: Arc<Node>) {
    let tick = Duration::from_millis(200);
    // What a follower may have waited before electing us.
    let extension = Duration::from_millis(node.config.election_timeout_ms * 2);
    loop {
        tokio::time::sleep(tick).await;
        if node.draining() {
            return;
        }
        let due = {
            let table = node.db.leases();
            node.lease_clock.due(
                node.leading_term(),
                table.iter().map(|(id, l)| (id, l.ttl)),
                Instant::now(),
                extension,
            )
        };
        for id in due {
            let cmd = Command {
                success: vec![Op::Lease(LeaseOp::Revoke { id })],
                ..Command::default()
            };
            match node.write(cmd).await {
                Ok(_) => tracing::info!(lease = id, "lease expired; revoked with its keys"),
                // Tried again next tick if this node still leads.
                Err(e) => {
                    tracing::warn!(lease = id, error = ?e, "revoking an expired lease failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXT: Duration = Duration::from_secs(2);

    #[test]
    fn leases_expire_on_the_leader_only_and_a_new_leader_extends_them() {
        let c = LeaseClock::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // A follower tracks nothing and refuses keep-alives.
        assert!(c.due(None, [(1, 5)].into_iter(), t0, EXT).is_empty());
        assert!(!c.keep_alive(1, 5, None, t0));
        // Leading from t0: TTL plus the extension.
        assert!(c.due(Some(3), [(1, 5)].into_iter(), t0, EXT).is_empty());
        assert_eq!(c.remaining(1, t0), Some(s(7)));
        assert!(
            c.due(Some(3), [(1, 5)].into_iter(), t0 + s(6), EXT)
                .is_empty()
        );
        // A keep-alive gives the full TTL from then.
        assert!(c.keep_alive(1, 5, Some(3), t0 + s(6)));
        assert!(
            c.due(Some(3), [(1, 5)].into_iter(), t0 + s(10), EXT)
                .is_empty()
        );
        assert_eq!(c.due(Some(3), [(1, 5)].into_iter(), t0 + s(11), EXT), [1]);
        // Another term: everything starts over with the extension.
        assert!(
            c.due(Some(4), [(1, 5)].into_iter(), t0 + s(11), EXT)
                .is_empty()
        );
        assert_eq!(c.remaining(1, t0 + s(11)), Some(s(7)));
        // A keep-alive that is first to see a new term starts it over too.
        assert!(c.keep_alive(2, 5, Some(5), t0 + s(11)));
        assert_eq!(c.remaining(1, t0 + s(11)), None);
        assert_eq!(c.remaining(2, t0 + s(11)), Some(s(5)));
        // A revoked lease is forgotten.
        assert!(
            c.due(Some(4), std::iter::empty(), t0 + s(12), EXT)
                .is_empty()
        );
        assert_eq!(c.remaining(1, t0 + s(12)), None);
    }
}
