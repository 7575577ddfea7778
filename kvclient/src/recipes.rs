//! Distributed locks and leader election on leases, transactions and
//! watches, as etcd's `concurrency` package.
//!
//! A [`Session`] is a lease kept alive by this process. A [`Mutex`] or an
//! [`Election`] under a name queues the session's key `NAME/<lease id in
//! hex>`, written with the lease by a transaction that only puts it if it
//! is absent; the key with the lowest revision under `NAME/` holds the lock
//! (leads). A waiter watches for the deletion of the key just before its
//! own (not every key: no thundering herd when the holder leaves), then
//! looks again. Unlocking (resigning) deletes the key; so does the lease
//! ending, which is how a crashed holder's lock passes on, a TTL after its
//! last keep-alive. Losing the lease loses the lock: [`Mutex::lost`] and
//! [`Election::lost`] say when.
//!
//! The order is by a key's revision, which is the revision that last
//! wrote it: the recipes write each key once. Writing into `NAME/` by
//! other means breaks the order.
//!
//! ```no_run
//! use kvclient::{Client, recipes::{Mutex, Session}};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new(&["http://10.0.0.1:7379"])?;
//! let session = Session::new(&client, 10).await?;
//! let mut lock = Mutex::new(&session, "jobs/nightly");
//! lock.lock().await?;
//! tokio::select! {
//!     lost = lock.lost() => eprintln!("lock lost: {lost}"),
//!     _ = async { /* the work */ } => {}
//! }
//! lock.unlock().await?;
//! session.close().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

use kvapi::{
    Compare, CompareOp, CompareTarget, JsonValue, RangeItem, TxnOp, TxnOpResult, TxnRequest,
};

use crate::client::{Client, ClientError, Consistency, RangeOptions};
use crate::lease::{KeepAlive, LeaseLost, LeaseStatus, wait_lost};
use crate::watch::{WatchFilter, WatchItem, WatchOptions};

/// A lease that this process keeps alive, for [`Mutex`] and [`Election`]
/// (etcd's `concurrency.Session`). Its keys live as long as it does.
///
/// [`Session::close`] revokes the lease, deleting every key the session
/// holds at once. Dropping a session without closing it stops the
/// keep-alive and revokes the lease in a spawned task (best effort); a
/// process that dies without either leaves its keys for one TTL.
#[derive(Debug)]
pub struct Session {
    client: Client,
    keep_alive: KeepAlive,
}

impl Session {
    /// Grants a lease of `ttl` seconds (raised to the cluster's minimum)
    /// and keeps it alive until the session is closed or dropped.
    ///
    /// ```no_run
    /// # async fn run(client: kvclient::Client) -> Result<(), kvclient::ClientError> {
    /// let session = kvclient::recipes::Session::new(&client, 10).await?;
    /// println!("lease {}", session.lease());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn new(client: &Client, ttl: u64) -> Result<Session, ClientError> {
        let sent = Instant::now();
        let grant = client.lease_grant(ttl, None).await?;
        let valid_until = sent + Duration::from_secs(grant.ttl);
        let keep_alive = client
            .keep_alive_until(&grant, valid_until)
            .revoke_on_drop(true);
        Ok(Session {
            client: client.clone(),
            keep_alive,
        })
    }

    /// A session on a lease that is already kept alive. Closing the
    /// session revokes it.
    pub fn from_keep_alive(client: &Client, keep_alive: KeepAlive) -> Session {
        Session {
            client: client.clone(),
            keep_alive: keep_alive.revoke_on_drop(true),
        }
    }

    /// The lease's id.
    pub fn lease(&self) -> u64 {
        self.keep_alive.id()
    }

    /// The TTL the lease was granted, in seconds.
    pub fn ttl(&self) -> u64 {
        self.keep_alive.ttl()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The keep-alive's status (renewals, or why the lease is lost).
    pub fn status(&self) -> LeaseStatus {
        self.keep_alive.status()
    }

    /// Resolves when the lease is lost; see [`KeepAlive::lost`].
    pub fn lost(&self) -> impl Future<Output = LeaseLost> + Send + 'static {
        self.keep_alive.lost()
    }

    /// Stops the keep-alive and revokes the lease: every lock and
    /// candidacy of the session ends at once.
    ///
    /// ```no_run
    /// # async fn run(session: kvclient::recipes::Session) -> Result<(), kvclient::ClientError> {
    /// session.close().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn close(self) -> Result<(), ClientError> {
        self.keep_alive.close(true).await.map(|_| ())
    }

    fn handle(&self) -> Handle {
        Handle {
            client: self.client.clone(),
            lease: self.lease(),
            status: self.keep_alive.subscribe(),
        }
    }
}

