//! Leases: keys that disappear when their owner stops renewing them
//! (etcd's leases over HTTP).
//!
//! [`Client::lease_grant`] creates a lease with a TTL; keys written with
//! [`Client::put_with_lease`] (or a transaction put naming the lease) are
//! deleted when the lease ends: when it is revoked, or when no keep-alive
//! has reached the cluster for a whole TTL. [`Client::keep_alive`] starts a
//! task that renews a lease every third of its TTL and says when it is
//! gone.
//!
//! ```no_run
//! use kvclient::Client;
//!
//! # async fn run() -> Result<(), kvclient::ClientError> {
//! let client = Client::new(&["http://10.0.0.1:7379", "http://10.0.0.2:7379"])?;
//! let lease = client.lease_grant(10, None).await?;
//! client.put_with_lease("services/api/10.0.0.7", "up", lease.id).await?;
//! let keep_alive = client.keep_alive(&lease);
//! // ... serve; the key stays while this process renews the lease.
//! let lost = keep_alive.lost().await;
//! eprintln!("registration gone: {lost}");
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use tokio::sync::watch;
use tokio::time::Instant;

use kvapi::{ErrorCode, LeaseGrant, LeaseGrantRequest, LeaseInfo, LeaseList, LeaseRevoked};

use crate::client::{Body, Client, ClientError, json_body};