/// What a recipe keeps of its session.
#[derive(Debug, Clone)]
struct Handle {
    client: Client,
    lease: u64,
    status: watch::Receiver<LeaseStatus>,
}

impl Handle {
    fn lost(&self) -> impl Future<Output = LeaseLost> + Send + 'static {
        wait_lost(self.status.clone(), self.lease)
    }

    /// `Err` if the lease is lost already.
    fn check(&self) -> Result<(), RecipeError> {
        match &*self.status.borrow() {
            LeaseStatus::Lost(l) => Err(RecipeError::Lost(Lost::Lease(l.clone()))),
            LeaseStatus::Alive { .. } if self.status.has_changed().is_err() => {
                Err(RecipeError::Lost(Lost::Lease(LeaseLost::Stopped {
                    id: self.lease,
                })))
            }
            LeaseStatus::Alive { .. } => Ok(()),
        }
    }
}

/// How a lock or a leadership was lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lost {
    /// The session's lease is gone (or may be), and with it the key.
    #[error(transparent)]
    Lease(LeaseLost),
    /// The key was deleted while the lease lives (by someone else).
    #[error("key {key:?} was deleted at revision {revision}")]
    KeyDeleted { key: String, revision: u64 },
}

/// Why a lock or a campaign failed.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The session's lease (or the key) went while waiting; the key is
    /// gone.
    #[error(transparent)]
    Lost(Lost),
    /// The session campaigns in this election already (a second
    /// candidacy of one session would be the same key).
    #[error("lease {lease} already campaigns in {prefix:?} (key {key:?})")]
    AlreadyCampaigning {
        prefix: String,
        key: String,
        lease: u64,
    },
}

/// The prefix of a recipe's keys: `name` and a `/`.
pub fn prefix_of(name: &str) -> String {
    if name.ends_with('/') {
        name.to_owned()
    } else {
        format!("{name}/")
    }
}

/// The key a session's lease owns under `prefix`.
pub fn key_of(prefix: &str, lease: u64) -> String {
    format!("{prefix}{lease:x}")
}

/// Whose turn it is, from the keys queued under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// Our key is the first: we hold the lock (lead), since `revision`.
    Mine { revision: u64 },
    /// Wait for `key`, the one just before ours, to be deleted.
    WaitFor { key: String, revision: u64 },
    /// Our key is not there (the lease ended, or someone deleted it).
    Gone,
}

/// The decision of a waiter: `queued` are the keys under the prefix with
/// their revisions (any order); the first is the one with the lowest
/// revision (ties, which one writer never makes, by key).
pub fn turn(queued: &[(String, u64)], mine: &str) -> Turn {
    let Some(my_rev) = queued.iter().find(|(k, _)| k == mine).map(|(_, r)| *r) else {
        return Turn::Gone;
    };
    let before = queued
        .iter()
        .filter(|(k, r)| (*r, k.as_str()) < (my_rev, mine))
        .max_by(|(ka, ra), (kb, rb)| (ra, ka).cmp(&(rb, kb)));
    match before {
        None => Turn::Mine { revision: my_rev },
        Some((key, revision)) => Turn::WaitFor {
            key: key.clone(),
            revision: *revision,
        },
    }
}

/// Every key under `prefix` (all pages, linearizable), with values or not.
async fn list(client: &Client, prefix: &str, values: bool) -> Result<Vec<RangeItem>, ClientError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .range(&RangeOptions {
                prefix: Some(prefix.to_owned()),
                start: start.take(),
                limit: None,
                keys_only: !values,
                consistency: Consistency::Linearizable,
            })
            .await?;
        let progressed = !page.items.is_empty();
        items.extend(page.items);
        match page.next {
            Some(next) if progressed => start = Some(next),
            _ => return Ok(items),
        }
    }
}

async fn queue(client: &Client, prefix: &str) -> Result<Vec<(String, u64)>, ClientError> {
    Ok(list(client, prefix, false)
        .await?
        .into_iter()
        .map(|it| (it.key, it.revision))
        .collect())
}

/// Puts `key` with the lease unless it exists. Answers its revision and
/// whether it existed already (then it is unchanged).
async fn enqueue(
    client: &Client,
    key: &str,
    value: &[u8],
    lease: u64,
) -> Result<(u64, bool), ClientError> {
    let v = JsonValue::from_bytes(value);
    let txn = TxnRequest {
        compare: vec![Compare {
            key: key.to_owned(),
            target: CompareTarget::Revision(0),
            op: CompareOp::Eq,
        }],
        success: vec![TxnOp::Put {
            key: key.to_owned(),
            value: v.value,
            value_encoding: v.value_encoding,
            lease: Some(lease),
        }],
        failure: vec![TxnOp::Get {
            key: key.to_owned(),
        }],
    };
    let resp = client.txn(&txn).await?;
    let unexpected = |what: &str| ClientError::Unexpected {
        endpoint: client.endpoints().first().cloned().unwrap_or_default(),
        status: 200,
        body: format!("transaction answer without {what}"),
    };
    match resp.results.first() {
        Some(TxnOpResult::Put { revision }) if resp.succeeded => Ok((*revision, false)),
        Some(TxnOpResult::Get {
            found: true,
            revision,
            ..
        }) if !resp.succeeded => Ok((*revision, true)),
        // Absent at the compare and present at the get of the same
        // transaction cannot be; report rather than loop.
        _ => Err(unexpected("the put or get result")),
    }
}

/// Resolves when `key` is deleted at or after revision `from` (the
/// revision of the delete). A watch that cannot start from `from` (the
/// history is compacted) starts from now and checks the key is still
/// there.
async fn deleted(client: &Client, key: &str, from: u64) -> Result<u64, ClientError> {
    let opts = WatchOptions::key(key).with_filter(WatchFilter::Delete);
    let mut watch = client.watch(opts.clone().with_start_revision(from));
    let mut check_on_created = false;
    loop {
        match watch.next().await {
            Some(Ok(WatchItem::Delete(e))) => return Ok(e.revision),
            Some(Ok(WatchItem::Created { revision, .. })) if check_on_created => {
                // Registered: a delete from now on is seen; was it before?
                if client.get(key).await?.is_none() {
                    return Ok(revision);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(ClientError::Compacted { .. })) if !check_on_created => {
                check_on_created = true;
                watch = client.watch(opts.clone());
            }
            Some(Err(e)) => return Err(e),
            None => {
                return Err(ClientError::Interrupted {
                    endpoint: String::new(),
                    detail: "the watch ended".into(),
                });
            }
        }
    }
}

/// Waits until `mine` is first under `prefix`; answers its revision.
/// `since`: the revision `mine` was written at.
async fn wait_turn(h: &Handle, prefix: &str, mine: &str, since: u64) -> Result<u64, RecipeError> {
    loop {
        h.check()?;
        let queued = queue(&h.client, prefix).await?;
        match turn(&queued, mine) {
            Turn::Mine { revision } => return Ok(revision),
            Turn::Gone => {
                h.check()?;
                return Err(RecipeError::Lost(Lost::KeyDeleted {
                    key: mine.to_owned(),
                    revision: 0,
                }));
            }
            Turn::WaitFor { key, .. } => {
                // `key` was there at a read after `since`: its delete is later.
                tokio::select! {
                    r = deleted(&h.client, &key, since + 1) => { r?; }
                    lost = h.lost() => return Err(RecipeError::Lost(Lost::Lease(lost))),
                }
            }
        }
    }
}

/// Resolves when a held key is lost: the lease ends, or the key (written
/// at `revision`; `None`: not held, only the lease counts) is deleted. A
/// watch that fails leaves the lease to tell.
fn held_lost(
    h: &Handle,
    key: &str,
    revision: Option<u64>,
) -> impl Future<Output = Lost> + Send + 'static {
    let lease = h.lost();
    let (client, key) = (h.client.clone(), key.to_owned());
    async move {
        let gone = async {
            let Some(revision) = revision else {
                return futures::future::pending().await;
            };
            match deleted(&client, &key, revision + 1).await {
                Ok(r) => Lost::KeyDeleted { key, revision: r },
                Err(_) => futures::future::pending().await,
            }
        };
        tokio::select! {
            l = lease => Lost::Lease(l),
            g = gone => g,
        }
    }
}