impl Client {
    /// `POST /v1/leases`: a new lease of `ttl` seconds, under `id` when
    /// given (else the cluster picks one). The answer has the TTL actually
    /// granted: the cluster raises a TTL below its minimum (3 s by
    /// default). A taken `id` fails with `already_exists`, a `ttl` of 0
    /// with `bad_request`.
    ///
    /// Like every write, a grant that timed out is retried on the next
    /// endpoint, so it may have been granted twice; the extra lease holds
    /// nothing and expires after its TTL.
    ///
    /// ```no_run
    /// # async fn run(client: kvclient::Client) -> Result<(), kvclient::ClientError> {
    /// let lease = client.lease_grant(30, None).await?;
    /// println!("lease {} granted with TTL {}s", lease.id, lease.ttl);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn lease_grant(&self, ttl: u64, id: Option<u64>) -> Result<LeaseGrant, ClientError> {
        let req = LeaseGrantRequest { ttl, id };
        self.call_json(Method::POST, "/v1/leases", &[], json_body(&req))
            .await
    }

    /// `POST /v1/leases/{id}/keepalive`: renews the lease for its full TTL
    /// from now, and answers that TTL. A lease that has expired or was
    /// revoked fails with `not_found` (`err.code() == Some(ErrorCode::NotFound)`).
    /// To keep a lease alive for as long as a process runs, use
    /// [`Client::keep_alive`].
    ///
    /// ```no_run
    /// # async fn run(client: kvclient::Client) -> Result<(), kvclient::ClientError> {
    /// let renewed = client.lease_keep_alive(7).await?;
    /// println!("lease 7 has {}s again", renewed.ttl);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn lease_keep_alive(&self, id: u64) -> Result<LeaseGrant, ClientError> {
        let path = format!("/v1/leases/{id}/keepalive");
        self.call_json(Method::POST, &path, &[], Body::None).await
    }

    /// `DELETE /v1/leases/{id}`: ends the lease now and deletes every key
    /// attached to it, in one revision. An unknown lease fails with
    /// `not_found`.
    ///
    /// ```no_run
    /// # async fn run(client: kvclient::Client) -> Result<(), kvclient::ClientError> {
    /// let revoked = client.lease_revoke(7).await?;
    /// println!("{} keys deleted at revision {}", revoked.deleted, revoked.revision);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn lease_revoke(&self, id: u64) -> Result<LeaseRevoked, ClientError> {
        let path = format!("/v1/leases/{id}");
        self.call_json(Method::DELETE, &path, &[], Body::None).await
    }

    /// `GET /v1/leases/{id}`: the lease's TTL and the seconds it has left
    /// (as the leader sees them), with `keys` the keys attached to it.
    /// `Ok(None)` when the lease does not exist (expired or revoked).
    ///
    /// ```no_run
    /// # async fn run(client: kvclient::Client) -> Result<(), kvclient::ClientError> {
    /// match client.lease_time_to_live(7, true).await? {
    ///     Some(info) => println!("{:.1}s left, keys {:?}", info.remaining, info.keys),
    ///     None => println!("lease 7 is gone"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn lease_time_to_live(
        &self,
        id: u64,
        keys: bool,
    ) -> Result<Option<LeaseInfo>, ClientError> {
        let path = format!("/v1/leases/{id}");
        let query: Vec<(&str, String)> = if keys {
            vec![("keys", "true".into())]
        } else {
            vec![]
        };
        match self.call_json(Method::GET, &path, &query, Body::None).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/leases`: every lease and its granted TTL.
    ///
    /// ```no_run
    /// # async fn run(client: kvclient::Client) -> Result<(), kvclient::ClientError> {
    /// for lease in client.lease_list().await?.leases {
    ///     println!("{} (TTL {}s)", lease.id, lease.ttl);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn lease_list(&self) -> Result<LeaseList, ClientError> {
        self.call_json(Method::GET, "/v1/leases", &[], Body::None)
            .await
    }

    /// `PUT /v1/kv/{key}?lease=ID`: writes the key and attaches it to the
    /// lease, so that it is deleted when the lease ends. Answers the
    /// revision of the write. A lease that does not exist fails with
    /// `not_found`, and nothing is written.
    ///
    /// ```no_run
    /// # async fn run(client: kvclient::Client) -> Result<(), kvclient::ClientError> {
    /// let lease = client.lease_grant(10, None).await?;
    /// let revision = client.put_with_lease("workers/w1", "busy", lease.id).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn put_with_lease(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        lease: u64,
    ) -> Result<u64, ClientError> {
        self.put_with(key, value.into(), &[("lease", lease.to_string())])
            .await
    }

    /// Starts a task that keeps `lease` alive: it renews the lease at once
    /// and then every third of its TTL, through the client's endpoints in
    /// turn (a failed renewal is retried on the next endpoint at once, and
    /// after each full pass over them with a backoff of up to a second).
    ///
    /// The lease is [lost](KeepAlive::lost) when the cluster answers that
    /// it does not exist (it expired or was revoked), or when no renewal
    /// has succeeded for a whole TTL counted from when the last successful
    /// one was *sent*: by then the cluster may have expired it, so the
    /// client gives it up a little before the cluster would. The task then
    /// stops. The TTL of the first renewal counts from this call: call it
    /// right after the grant.
    ///
    /// Dropping the [`KeepAlive`] (or [`KeepAlive::close`]) stops the task;
    /// the lease then runs out after its TTL unless it is revoked
    /// ([`KeepAlive::revoke_on_drop`], or `close(true)`).
    ///
    /// Must be called within a Tokio runtime.
    ///
    /// ```no_run
    /// # async fn run(client: kvclient::Client) -> Result<(), kvclient::ClientError> {
    /// let lease = client.lease_grant(10, None).await?;
    /// let keep_alive = client.keep_alive(&lease);
    /// let mut status = keep_alive.subscribe();
    /// while status.changed().await.is_ok() {
    ///     println!("{:?}", *status.borrow());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn keep_alive(&self, lease: &LeaseGrant) -> KeepAlive {
        let valid_until = Instant::now() + Duration::from_secs(lease.ttl);
        self.keep_alive_until(lease, valid_until)
    }

    /// [`Client::keep_alive`] for a lease known to be valid until
    /// `valid_until` (the grant's send time plus its TTL).
    pub(crate) fn keep_alive_until(&self, lease: &LeaseGrant, valid_until: Instant) -> KeepAlive {
        let id = lease.id;
        let initial = LeaseStatus::Alive {
            ttl: lease.ttl,
            renewals: 0,
            valid_until,
        };
        let (tx, rx) = watch::channel(initial);
        let n = self.endpoints().len().max(1);
        let clients: Vec<Client> = (0..n).map(|i| self.pinned(i)).collect();
        let renew = move |i: usize| {
            let c = clients[i % clients.len()].clone();
            async move { c.lease_keep_alive(id).await }
        };
        let schedule = Schedule::new(Duration::from_secs(lease.ttl), valid_until);
        let task = tokio::spawn(keep_alive_loop(
            id,
            schedule,
            n,
            renew,
            tx,
            Tuning::default(),
        ));
        KeepAlive {
            id,
            ttl: lease.ttl,
            status: rx,
            task,
            client: self.clone(),
            revoke_on_drop: false,
        }
    }
}