/// Deletes a queued key if a lock or campaign is abandoned midway (its
/// future dropped): the key would otherwise block the queue until the
/// session ends.
struct Abandon {
    client: Option<Client>,
    key: String,
}

impl Abandon {
    fn disarm(mut self) {
        self.client = None;
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let key = std::mem::take(&mut self.key);
            rt.spawn(async move {
                let _ = client.delete(&key).await;
            });
        }
    }
}

/// Queues `key` and waits for its turn; on failure (or if dropped) the
/// key is deleted again, unless it was there before.
async fn acquire(
    h: &Handle,
    prefix: &str,
    key: &str,
    value: &[u8],
    existing_ok: bool,
) -> Result<u64, RecipeError> {
    h.check()?;
    let (since, existed) = enqueue(&h.client, key, value, h.lease).await?;
    if existed && !existing_ok {
        return Err(RecipeError::AlreadyCampaigning {
            prefix: prefix.to_owned(),
            key: key.to_owned(),
            lease: h.lease,
        });
    }
    let guard = Abandon {
        client: (!existed).then(|| h.client.clone()),
        key: key.to_owned(),
    };
    match wait_turn(h, prefix, key, since).await {
        Ok(revision) => {
            guard.disarm();
            Ok(revision)
        }
        Err(e) => {
            if !existed {
                let _ = h.client.delete(key).await;
            }
            guard.disarm();
            Err(e)
        }
    }
}

/// A distributed lock (etcd's `concurrency.Mutex`): at most one session
/// holds a name at a time, in the order they asked.
#[derive(Debug)]
pub struct Mutex {
    h: Handle,
    prefix: String,
    key: String,
    revision: Option<u64>,
}

impl Mutex {
    /// The lock `name` for `session`. Nothing is sent until
    /// [`Mutex::lock`]. One session should use one `Mutex` per name: two
    /// share a key, and so the lock.
    pub fn new(session: &Session, name: &str) -> Mutex {
        let prefix = prefix_of(name);
        Mutex {
            key: key_of(&prefix, session.lease()),
            prefix,
            h: session.handle(),
            revision: None,
        }
    }

    /// The session's key: `NAME/<lease id in hex>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The key's revision while the lock is held.
    pub fn revision(&self) -> Option<u64> {
        self.revision
    }

    /// Waits until the lock is held. Fails if the session's lease is lost
    /// (or the key deleted) meanwhile. Dropping the future before it is
    /// done gives up the place in the queue.
    ///
    /// ```no_run
    /// # async fn run(session: kvclient::recipes::Session) -> Result<(), kvclient::recipes::RecipeError> {
    /// let mut m = kvclient::recipes::Mutex::new(&session, "locks/db-migration");
    /// m.lock().await?;
    /// println!("holding {}", m.key());
    /// m.unlock().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn lock(&mut self) -> Result<(), RecipeError> {
        let revision = acquire(&self.h, &self.prefix, &self.key, b"", true).await?;
        self.revision = Some(revision);
        Ok(())
    }

    /// Takes the lock if it is free; `Ok(false)` (and no place in the
    /// queue) if another session holds it.
    ///
    /// ```no_run
    /// # async fn run(session: kvclient::recipes::Session) -> Result<(), kvclient::recipes::RecipeError> {
    /// let mut m = kvclient::recipes::Mutex::new(&session, "locks/cron");
    /// if !m.try_lock().await? {
    ///     println!("another instance runs it");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_lock(&mut self) -> Result<bool, RecipeError> {
        self.h.check()?;
        let (_, existed) = enqueue(&self.h.client, &self.key, b"", self.h.lease).await?;
        let queued = queue(&self.h.client, &self.prefix).await?;
        match turn(&queued, &self.key) {
            Turn::Mine { revision } => {
                self.revision = Some(revision);
                Ok(true)
            }
            Turn::WaitFor { .. } => {
                if !existed {
                    self.h.client.delete(&self.key).await?;
                }
                Ok(false)
            }
            Turn::Gone => {
                self.h.check()?;
                Err(RecipeError::Lost(Lost::KeyDeleted {
                    key: self.key.clone(),
                    revision: 0,
                }))
            }
        }
    }

    /// Releases the lock (deletes the key).
    ///
    /// ```no_run
    /// # async fn run(mut m: kvclient::recipes::Mutex) -> Result<(), kvclient::ClientError> {
    /// m.unlock().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn unlock(&mut self) -> Result<(), ClientError> {
        self.h.client.delete(&self.key).await?;
        self.revision = None;
        Ok(())
    }

    /// Whether the session holds the lock now (one read).
    pub async fn is_owner(&self) -> Result<bool, ClientError> {
        let queued = queue(&self.h.client, &self.prefix).await?;
        Ok(matches!(turn(&queued, &self.key), Turn::Mine { .. }))
    }

    /// Resolves when the held lock is lost: the session's lease ends (or
    /// may have), or the key is deleted. Call it once the lock is held.
    ///
    /// ```no_run
    /// # async fn run(mut m: kvclient::recipes::Mutex) -> Result<(), kvclient::recipes::RecipeError> {
    /// m.lock().await?;
    /// tokio::select! {
    ///     lost = m.lost() => eprintln!("lost the lock: {lost}"),
    ///     _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn lost(&self) -> impl Future<Output = Lost> + Send + 'static {
        held_lost(&self.h, &self.key, self.revision)
    }
}

/// The leader of an election: its key, value (proposal) and revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub key: String,
    pub value: Bytes,
    pub revision: u64,
}

/// Leader election (etcd's `concurrency.Election`): candidates queue as
/// for a [`Mutex`], with their proposal as the key's value; the first
/// leads.
#[derive(Debug)]
pub struct Election {
    h: Handle,
    prefix: String,
    key: String,
    revision: Option<u64>,
}

impl Election {
    /// The election `name` for `session`. Nothing is sent until
    /// [`Election::campaign`].
    pub fn new(session: &Session, name: &str) -> Election {
        let prefix = prefix_of(name);
        Election {
            key: key_of(&prefix, session.lease()),
            prefix,
            h: session.handle(),
            revision: None,
        }
    }

    /// The session's key: `NAME/<lease id in hex>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The key's revision while leading.
    pub fn revision(&self) -> Option<u64> {
        self.revision
    }

    /// Stands with `proposal` and waits until elected. Fails if the
    /// session's lease is lost (or the key deleted) meanwhile, or if the
    /// session campaigns here already.
    ///
    /// ```no_run
    /// # async fn run(session: kvclient::recipes::Session) -> Result<(), kvclient::recipes::RecipeError> {
    /// let mut e = kvclient::recipes::Election::new(&session, "elections/scheduler");
    /// e.campaign("10.0.0.7:8080").await?;
    /// println!("leading");
    /// e.resign().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn campaign(&mut self, proposal: impl Into<Bytes>) -> Result<(), RecipeError> {
        let value = proposal.into();
        let revision = acquire(&self.h, &self.prefix, &self.key, &value, false).await?;
        self.revision = Some(revision);
        Ok(())
    }

    /// Steps down (or out of the queue): deletes the key.
    ///
    /// ```no_run
    /// # async fn run(mut e: kvclient::recipes::Election) -> Result<(), kvclient::ClientError> {
    /// e.resign().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn resign(&mut self) -> Result<(), ClientError> {
        self.h.client.delete(&self.key).await?;
        self.revision = None;
        Ok(())
    }

    /// The current leader; see [`leader`].
    pub async fn leader(&self) -> Result<Option<Leader>, ClientError> {
        leader(&self.h.client, &self.prefix).await
    }

    /// Each new leader; see [`observe`].
    pub fn observe(&self) -> LeaderStream {
        observe(&self.h.client, &self.prefix)
    }

    /// Resolves when the leadership is lost: the session's lease ends (or
    /// may have), or the key is deleted. Call it once elected.
    pub fn lost(&self) -> impl Future<Output = Lost> + Send + 'static {
        held_lost(&self.h, &self.key, self.revision)
    }
}

/// The first candidate of `items` (keys with values), if any.
fn first(items: &BTreeMap<String, (u64, Bytes)>) -> Option<Leader> {
    items
        .iter()
        .min_by(|(ka, (ra, _)), (kb, (rb, _))| (ra, ka).cmp(&(rb, kb)))
        .map(|(key, (revision, value))| Leader {
            key: key.clone(),
            value: value.clone(),
            revision: *revision,
        })
}