/// Where a kept-alive lease stands ([`KeepAlive::status`]).
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseStatus {
    /// `renewals` keep-alives have succeeded (0 before the first); the
    /// last answered a TTL of `ttl` seconds. Unless renewed again, the
    /// lease is taken as lost at `valid_until`.
    Alive {
        ttl: u64,
        renewals: u64,
        valid_until: Instant,
    },
    /// The lease is gone, or may be: see [`LeaseLost`]. Final.
    Lost(LeaseLost),
}

impl LeaseStatus {
    pub fn is_lost(&self) -> bool {
        matches!(self, LeaseStatus::Lost(_))
    }
}

/// Why a kept-alive lease is lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseLost {
    /// The cluster answered `not_found`: the lease expired or was revoked,
    /// and its keys are deleted.
    #[error("lease {id} expired or was revoked")]
    NotFound { id: u64 },
    /// No renewal succeeded for a whole TTL since the last one that did:
    /// the cluster may have expired the lease (it will have once the TTL
    /// has run on its clock too).
    #[error(
        "lease {id}: no keep-alive succeeded within its TTL of {ttl}s (last error: {last_error})"
    )]
    TimedOut {
        id: u64,
        ttl: u64,
        last_error: String,
    },
    /// The keep-alive task was stopped ([`KeepAlive`] closed or dropped):
    /// nothing renews the lease any more.
    #[error("lease {id}: keep-alive stopped")]
    Stopped { id: u64 },
}

/// A task renewing a lease; see [`Client::keep_alive`]. Dropping it stops
/// the task (and revokes the lease if [`KeepAlive::revoke_on_drop`] says so).
#[derive(Debug)]
pub struct KeepAlive {
    id: u64,
    ttl: u64,
    status: watch::Receiver<LeaseStatus>,
    task: tokio::task::JoinHandle<()>,
    client: Client,
    revoke_on_drop: bool,
}

impl KeepAlive {
    /// The lease's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The TTL the lease was granted, in seconds.
    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    /// The current status.
    pub fn status(&self) -> LeaseStatus {
        self.status.borrow().clone()
    }

    /// Whether the lease is lost (see [`LeaseLost`]).
    pub fn is_lost(&self) -> bool {
        self.status.borrow().is_lost()
    }

    /// A receiver that sees every renewal and the loss: `changed()`
    /// resolves after each, and fails once the task has ended (the status
    /// then holds why, or the task was stopped).
    ///
    /// ```no_run
    /// # async fn run(client: kvclient::Client, lease: kvclient::LeaseGrant) {
    /// let keep_alive = client.keep_alive(&lease);
    /// let mut rx = keep_alive.subscribe();
    /// while rx.changed().await.is_ok() {
    ///     if let kvclient::LeaseStatus::Alive { ttl, .. } = *rx.borrow() {
    ///         println!("renewed for {ttl}s");
    ///     }
    /// }
    /// # }
    /// ```
    pub fn subscribe(&self) -> watch::Receiver<LeaseStatus> {
        self.status.clone()
    }

    /// Resolves when the lease is lost, with why; with
    /// [`LeaseLost::Stopped`] if this `KeepAlive` is closed or dropped
    /// first. Owns what it needs, so it can be moved into another task.
    ///
    /// ```no_run
    /// # async fn run(client: kvclient::Client, lease: kvclient::LeaseGrant) {
    /// let keep_alive = client.keep_alive(&lease);
    /// tokio::select! {
    ///     lost = keep_alive.lost() => eprintln!("{lost}"),
    ///     _ = tokio::signal::ctrl_c() => {}
    /// }
    /// # }
    /// ```
    pub fn lost(&self) -> impl Future<Output = LeaseLost> + Send + 'static {
        wait_lost(self.status.clone(), self.id)
    }

    /// Revoke the lease (best effort, in a spawned task) when this is
    /// dropped without [`KeepAlive::close`].
    pub fn revoke_on_drop(mut self, revoke: bool) -> Self {
        self.revoke_on_drop = revoke;
        self
    }

    /// Stops renewing and, with `revoke`, revokes the lease (deleting its
    /// keys at once rather than after the TTL). Answers the revocation; a
    /// lease that is gone already is not an error (`Ok(None)`).
    ///
    /// ```no_run
    /// # async fn run(client: kvclient::Client, lease: kvclient::LeaseGrant) -> Result<(), kvclient::ClientError> {
    /// let keep_alive = client.keep_alive(&lease);
    /// // ... work ...
    /// keep_alive.close(true).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn close(mut self, revoke: bool) -> Result<Option<LeaseRevoked>, ClientError> {
        self.task.abort();
        self.revoke_on_drop = false;
        if !revoke {
            return Ok(None);
        }
        match self.client.lease_revoke(self.id).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
        if self.revoke_on_drop
            && !self.is_lost()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (client, id) = (self.client.clone(), self.id);
            rt.spawn(async move {
                let _ = client.lease_revoke(id).await;
            });
        }
    }
}