fn bytes_of(v: &JsonValue, endpoint: &str) -> Result<Bytes, ClientError> {
    v.to_bytes()
        .map(Bytes::from)
        .map_err(|e| ClientError::Unexpected {
            endpoint: endpoint.to_owned(),
            status: 200,
            body: format!("invalid base64 value: {e}"),
        })
}

/// The leader of the election `name` (no session needed): the candidate
/// with the lowest revision, or `None` when nobody stands.
///
/// ```no_run
/// # async fn run(client: kvclient::Client) -> Result<(), kvclient::ClientError> {
/// if let Some(l) = kvclient::recipes::leader(&client, "elections/scheduler").await? {
///     println!("{} leads", String::from_utf8_lossy(&l.value));
/// }
/// # Ok(())
/// # }
/// ```
pub async fn leader(client: &Client, name: &str) -> Result<Option<Leader>, ClientError> {
    let endpoint = client.endpoints().first().cloned().unwrap_or_default();
    let mut map = BTreeMap::new();
    for it in list(client, &prefix_of(name), true).await? {
        let value = match &it.value {
            Some(v) => bytes_of(v, &endpoint)?,
            None => Bytes::new(),
        };
        map.insert(it.key, (it.revision, value));
    }
    Ok(first(&map))
}

/// The candidates of one election as a watch sees them, and the leader
/// last reported.
#[derive(Debug, Default)]
struct Candidates {
    items: BTreeMap<String, (u64, Bytes)>,
    reported: Option<(String, u64, Bytes)>,
}

impl Candidates {
    /// The leader, if it changed since the last call.
    fn changed(&mut self) -> Option<Leader> {
        let now = first(&self.items);
        let id = now
            .as_ref()
            .map(|l| (l.key.clone(), l.revision, l.value.clone()));
        if id == self.reported {
            return None;
        }
        self.reported = id;
        now
    }
}

/// Each new leader of the election `name` (no session needed), starting
/// with the current one: a value whenever the leading candidate changes
/// (an interval without a leader is not reported). The stream follows the
/// watch's resumption across failing nodes; it ends after an error.
///
/// ```no_run
/// use futures::StreamExt;
///
/// # async fn run(client: kvclient::Client) -> Result<(), kvclient::ClientError> {
/// let mut leaders = kvclient::recipes::observe(&client, "elections/scheduler");
/// while let Some(l) = leaders.next().await {
///     println!("leader: {}", String::from_utf8_lossy(&l?.value));
/// }
/// # Ok(())
/// # }
/// ```
pub fn observe(client: &Client, name: &str) -> LeaderStream {
    struct State {
        client: Client,
        prefix: String,
        watch: crate::WatchStream,
        candidates: Candidates,
        done: bool,
    }
    let prefix = prefix_of(name);
    let state = State {
        watch: client.watch(WatchOptions::prefix(&prefix)),
        client: client.clone(),
        prefix,
        candidates: Candidates::default(),
        done: false,
    };
    let inner = futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            let endpoint = s.client.endpoints().first().cloned().unwrap_or_default();
            let item = match s.watch.next().await {
                Some(Ok(item)) => item,
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
                None => return None,
            };
            match item {
                // Registered: read the candidates (at a revision at or
                // after the watch's start; replaying the events since onto
                // a later state changes nothing).
                WatchItem::Created { .. } => match list(&s.client, &s.prefix, true).await {
                    Ok(items) => {
                        for it in items {
                            let value = match it.value.as_ref().map(|v| bytes_of(v, &endpoint)) {
                                Some(Ok(v)) => v,
                                Some(Err(e)) => {
                                    s.done = true;
                                    return Some((Err(e), s));
                                }
                                None => Bytes::new(),
                            };
                            s.candidates.items.insert(it.key, (it.revision, value));
                        }
                    }
                    Err(e) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                },
                WatchItem::Put(e) => {
                    let v = JsonValue {
                        value: e.value.unwrap_or_default(),
                        value_encoding: e.value_encoding,
                    };
                    match bytes_of(&v, &endpoint) {
                        Ok(value) => {
                            s.candidates.items.insert(e.key, (e.revision, value));
                        }
                        Err(err) => {
                            s.done = true;
                            return Some((Err(err), s));
                        }
                    }
                }
                WatchItem::Delete(e) => {
                    s.candidates.items.remove(&e.key);
                }
                WatchItem::Progress { .. } => continue,
            }
            if let Some(l) = s.candidates.changed() {
                return Some((Ok(l), s));
            }
        }
    });
    LeaderStream {
        inner: Box::pin(inner),
    }
}