/// Resolves when the status (of the keep-alive of lease `id`) says lost,
/// or its task ends without saying so (stopped).
pub(crate) async fn wait_lost(mut rx: watch::Receiver<LeaseStatus>, id: u64) -> LeaseLost {
    // `wait_for` looks at the last value before it fails on a closed
    // channel: an error means the task ended without a loss.
    let lost = match rx.wait_for(LeaseStatus::is_lost).await {
        Ok(s) => match &*s {
            LeaseStatus::Lost(lost) => Some(lost.clone()),
            LeaseStatus::Alive { .. } => None,
        },
        Err(_) => None,
    };
    lost.unwrap_or(LeaseLost::Stopped { id })
}

/// The shortest time between two renewals.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// When to renew and when the lease counts as lost: the pure part of the
/// keep-alive task.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Schedule {
    ttl: Duration,
    /// When the last successful renewal was sent (`None`: none yet, renew
    /// at once).
    last_sent: Option<Instant>,
    /// Until when the lease certainly lives (as far as the client can
    /// know): the last successful renewal's send time plus its TTL.
    valid_until: Instant,
}

impl Schedule {
    fn new(ttl: Duration, valid_until: Instant) -> Self {
        Schedule {
            ttl,
            last_sent: None,
            valid_until,
        }
    }

    /// Between two renewals: a third of the TTL (so two may fail in a row
    /// before it runs out).
    fn interval(&self) -> Duration {
        (self.ttl / 3).max(MIN_INTERVAL)
    }

    /// A renewal sent at `sent` succeeded and answered `ttl`. The cluster
    /// counts the TTL from when it handled the renewal, after `sent`.
    fn renewed(&mut self, sent: Instant, ttl: Duration) {
        self.ttl = ttl;
        self.last_sent = Some(sent);
        self.valid_until = self.valid_until.max(sent + ttl);
    }

    /// When to send the next renewal after a success.
    fn next_renewal(&self) -> Instant {
        match self.last_sent {
            Some(t) => t + self.interval(),
            None => Instant::now(),
        }
    }

    /// Whether the lease counts as lost at `now`.
    fn expired(&self, now: Instant) -> bool {
        now >= self.valid_until
    }

    /// How long an attempt started at `now` may wait for its answer: at
    /// most `cap`, and never past the lease's end. `None`: it has ended.
    fn attempt_budget(&self, now: Instant, cap: Duration) -> Option<Duration> {
        if self.expired(now) {
            return None;
        }
        Some(cap.min(self.valid_until - now))
    }

    /// When to retry after a failure at `now`: after `delay`, but no later
    /// than the lease's end (where it is found lost).
    fn retry_at(&self, now: Instant, delay: Duration) -> Instant {
        (now + delay).min(self.valid_until)
    }
}

/// Timeouts and backoff of the keep-alive task.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    /// How long one renewal may wait for its answer (less once the lease
    /// is about to run out).
    attempt_timeout: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            attempt_timeout: Duration::from_secs(2),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// Renews through `renew(endpoint index)` until the lease is lost,
/// publishing each renewal and the loss on `tx`.
async fn keep_alive_loop<R, F>(
    id: u64,
    mut schedule: Schedule,
    endpoints: usize,
    mut renew: R,
    tx: watch::Sender<LeaseStatus>,
    tuning: Tuning,
) where
    R: FnMut(usize) -> F,
    F: Future<Output = Result<LeaseGrant, ClientError>>,
{
    let n = endpoints.max(1);
    let mut endpoint = 0;
    let mut renewals = 0u64;
    let mut failures = 0usize;
    let mut backoff = tuning.initial_backoff;
    let mut last_error = String::from("none");
    let mut next = Instant::now();
    loop {
        tokio::time::sleep_until(next).await;
        let sent = Instant::now();
        let Some(budget) = schedule.attempt_budget(sent, tuning.attempt_timeout) else {
            tx.send_replace(LeaseStatus::Lost(LeaseLost::TimedOut {
                id,
                ttl: schedule.ttl.as_secs(),
                last_error,
            }));
            return;
        };
        match tokio::time::timeout(budget, renew(endpoint)).await {
            Ok(Ok(grant)) => {
                schedule.renewed(sent, Duration::from_secs(grant.ttl));
                renewals += 1;
                failures = 0;
                backoff = tuning.initial_backoff;
                tx.send_replace(LeaseStatus::Alive {
                    ttl: grant.ttl,
                    renewals,
                    valid_until: schedule.valid_until,
                });
                next = schedule.next_renewal();
                continue;
            }
            Ok(Err(e)) if e.code() == Some(ErrorCode::NotFound) => {
                tx.send_replace(LeaseStatus::Lost(LeaseLost::NotFound { id }));
                return;
            }
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = format!("no answer within {budget:?}"),
        }
        // Failed: the next endpoint at once; after a full pass, back off.
        endpoint = (endpoint + 1) % n;
        failures += 1;
        let now = Instant::now();
        next = if failures.is_multiple_of(n) {
            let at = schedule.retry_at(now, backoff);
            backoff = (backoff * 2).min(tuning.max_backoff);
            at
        } else {
            now
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn api(code: ErrorCode) -> ClientError {
        ClientError::Api {
            endpoint: "http://n1".into(),
            status: 404,
            error: kvapi::ApiError {
                code,
                message: "m".into(),
                leader: None,
                oldest_revision: None,
            },
        }
    }

    fn down() -> ClientError {
        ClientError::Interrupted {
            endpoint: "http://n1".into(),
            detail: "connection refused".into(),
        }
    }

    #[test]
    fn renewals_come_every_third_of_the_ttl_and_the_lease_ends_a_ttl_after_the_last_send() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(3);
        let mut s = Schedule::new(ttl, t0 + ttl);
        assert_eq!(s.interval(), Duration::from_secs(1));
        // Sent at t0, answered 400 ms later: the TTL counts from the send.
        s.renewed(t0, ttl);
        assert_eq!(s.next_renewal(), t0 + Duration::from_secs(1));
        assert_eq!(s.valid_until, t0 + ttl);
        assert!(!s.expired(t0 + Duration::from_millis(2999)));
        assert!(s.expired(t0 + ttl));
        // An attempt near the end may wait only until the end.
        let cap = Duration::from_secs(2);
        assert_eq!(
            s.attempt_budget(t0 + Duration::from_millis(2500), cap),
            Some(Duration::from_millis(500))
        );
        assert_eq!(s.attempt_budget(t0, cap), Some(cap));
        assert_eq!(s.attempt_budget(t0 + ttl, cap), None);
        // A retry is never scheduled past the end.
        assert_eq!(
            s.retry_at(t0 + Duration::from_millis(2900), Duration::from_secs(1)),
            t0 + ttl
        );
        // A later success moves the end; an older answer never moves it back.
        s.renewed(t0 + Duration::from_secs(1), ttl);
        assert_eq!(s.valid_until, t0 + Duration::from_secs(4));
        s.renewed(t0, ttl);
        assert_eq!(s.valid_until, t0 + Duration::from_secs(4));
        // A raised TTL (the server's minimum) sets the interval.
        s.renewed(t0 + Duration::from_secs(2), Duration::from_secs(9));
        assert_eq!(s.interval(), Duration::from_secs(3));
        // Tiny TTLs still leave room between renewals.
        let tiny = Schedule::new(Duration::from_millis(90), t0);
        assert_eq!(tiny.interval(), MIN_INTERVAL);
    }

    fn grant(ttl: u64) -> LeaseGrant {
        LeaseGrant { id: 7, ttl }
    }

    fn fast() -> Tuning {
        Tuning {
            attempt_timeout: Duration::from_millis(200),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
        }
    }

    /// Runs the loop with `renew` over `n` endpoints and a lease of `ttl`
    /// (valid for `ttl` from now); returns the status receiver.
    fn spawn_loop<R, F>(ttl: Duration, n: usize, renew: R) -> watch::Receiver<LeaseStatus>
    where
        R: FnMut(usize) -> F + Send + 'static,
        F: Future<Output = Result<LeaseGrant, ClientError>> + Send + 'static,
    {
        let now = Instant::now();
        let (tx, rx) = watch::channel(LeaseStatus::Alive {
            ttl: ttl.as_secs(),
            renewals: 0,
            valid_until: now + ttl,
        });
        let schedule = Schedule::new(ttl, now + ttl);
        tokio::spawn(keep_alive_loop(7, schedule, n, renew, tx, fast()));
        rx
    }

    #[tokio::test]
    async fn a_lease_that_cannot_be_renewed_is_lost_a_ttl_after_the_last_success_not_before() {
        // Real time: the first renewal (at once) succeeds with a TTL of
        // 1 s, every later one fails.
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let ttl = Duration::from_secs(1);
        let start = Instant::now();
        let rx = spawn_loop(ttl, 3, move |_| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move { if n == 0 { Ok(grant(1)) } else { Err(down()) } }
        });
        let lost = wait_lost(rx.clone(), 7).await;
        let took = start.elapsed();
        assert!(
            matches!(&lost, LeaseLost::TimedOut { ttl: 1, last_error, .. } if last_error.contains("refused")),
            "{lost:?}"
        );
        // The first (successful) renewal was sent right at the start: lost
        // exactly one TTL later, give or take scheduling.
        assert!(took >= ttl, "lost early: {took:?}");
        assert!(
            took < ttl + Duration::from_millis(500),
            "lost late: {took:?}"
        );
        // It kept trying, on every endpoint, until then.
        assert!(
            calls.load(Ordering::SeqCst) >= 6,
            "{}",
            calls.load(Ordering::SeqCst)
        );
        assert!(rx.borrow().is_lost());
    }

    #[tokio::test]
    async fn a_hung_endpoint_does_not_hold_up_the_others() {
        // Endpoint 0 never answers; 1 does. Renewals keep succeeding.
        let rx = spawn_loop(Duration::from_secs(1), 2, |i| async move {
            if i == 0 {
                futures::future::pending::<()>().await;
            }
            Ok(grant(1))
        });
        let mut rx2 = rx.clone();
        let renewed = tokio::time::timeout(
            Duration::from_secs(3),
            rx2.wait_for(|s| matches!(s, LeaseStatus::Alive { renewals, .. } if *renewals >= 3)),
        )
        .await;
        assert!(renewed.is_ok(), "{:?}", *rx.borrow());
        assert!(!rx.borrow().is_lost());
    }

    #[tokio::test]
    async fn not_found_is_lost_at_once() {
        let start = Instant::now();
        let rx = spawn_loop(Duration::from_secs(30), 1, |_| async {
            Err(api(ErrorCode::NotFound))
        });
        assert_eq!(wait_lost(rx, 7).await, LeaseLost::NotFound { id: 7 });
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn other_errors_are_retried_until_a_renewal_succeeds() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let rx = spawn_loop(Duration::from_secs(3), 2, move |_| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err(api(ErrorCode::NoLeader)),
                    1 => Err(api(ErrorCode::PermissionDenied)),
                    2 => Err(down()),
                    _ => Ok(grant(3)),
                }
            }
        });
        let mut rx2 = rx.clone();
        tokio::time::timeout(
            Duration::from_secs(2),
            rx2.wait_for(|s| matches!(s, LeaseStatus::Alive { renewals: 1, .. })),
        )
        .await
        .expect("renewed after three failures")
        .expect("task running");
    }

    /// A server answering each request with `answer(request line, body)`,
    /// logging the request lines and bodies.
    async fn mock(
        answer: fn(&str) -> (u16, &'static str),
    ) -> (String, Arc<std::sync::Mutex<Vec<(String, String)>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = log.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while data.len() < head_end + len {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                }
                let line = head.lines().next().unwrap_or_default();
                let line = line.trim_end_matches(" HTTP/1.1").to_owned();
                let body = String::from_utf8_lossy(&data[head_end..head_end + len]).into_owned();
                let (status, answer_body) = answer(&line);
                seen.lock().expect("log").push((line, body));
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{answer_body}",
                    answer_body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            }
        });
        (url, log)
    }

    #[tokio::test]
    async fn lease_calls_use_their_paths_and_bodies() {
        let (url, log) = mock(|line| match line {
            "POST /v1/leases" => (200, r#"{"id":42,"ttl":3}"#),
            "POST /v1/leases/42/keepalive" => (200, r#"{"id":42,"ttl":3}"#),
            "GET /v1/leases/42?keys=true" => {
                (200, r#"{"id":42,"ttl":3,"remaining":2.5,"keys":["a/b"]}"#)
            }
            "GET /v1/leases/43" => (
                404,
                r#"{"error":{"code":"not_found","message":"lease 43 not found"}}"#,
            ),
            "GET /v1/leases" => (200, r#"{"leases":[{"id":42,"ttl":3}]}"#),
            "DELETE /v1/leases/42" => (200, r#"{"revision":9,"deleted":1}"#),
            l if l.starts_with("PUT /v1/kv/") => (200, r#"{"revision":8}"#),
            _ => (500, "{}"),
        })
        .await;
        let c = Client::new(&[url]).expect("url").single_shot();
        let g = c.lease_grant(1, None).await.expect("grant");
        assert_eq!(g, LeaseGrant { id: 42, ttl: 3 });
        c.lease_grant(5, Some(42)).await.expect("grant with id");
        assert_eq!(c.lease_keep_alive(42).await.expect("keepalive").ttl, 3);
        let info = c.lease_time_to_live(42, true).await.expect("ttl");
        assert_eq!(info.and_then(|i| i.keys), Some(vec!["a/b".to_string()]));
        assert_eq!(c.lease_time_to_live(43, false).await.expect("404"), None);
        assert_eq!(c.lease_list().await.expect("list").leases, [g]);
        assert_eq!(c.put_with_lease("a/b", "v", 42).await.expect("put"), 8);
        assert_eq!(c.lease_revoke(42).await.expect("revoke").deleted, 1);
        let seen = log.lock().expect("log").clone();
        let lines: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            lines,
            [
                "POST /v1/leases",
                "POST /v1/leases",
                "POST /v1/leases/42/keepalive",
                "GET /v1/leases/42?keys=true",
                "GET /v1/leases/43",
                "GET /v1/leases",
                "PUT /v1/kv/a%2Fb?lease=42",
                "DELETE /v1/leases/42",
            ]
        );
        let body = |i: usize| -> serde_json::Value {
            serde_json::from_str(&seen[i].1).expect("json body")
        };
        assert_eq!(body(0), serde_json::json!({"ttl": 1}));
        assert_eq!(body(1), serde_json::json!({"ttl": 5, "id": 42}));
        assert_eq!(seen[6].1, "v");
    }

    #[tokio::test]
    async fn a_keep_alive_renews_through_the_api_and_sees_a_revoke() {
        // Renewals succeed twice, then the lease is "revoked".
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let (url, _log) = mock(|line| {
            assert_eq!(line, "POST /v1/leases/5/keepalive");
            if CALLS.fetch_add(1, Ordering::SeqCst) < 2 {
                (200, r#"{"id":5,"ttl":1}"#)
            } else {
                (404, r#"{"error":{"code":"not_found","message":"gone"}}"#)
            }
        })
        .await;
        let c = Client::new(&[url]).expect("url");
        let ka = c.keep_alive(&LeaseGrant { id: 5, ttl: 1 });
        let mut rx = ka.subscribe();
        let lost = tokio::time::timeout(Duration::from_secs(5), ka.lost())
            .await
            .expect("lost within 5 s");
        assert_eq!(lost, LeaseLost::NotFound { id: 5 });
        assert!(ka.is_lost());
        assert!(rx.borrow_and_update().is_lost());
        assert!(rx.changed().await.is_err(), "the task has ended");
        assert_eq!(CALLS.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_stopped_keep_alive_reports_stopped() {
        let client = Client::new(&["http://127.0.0.1:1"]).expect("url");
        let ka = client.keep_alive(&LeaseGrant { id: 9, ttl: 60 });
        let lost = ka.lost();
        assert!(!ka.is_lost());
        drop(ka);
        let got = tokio::time::timeout(Duration::from_secs(2), lost)
            .await
            .expect("resolves once dropped");
        assert_eq!(got, LeaseLost::Stopped { id: 9 });
    }
}