/// The stream [`observe`] returns.
pub struct LeaderStream {
    inner: Pin<Box<dyn Stream<Item = Result<Leader, ClientError>> + Send>>,
}

impl Stream for LeaderStream {
    type Item = Result<Leader, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for LeaderStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderStream").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(items: &[(&str, u64)]) -> Vec<(String, u64)> {
        items.iter().map(|(k, r)| (k.to_string(), *r)).collect()
    }

    #[test]
    fn keys_are_the_name_a_slash_and_the_lease_in_hex() {
        assert_eq!(prefix_of("jobs"), "jobs/");
        assert_eq!(prefix_of("jobs/"), "jobs/");
        assert_eq!(key_of("jobs/", 0x694d_5765), "jobs/694d5765");
    }

    #[test]
    fn the_lowest_revision_holds_the_lock_whatever_the_key_order() {
        // Keys sort differently from their revisions.
        let queued = q(&[("l/ff", 12), ("l/0a", 30), ("l/b", 7)]);
        assert_eq!(turn(&queued, "l/b"), Turn::Mine { revision: 7 });
        assert_eq!(
            turn(&queued, "l/ff"),
            Turn::WaitFor {
                key: "l/b".into(),
                revision: 7
            }
        );
    }

    #[test]
    fn a_waiter_waits_for_the_key_just_before_its_own() {
        let queued = q(&[("l/a", 5), ("l/b", 9), ("l/c", 11), ("l/d", 20)]);
        // Not the holder (l/a): the one directly ahead, so that a release
        // wakes one waiter, not all of them.
        assert_eq!(
            turn(&queued, "l/d"),
            Turn::WaitFor {
                key: "l/c".into(),
                revision: 11
            }
        );
        assert_eq!(
            turn(&queued, "l/b"),
            Turn::WaitFor {
                key: "l/a".into(),
                revision: 5
            }
        );
        // When l/c leaves, l/d waits for l/b; when all ahead leave, it holds.
        let queued = q(&[("l/a", 5), ("l/b", 9), ("l/d", 20)]);
        assert_eq!(
            turn(&queued, "l/d"),
            Turn::WaitFor {
                key: "l/b".into(),
                revision: 9
            }
        );
        assert_eq!(turn(&q(&[("l/d", 20)]), "l/d"), Turn::Mine { revision: 20 });
    }

    #[test]
    fn a_missing_own_key_is_gone() {
        assert_eq!(turn(&q(&[("l/a", 5)]), "l/b"), Turn::Gone);
        assert_eq!(turn(&[], "l/b"), Turn::Gone);
    }

    #[test]
    fn equal_revisions_are_ordered_by_key() {
        let queued = q(&[("l/b", 5), ("l/a", 5)]);
        assert_eq!(turn(&queued, "l/a"), Turn::Mine { revision: 5 });
        assert_eq!(
            turn(&queued, "l/b"),
            Turn::WaitFor {
                key: "l/a".into(),
                revision: 5
            }
        );
    }

    #[test]
    fn observers_hear_of_each_new_leader_once() {
        let mut c = Candidates::default();
        assert_eq!(c.changed(), None, "nobody stands");
        c.items.insert("e/2".into(), (8, Bytes::from("b")));
        c.items.insert("e/1".into(), (4, Bytes::from("a")));
        assert_eq!(c.changed().map(|l| l.value), Some(Bytes::from("a")));
        // A new candidate behind the leader: no change.
        c.items.insert("e/3".into(), (9, Bytes::from("c")));
        assert_eq!(c.changed(), None);
        // The leader leaves: the next one leads.
        c.items.remove("e/1");
        let l = c.changed().expect("new leader");
        assert_eq!((l.key.as_str(), l.revision), ("e/2", 8));
        // Replaying what is known already changes nothing.
        c.items.insert("e/2".into(), (8, Bytes::from("b")));
        assert_eq!(c.changed(), None);
        // Everybody leaves, then one stands again: reported again.
        c.items.clear();
        assert_eq!(c.changed(), None);
        c.items.insert("e/3".into(), (9, Bytes::from("c")));
        assert_eq!(c.changed().map(|l| l.value), Some(Bytes::from("c")));
    }
}
