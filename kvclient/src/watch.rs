//! `GET /v1/watch` as a stream of changes that resumes by itself.
//!
//! [`Client::watch`] opens a watch on one of the client's endpoints and
//! yields its events. When the stream breaks off (the connection drops, the
//! node is killed or stalls, it answers `503`, or it ends the stream with a
//! `canceled` line saying `shutting_down` or `lagging`) the watch is opened
//! again, on the next endpoint, from where the last one stopped: the
//! consumer sees every change once, in revision order, with no gap and no
//! repeat. It gives up, with an error, only on what resuming cannot fix
//! (`compacted`, `permission_denied`, a refused token, `bad_request`) or
//! when reconnecting has failed for longer than [`WatchRetry`] allows.
//!
//! ```no_run
//! use futures::StreamExt;
//! use kvclient::{Client, WatchItem, WatchOptions};
//!
//! # async fn run() -> Result<(), kvclient::ClientError> {
//! let client = Client::new(&["http://10.0.0.1:7379", "http://10.0.0.2:7379"])?;
//! let mut watch = client.watch(WatchOptions::prefix("app/").with_prev_value(true));
//! while let Some(item) = watch.next().await {
//!     match item? {
//!         WatchItem::Put(e) => println!("{} = {:?} at {}", e.key, e.value, e.revision),
//!         WatchItem::Delete(e) => println!("{} deleted at {}", e.key, e.revision),
//!         WatchItem::Created { .. } | WatchItem::Progress { .. } => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::Method;

use kvapi::{ErrorCode, WatchCancel, WatchEvent, WatchLine};

use crate::client::{Client, ClientError, Token, open_stream};

/// Which keys a watch follows (exactly one of the API's `key`, `prefix`,
/// `start`/`end`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchTarget {
    /// One key.
    Key(String),
    /// Every key starting with the prefix; `""` is every key.
    Prefix(String),
    /// Every key in `[start, end)`.
    Range { start: String, end: String },
}

/// Deliver only one kind of event (`filter=put` / `filter=delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFilter {
    Put,
    Delete,
}

impl WatchFilter {
    /// The value of the `filter` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchFilter::Put => "put",
            WatchFilter::Delete => "delete",
        }
    }
}

/// How a watch reconnects, and when it stops trying.
///
/// A *run* of failures starts when a watch connection breaks off (or the
/// first one cannot be opened) and ends when a new connection delivers a
/// line after its `created` line (or stays up for 10 s). Within a run the
/// watch tries the endpoints in turn, starting with the one after the
/// endpoint that failed, and sleeps after each full pass over them, from
/// `initial_backoff` doubling up to `max_backoff`. It gives up, returning
/// the last error, after `max_attempts` failed attempts or once the run
/// has lasted `max_elapsed`, whichever comes first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRetry {
    /// Failed attempts (each endpoint tried counts once) before giving up.
    pub max_attempts: u32,
    /// How long a run of failures may last before giving up.
    pub max_elapsed: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long to wait for the answer (status and headers) to a watch
    /// request. The stream itself has no overall timeout.
    pub response_timeout: Duration,
    /// An open stream on which nothing arrives for this long is taken as
    /// dead (a partitioned node, a half-open connection) and reopened.
    /// `None`: twice the progress interval plus 5 s (15 s with the
    /// server's default interval of 5 s), or never if the interval is 0.
    pub idle_timeout: Option<Duration>,
}

impl Default for WatchRetry {
    fn default() -> Self {
        WatchRetry {
            max_attempts: 60,
            max_elapsed: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            response_timeout: Duration::from_secs(15),
            idle_timeout: None,
        }
    }
}

/// The server's progress interval when the request names none.
const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// The longest line a watch accepts by default. A line holds at most two
/// values (the new and, with `prev_value`, the previous one), each up to
/// the node's `--max-value-bytes` (1 MiB by default) and longer once
/// encoded as JSON.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 20;

/// A connection that was up this long counts as healthy: a failure after it
/// starts a new run of failures (see [`WatchRetry`]).
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// The per-request timeout of a watch request: reqwest has no "none" that
/// overrides the client's own total timeout, so a stream is cut after a
/// year, and resumes like any other.
pub(crate) const STREAM_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// What to watch and how. Build with [`WatchOptions::key`],
/// [`WatchOptions::prefix`] or [`WatchOptions::range`] and the `with_`
/// methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    pub target: WatchTarget,
    /// The first revision to deliver. `None`: from "now", a linearizable
    /// point the server chooses (the stream's first item,
    /// [`WatchItem::Created`], says which).
    pub start_revision: Option<u64>,
    /// Events carry the key's previous value (`prev_value=true`).
    pub prev_value: bool,
    pub filter: Option<WatchFilter>,
    /// How often a quiet watch gets a progress line. `None`: the server's
    /// default, 5 s.
    pub progress_interval: Option<Duration>,
    pub retry: WatchRetry,
    /// A longer line stops the watch with an error (resuming would meet
    /// the same line again). Default [`DEFAULT_MAX_LINE_BYTES`].
    pub max_line_bytes: usize,
}

impl WatchOptions {
    pub fn new(target: WatchTarget) -> Self {
        WatchOptions {
            target,
            start_revision: None,
            prev_value: false,
            filter: None,
            progress_interval: None,
            retry: WatchRetry::default(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }

    /// Watch one key.
    pub fn key(key: impl Into<String>) -> Self {
        Self::new(WatchTarget::Key(key.into()))
    }

    /// Watch every key starting with `prefix` (`""`: every key).
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self::new(WatchTarget::Prefix(prefix.into()))
    }

    /// Watch every key in `[start, end)`.
    pub fn range(start: impl Into<String>, end: impl Into<String>) -> Self {
        Self::new(WatchTarget::Range {
            start: start.into(),
            end: end.into(),
        })
    }

    pub fn with_start_revision(mut self, revision: u64) -> Self {
        self.start_revision = Some(revision);
        self
    }

    pub fn with_prev_value(mut self, prev_value: bool) -> Self {
        self.prev_value = prev_value;
        self
    }

    pub fn with_filter(mut self, filter: WatchFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    pub fn with_progress_interval(mut self, interval: Duration) -> Self {
        self.progress_interval = Some(interval);
        self
    }

    pub fn with_retry(mut self, retry: WatchRetry) -> Self {
        self.retry = retry;
        self
    }

    pub fn with_max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max;
        self
    }

    /// The query of `GET /v1/watch` starting at `from` (`None`: now).
    fn query(&self, from: Option<u64>) -> Vec<(&'static str, String)> {
        let mut q = match &self.target {
            WatchTarget::Key(k) => vec![("key", k.clone())],
            WatchTarget::Prefix(p) => vec![("prefix", p.clone())],
            WatchTarget::Range { start, end } => {
                vec![("start", start.clone()), ("end", end.clone())]
            }
        };
        if let Some(r) = from {
            q.push(("start_revision", r.to_string()));
        }
        if self.prev_value {
            q.push(("prev_value", "true".into()));
        }
        if let Some(f) = self.filter {
            q.push(("filter", f.as_str().into()));
        }
        if let Some(i) = self.progress_interval {
            q.push(("progress_interval_ms", i.as_millis().to_string()));
        }
        q
    }

    /// How long an open stream may stay silent before it is reopened.
    fn idle_timeout(&self) -> Option<Duration> {
        if let Some(t) = self.retry.idle_timeout {
            return Some(t);
        }
        let interval = self.progress_interval.unwrap_or(DEFAULT_PROGRESS_INTERVAL);
        (!interval.is_zero()).then(|| interval * 2 + Duration::from_secs(5))
    }
}

/// One item of a watch stream: the wire's [`WatchLine`]s without the
/// `canceled` line (the stream handles that itself) and with each `created`
/// line after the first left out (those come from reconnecting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// The watch is registered; events from `start_revision` on follow.
    /// `revision` is the node's store revision at that time. Always the
    /// first item, and only once.
    Created { revision: u64, start_revision: u64 },
    /// A key was written.
    Put(WatchEvent),
    /// A key was deleted.
    Delete(WatchEvent),
    /// Every event up to and including `revision` has been delivered (the
    /// watch is quiet). Comes every progress interval while nothing happens.
    Progress { revision: u64 },
}

impl WatchItem {
    /// The change, for `Put` and `Delete`.
    pub fn event(&self) -> Option<&WatchEvent> {
        match self {
            WatchItem::Put(e) | WatchItem::Delete(e) => Some(e),
            WatchItem::Created { .. } | WatchItem::Progress { .. } => None,
        }
    }

    /// The item as the wire line it came from (to print it as JSON, say).
    pub fn to_line(&self) -> WatchLine {
        match self {
            WatchItem::Created {
                revision,
                start_revision,
            } => WatchLine::Created {
                revision: *revision,
                start_revision: *start_revision,
            },
            WatchItem::Put(e) => WatchLine::Put(e.clone()),
            WatchItem::Delete(e) => WatchLine::Delete(e.clone()),
            WatchItem::Progress { revision } => WatchLine::Progress {
                revision: *revision,
            },
        }
    }
}

/// The stream [`Client::watch`] returns. It yields items until it yields an
/// error, and then ends; it never ends otherwise. Dropping it closes the
/// watch.
pub struct WatchStream {
    inner: Pin<Box<dyn Stream<Item = Result<WatchItem, ClientError>> + Send>>,
}

impl Stream for WatchStream {
    type Item = Result<WatchItem, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

impl Client {
    /// `GET /v1/watch`: the changes to `opts.target` as a stream, resumed
    /// across failures (see the [module documentation](crate::watch)).
    ///
    /// Nothing is sent until the stream is first polled. The stream owns a
    /// clone of the client (sharing its token), so it can outlive `self`
    /// and be moved to another task. Requests carry the client's token and
    /// use its TLS options and connect timeout, but no overall timeout.
    ///
    /// Errors that end the stream:
    /// - [`ClientError::Compacted`]: the revisions to continue from are no
    ///   longer kept (a `410` answer or a `canceled` line with `compacted`);
    /// - [`ClientError::WatchCanceled`] with `permission_denied`;
    /// - [`ClientError::Api`] with `unauthenticated` (after one new
    ///   authentication, when the client has credentials),
    ///   `permission_denied`, `bad_request` or any other code that is not
    ///   retryable;
    /// - [`ClientError::Unexpected`] for a stream that breaks the protocol
    ///   (an undecodable or overlong line, a start later than asked);
    /// - the last failure, once reconnecting has exhausted `opts.retry`.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use kvclient::{Client, WatchItem, WatchOptions};
    ///
    /// # async fn run(client: Client) -> Result<(), kvclient::ClientError> {
    /// // Everything from revision 120 on, including what happened since.
    /// let mut watch = client.watch(WatchOptions::key("config").with_start_revision(120));
    /// while let Some(item) = watch.next().await {
    ///     if let Some(event) = item?.event() {
    ///         println!("{} changed at revision {}", event.key, event.revision);
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch(&self, opts: WatchOptions) -> WatchStream {
        let watcher = Watcher::new(self.clone(), opts);
        let inner = futures::stream::unfold(watcher, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        });
        WatchStream {
            inner: Box::pin(inner),
        }
    }
}

/// Splits a byte stream into lines. Chunks may end anywhere, within a line
/// or within a UTF-8 character; lines end in `\n` (a `\r` before it is
/// dropped) and blank lines are skipped.
#[derive(Debug)]
struct LineSplitter {
    buf: Vec<u8>,
    /// Where the first line not yet returned starts.
    start: usize,
    /// `buf[start..scanned]` holds no newline.
    scanned: usize,
    max: usize,
}

/// A line, complete or not, longer than the limit.
#[derive(Debug, PartialEq, Eq)]
struct LineTooLong;

impl LineSplitter {
    fn new(max: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line, `None` until more bytes come.
    fn next_line(&mut self) -> Result<Option<&[u8]>, LineTooLong> {
        loop {
            let Some(at) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                if self.buf.len() - self.start > self.max {
                    return Err(LineTooLong);
                }
                return Ok(None);
            };
            let end = self.scanned + at;
            let begin = self.start;
            self.start = end + 1;
            self.scanned = self.start;
            let mut line = &self.buf[begin..end];
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            if line.len() > self.max {
                return Err(LineTooLong);
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(line));
            }
        }
    }

    /// Bytes of a line that has not ended yet.
    fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Where a watch stands: the revision to resume from and how many of its
/// events have been delivered already. The pure part of resuming.
///
/// A revision can hold several events (a transaction), and a connection
/// can break between them; resuming from the next revision would lose the
/// rest and resuming from the same one repeats the first ones. So the
/// cursor resumes from the revision that may be incomplete and skips as
/// many of its events as were delivered (a node sends the events of one
/// revision in the order they were applied, the same on every node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cursor {
    /// The revision the next connection asks for; `None` (now) until a
    /// node has chosen one. Every revision before it was delivered whole.
    from: Option<u64>,
    /// Events of revision `from` already delivered.
    delivered: usize,
    /// Events of revision `from` seen on the current connection.
    seen: usize,
    /// The first `created` line has been delivered.
    created: bool,
}

/// What to do with one line.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Deliver(WatchItem),
    /// Already delivered (or a `created` line of a reconnection).
    Skip,
    /// The stream ends here; the cursor has moved to `resume_revision`.
    Canceled {
        code: WatchCancel,
        reason: String,
        resume_revision: u64,
    },
    /// The node started the watch later than asked: what lies between
    /// would be lost.
    Gap {
        asked: u64,
        started: u64,
    },
}

impl Cursor {
    fn new(start_revision: Option<u64>) -> Self {
        Cursor {
            from: start_revision,
            ..Cursor::default()
        }
    }

    /// The start revision of the next connection.
    fn resume_from(&self) -> Option<u64> {
        self.from
    }

    /// A new connection (from `resume_from`) has been opened.
    fn connection_opened(&mut self) {
        self.seen = 0;
    }

    /// Moves past every revision before `next`.
    fn advance_to(&mut self, next: u64) {
        if self.from.is_none_or(|f| next > f) {
            self.from = Some(next);
            self.delivered = 0;
            self.seen = 0;
        }
    }

    fn on_line(&mut self, line: WatchLine) -> Step {
        match line {
            WatchLine::Created {
                revision,
                start_revision,
            } => {
                match self.from {
                    None => self.from = Some(start_revision),
                    Some(asked) if start_revision > asked => {
                        return Step::Gap {
                            asked,
                            started: start_revision,
                        };
                    }
                    // Earlier than asked: what was delivered is skipped.
                    Some(_) => {}
                }
                if self.created {
                    return Step::Skip;
                }
                self.created = true;
                Step::Deliver(WatchItem::Created {
                    revision,
                    start_revision,
                })
            }
            WatchLine::Put(e) => self.on_event(e, WatchItem::Put),
            WatchLine::Delete(e) => self.on_event(e, WatchItem::Delete),
            WatchLine::Progress { revision } => {
                if self.from.is_some_and(|f| revision < f) {
                    return Step::Skip;
                }
                self.advance_to(revision + 1);
                Step::Deliver(WatchItem::Progress { revision })
            }
            WatchLine::Canceled {
                code,
                reason,
                resume_revision,
            } => {
                // Nothing before `resume_revision` is missing, and nothing
                // of it was sent: if the cursor is at it already, what was
                // delivered of it (on an earlier connection) still counts.
                self.advance_to(resume_revision);
                Step::Canceled {
                    code,
                    reason,
                    resume_revision,
                }
            }
        }
    }

    fn on_event(&mut self, e: WatchEvent, item: fn(WatchEvent) -> WatchItem) -> Step {
        match self.from {
            Some(f) if e.revision < f => return Step::Skip,
            Some(f) if e.revision == f => {
                self.seen += 1;
                if self.seen <= self.delivered {
                    return Step::Skip;
                }
            }
            // A later revision: every one before it is complete.
            _ => {
                self.from = Some(e.revision);
                self.delivered = 0;
                self.seen = 1;
            }
        }
        self.delivered += 1;
        Step::Deliver(item(e))
    }
}

/// Whether a watch canceled with `code` continues on a new connection.
fn cancel_resumes(code: WatchCancel) -> bool {
    match code {
        WatchCancel::ShuttingDown | WatchCancel::Lagging => true,
        WatchCancel::Compacted | WatchCancel::PermissionDenied => false,
    }
}

/// What to do after a watch request failed.
#[derive(Debug, PartialEq, Eq)]
enum OnFailure {
    /// Try again (the next endpoint).
    Retry,
    /// Authenticate again and retry at once (the token expired).
    Reauthenticate,
    Stop,
}

/// `can_reauthenticate`: the client has credentials and has not just
/// authenticated again for this connection.
fn on_failure(e: &ClientError, can_reauthenticate: bool) -> OnFailure {
    match e {
        // Authenticating failed (a wrong password is not an expired token).
        ClientError::Authentication { .. } if e.retryable() => OnFailure::Retry,
        ClientError::Authentication { .. } => OnFailure::Stop,
        _ if e.code() == Some(ErrorCode::Unauthenticated) && can_reauthenticate => {
            OnFailure::Reauthenticate
        }
        _ if e.retryable() => OnFailure::Retry,
        _ => OnFailure::Stop,
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// One open watch response.
struct Conn {
    endpoint: String,
    body: Body,
    lines: LineSplitter,
    opened: Instant,
    /// Its `created` line has come.
    established: bool,
    /// A line after `created` has come.
    healthy: bool,
}

impl Conn {
    /// The next line, waiting at most `idle` for each chunk.
    async fn next_line(&mut self, idle: Option<Duration>) -> Result<WatchLine, ClientError> {
        loop {
            match self.lines.next_line() {
                Ok(Some(line)) => {
                    return serde_json::from_slice(line).map_err(|e| ClientError::Unexpected {
                        endpoint: self.endpoint.clone(),
                        status: 200,
                        body: format!("undecodable watch line: {e}"),
                    });
                }
                Ok(None) => {}
                Err(LineTooLong) => {
                    // Not resumable: the same line would come again.
                    return Err(ClientError::Unexpected {
                        endpoint: self.endpoint.clone(),
                        status: 200,
                        body: format!(
                            "a watch line is longer than {} bytes (WatchOptions::max_line_bytes)",
                            self.lines.max
                        ),
                    });
                }
            }
            let chunk = match idle {
                Some(idle) => match tokio::time::timeout(idle, self.body.next()).await {
                    Ok(chunk) => chunk,
                    Err(_) => {
                        let detail = format!("the watch stream was silent for {idle:?}");
                        return Err(self.lost(detail));
                    }
                },
                None => self.body.next().await,
            };
            match chunk {
                Some(Ok(bytes)) => self.lines.push(&bytes),
                Some(Err(source)) => {
                    return Err(ClientError::Transport {
                        endpoint: self.endpoint.clone(),
                        source,
                    });
                }
                None => {
                    let detail = match self.lines.pending() {
                        0 => "the watch stream ended without a canceled line".to_string(),
                        n => format!("the watch stream ended within a line ({n} bytes)"),
                    };
                    return Err(self.lost(detail));
                }
            }
        }
    }

    /// The stream broke off (a retryable error).
    fn lost(&self, detail: String) -> ClientError {
        ClientError::Interrupted {
            endpoint: self.endpoint.clone(),
            detail,
        }
    }
}

/// The state behind a [`WatchStream`].
struct Watcher {
    client: Client,
    opts: WatchOptions,
    cursor: Cursor,
    conn: Option<Conn>,
    /// Index of the endpoint to try next.
    endpoint: usize,
    /// The current run of failures (see [`WatchRetry`]).
    failures: u32,
    failing_since: Option<Instant>,
    delay: Duration,
    /// `failures` when the watch last slept, so that it sleeps once per pass.
    slept_at: u32,
    last_error: Option<ClientError>,
    /// Authenticated again since the last connection was established.
    reauthenticated: bool,
    done: bool,
}

impl Watcher {
    fn new(client: Client, opts: WatchOptions) -> Self {
        Watcher {
            cursor: Cursor::new(opts.start_revision),
            delay: opts.retry.initial_backoff,
            client,
            opts,
            conn: None,
            endpoint: 0,
            failures: 0,
            failing_since: None,
            slept_at: 0,
            last_error: None,
            reauthenticated: false,
            done: false,
        }
    }

    /// The next item; after an error, `None` for ever.
    async fn next(&mut self) -> Option<Result<WatchItem, ClientError>> {
        if self.done {
            return None;
        }
        let item = self.advance().await;
        if item.is_err() {
            self.done = true;
            self.conn = None;
        }
        Some(item)
    }

    async fn advance(&mut self) -> Result<WatchItem, ClientError> {
        let idle = self.opts.idle_timeout();
        loop {
            if self.conn.is_none() {
                let conn = self.connect().await?;
                self.cursor.connection_opened();
                self.conn = Some(conn);
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            let line = match conn.next_line(idle).await {
                Ok(line) => line,
                Err(e) if e.retryable() => {
                    self.lost(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match &line {
                WatchLine::Created { .. } => {
                    conn.established = true;
                    self.reauthenticated = false;
                }
                WatchLine::Put(_) | WatchLine::Delete(_) | WatchLine::Progress { .. } => {
                    conn.healthy = conn.established;
                }
                WatchLine::Canceled { .. } => {}
            }
            let endpoint = conn.endpoint.clone();
            match self.cursor.on_line(line) {
                Step::Deliver(item) => return Ok(item),
                Step::Skip => {}
                Step::Canceled {
                    code,
                    reason,
                    resume_revision,
                } => {
                    if code == WatchCancel::Compacted {
                        return Err(ClientError::Compacted {
                            endpoint,
                            revision: resume_revision,
                            oldest_revision: None,
                        });
                    }
                    let e = ClientError::WatchCanceled {
                        endpoint,
                        code,
                        reason,
                        resume_revision,
                    };
                    if !cancel_resumes(code) {
                        return Err(e);
                    }
                    self.lost(e);
                }
                Step::Gap { asked, started } => {
                    return Err(ClientError::Unexpected {
                        endpoint,
                        status: 200,
                        body: format!("the watch started at revision {started}, not {asked}"),
                    });
                }
            }
        }
    }

    /// The current connection broke off with `e`.
    fn lost(&mut self, e: ClientError) {
        if let Some(conn) = self.conn.take() {
            let lasted = conn.established && conn.opened.elapsed() >= HEALTHY_AFTER;
            if conn.healthy || lasted {
                self.failures = 0;
                self.slept_at = 0;
                self.failing_since = None;
                self.delay = self.opts.retry.initial_backoff;
            }
        }
        self.failed(e);
    }

    /// An attempt failed: count it and move to the next endpoint.
    fn failed(&mut self, e: ClientError) {
        self.failures += 1;
        self.failing_since.get_or_insert_with(Instant::now);
        self.last_error = Some(e);
        self.endpoint = (self.endpoint + 1) % self.client.endpoints().len().max(1);
    }

    /// Opens a watch from the cursor, retrying as `opts.retry` allows.
    async fn connect(&mut self) -> Result<Conn, ClientError> {
        let n = self.client.endpoints().len().max(1) as u32;
        loop {
            if self.failures > 0 {
                let retry = &self.opts.retry;
                let elapsed = self.failing_since.map_or(Duration::ZERO, |t| t.elapsed());
                if self.failures >= retry.max_attempts || elapsed >= retry.max_elapsed {
                    return Err(self.last_error.take().unwrap_or(ClientError::NoEndpoints));
                }
                // After each full pass over the endpoints.
                if self.failures.is_multiple_of(n) && self.slept_at != self.failures {
                    self.slept_at = self.failures;
                    tokio::time::sleep(self.delay.min(retry.max_elapsed - elapsed)).await;
                    self.delay = (self.delay * 2).min(retry.max_backoff);
                }
            }
            let Some(endpoint) = self.client.endpoints().get(self.endpoint).cloned() else {
                return Err(ClientError::NoEndpoints);
            };
            let can_reauthenticate = self.client.has_credentials() && !self.reauthenticated;
            let token = match self.client.token(None).await {
                Ok(t) => t,
                Err(e) => match on_failure(&e, false) {
                    OnFailure::Retry => {
                        self.failed(e);
                        continue;
                    }
                    OnFailure::Reauthenticate | OnFailure::Stop => return Err(e),
                },
            };
            let from = self.cursor.resume_from();
            let e = match open(&self.client, &self.opts, from, &endpoint, &token).await {
                Ok(conn) => return Ok(conn),
                Err(e) => e,
            };
            match on_failure(&e, can_reauthenticate) {
                OnFailure::Retry => self.failed(e),
                OnFailure::Stop => return Err(e),
                OnFailure::Reauthenticate => {
                    // The token expired (or auth was enabled): once per
                    // connection, as the client's other requests do.
                    self.reauthenticated = true;
                    if let Err(e) = self.client.token(Some(&token)).await {
                        match on_failure(&e, false) {
                            OnFailure::Retry => self.failed(e),
                            OnFailure::Reauthenticate | OnFailure::Stop => return Err(e),
                        }
                    }
                }
            }
        }
    }
}

/// One watch request to `endpoint` from `from`: the open stream, or why not.
// Not a method of `Watcher`: a `&Watcher` held across an await would need
// its open response body to be `Sync`.
async fn open(
    client: &Client,
    opts: &WatchOptions,
    from: Option<u64>,
    endpoint: &str,
    token: &Token,
) -> Result<Conn, ClientError> {
    let query = opts.query(from);
    let req = client
        .request(endpoint, Method::GET, "/v1/watch", &query, token.header())
        .timeout(STREAM_TIMEOUT)
        .header(reqwest::header::ACCEPT, "application/x-ndjson");
    let answer = async {
        open_stream(endpoint, req).await.map_err(|e| match e {
            ClientError::Api { error, .. } if error.code == ErrorCode::Compacted => {
                ClientError::Compacted {
                    endpoint: endpoint.to_owned(),
                    revision: from.unwrap_or_default(),
                    oldest_revision: error.oldest_revision,
                }
            }
            e => e,
        })
    };
    let wait = opts.retry.response_timeout;
    let resp =
        tokio::time::timeout(wait, answer)
            .await
            .map_err(|_| ClientError::Interrupted {
                endpoint: endpoint.to_owned(),
                detail: format!("no answer to the watch request in {wait:?}"),
            })??;
    Ok(Conn {
        endpoint: endpoint.to_owned(),
        body: Box::pin(resp.bytes_stream()),
        lines: LineSplitter::new(opts.max_line_bytes),
        opened: Instant::now(),
        established: false,
        healthy: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line `chunks` hold, fed one chunk at a time.
    fn split(chunks: &[&[u8]], max: usize) -> Result<Vec<String>, LineTooLong> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c);
            while let Some(l) = s.next_line()? {
                out.push(String::from_utf8(l.to_vec()).expect("utf8"));
            }
        }
        Ok(out)
    }

    #[test]
    fn lines_are_split_across_chunks() {
        let lines = split(
            &[
                b"{\"a\":1}\n{\"b\"",
                b":2}\r",
                b"\n\n  \n{\"c\":",
                b"3}\n{\"d",
            ],
            100,
        )
        .expect("lines");
        // The last, unterminated line is not a line yet.
        assert_eq!(lines, [r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#]);
    }

    #[test]
    fn a_line_fed_byte_by_byte_splits_utf8_anywhere() {
        let text = "{\"key\":\"ключ\"}\n{\"k\":\"é\"}\n";
        let bytes: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
        let lines = split(&bytes, 100).expect("lines");
        assert_eq!(lines, ["{\"key\":\"ключ\"}", "{\"k\":\"é\"}"]);
    }

    #[test]
    fn many_lines_in_one_chunk() {
        let chunk: String = (0..1000).map(|i| format!("{i}\n")).collect();
        let lines = split(&[chunk.as_bytes()], 10).expect("lines");
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999], "999");
    }

    #[test]
    fn overlong_lines_are_refused_complete_or_not() {
        assert_eq!(split(&[b"12345\n"], 5).expect("at the limit"), ["12345"]);
        assert_eq!(split(&[b"123456\n"], 5), Err(LineTooLong));
        // Refused before its end comes, however it is chunked.
        assert_eq!(split(&[b"ok\n123", b"456"], 5), Err(LineTooLong));
        // The buffer does not grow with lines already taken.
        let mut s = LineSplitter::new(5);
        for _ in 0..100 {
            s.push(b"1234\n12");
            assert_eq!(s.next_line(), Ok(Some(&b"1234"[..])));
            assert_eq!(s.next_line(), Ok(None));
            s.push(b"3\n");
            assert_eq!(s.next_line(), Ok(Some(&b"123"[..])));
        }
        assert!(s.buf.len() <= 16, "{}", s.buf.len());
        assert_eq!(s.pending(), 0);
    }

    fn ev(key: &str, revision: u64) -> WatchEvent {
        WatchEvent {
            key: key.into(),
            revision,
            value: Some("v".into()),
            ..WatchEvent::default()
        }
    }

    fn put(key: &str, revision: u64) -> WatchLine {
        WatchLine::Put(ev(key, revision))
    }

    fn created(start_revision: u64) -> WatchLine {
        WatchLine::Created {
            revision: 100,
            start_revision,
        }
    }

    fn cancel(code: WatchCancel, resume_revision: u64) -> WatchLine {
        WatchLine::Canceled {
            code,
            reason: "r".into(),
            resume_revision,
        }
    }

    /// Feeds `lines` to `c` and keeps the revisions of delivered events
    /// (keys for events, `p<rev>` for progress, `c<start>` for created).
    fn feed(c: &mut Cursor, lines: Vec<WatchLine>) -> Vec<String> {
        lines
            .into_iter()
            .filter_map(|l| match c.on_line(l) {
                Step::Deliver(WatchItem::Put(e) | WatchItem::Delete(e)) => {
                    Some(format!("{}@{}", e.key, e.revision))
                }
                Step::Deliver(WatchItem::Progress { revision }) => Some(format!("p{revision}")),
                Step::Deliver(WatchItem::Created { start_revision, .. }) => {
                    Some(format!("c{start_revision}"))
                }
                Step::Skip | Step::Canceled { .. } | Step::Gap { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_watch_from_now_resumes_from_the_revision_the_node_chose() {
        let mut c = Cursor::new(None);
        assert_eq!(c.resume_from(), None);
        c.connection_opened();
        assert_eq!(feed(&mut c, vec![created(7)]), ["c7"]);
        // Dropped before any event: the next connection asks for 7, not now.
        assert_eq!(c.resume_from(), Some(7));
        c.connection_opened();
        assert_eq!(feed(&mut c, vec![created(7), put("a", 8)]), ["a@8"]);
        assert_eq!(c.resume_from(), Some(8));
    }

    #[test]
    fn progress_moves_the_resume_point_past_its_revision() {
        let mut c = Cursor::new(Some(5));
        c.connection_opened();
        let got = feed(
            &mut c,
            vec![created(5), put("a", 5), WatchLine::Progress { revision: 9 }],
        );
        assert_eq!(got, ["c5", "a@5", "p9"]);
        assert_eq!(c.resume_from(), Some(10));
        // A stale progress line (from a node behind) neither shows nor moves it.
        assert_eq!(
            feed(&mut c, vec![WatchLine::Progress { revision: 8 }]),
            Vec::<String>::new()
        );
        assert_eq!(c.resume_from(), Some(10));
    }

    #[test]
    fn a_revision_cut_in_the_middle_is_resumed_without_loss_or_repeat() {
        let mut c = Cursor::new(Some(1));
        c.connection_opened();
        // Revision 3 is a transaction of three puts; the connection breaks
        // after the second.
        let got = feed(
            &mut c,
            vec![created(1), put("x", 2), put("a", 3), put("b", 3)],
        );
        assert_eq!(got, ["c1", "x@2", "a@3", "b@3"]);
        assert_eq!(c.resume_from(), Some(3), "revision 3 may be incomplete");
        // The next node replays revision 3 from its start.
        c.connection_opened();
        let got = feed(
            &mut c,
            vec![
                created(3),
                put("a", 3),
                put("b", 3),
                put("c", 3),
                put("y", 4),
            ],
        );
        assert_eq!(got, ["c@3", "y@4"]);
        assert_eq!(c.resume_from(), Some(4));
        // And once more, breaking again inside revision 4 before anything new.
        c.connection_opened();
        let got = feed(&mut c, vec![created(4), put("y", 4), put("z", 4)]);
        assert_eq!(got, ["z@4"]);
    }

    #[test]
    fn events_before_the_resume_point_are_dropped() {
        let mut c = Cursor::new(Some(10));
        c.connection_opened();
        // A node that starts earlier than asked.
        let got = feed(
            &mut c,
            vec![created(8), put("old", 8), put("old", 9), put("new", 10)],
        );
        assert_eq!(got, ["c8", "new@10"]);
    }

    #[test]
    fn a_start_later_than_asked_is_a_gap() {
        let mut c = Cursor::new(Some(10));
        c.connection_opened();
        assert_eq!(
            c.on_line(created(12)),
            Step::Gap {
                asked: 10,
                started: 12
            }
        );
    }

    #[test]
    fn created_is_delivered_once() {
        let mut c = Cursor::new(None);
        assert_eq!(feed(&mut c, vec![created(3)]), ["c3"]);
        assert_eq!(c.on_line(created(3)), Step::Skip);
    }

    #[test]
    fn a_cancel_moves_to_its_resume_revision_and_keeps_a_partial_revision() {
        let mut c = Cursor::new(Some(1));
        c.connection_opened();
        feed(&mut c, vec![created(1), put("a", 4)]);
        let step = c.on_line(cancel(WatchCancel::ShuttingDown, 6));
        assert!(
            matches!(
                step,
                Step::Canceled {
                    resume_revision: 6,
                    ..
                }
            ),
            "{step:?}"
        );
        assert_eq!(c.resume_from(), Some(6));
        // A cancel at the revision the cursor is inside: what was
        // delivered of it is still skipped on the next connection.
        let mut c = Cursor::new(Some(1));
        c.connection_opened();
        feed(&mut c, vec![created(1), put("a", 4)]);
        c.connection_opened();
        feed(&mut c, vec![created(4)]);
        c.on_line(cancel(WatchCancel::Lagging, 4));
        assert_eq!(c.resume_from(), Some(4));
        c.connection_opened();
        assert_eq!(
            feed(&mut c, vec![created(4), put("a", 4), put("b", 4)]),
            ["b@4"]
        );
    }

    #[test]
    fn only_shutting_down_and_lagging_resume() {
        assert!(cancel_resumes(WatchCancel::ShuttingDown));
        assert!(cancel_resumes(WatchCancel::Lagging));
        assert!(!cancel_resumes(WatchCancel::Compacted));
        assert!(!cancel_resumes(WatchCancel::PermissionDenied));
    }

    fn api(status: u16, code: ErrorCode) -> ClientError {
        ClientError::Api {
            endpoint: "http://n1".into(),
            status,
            error: kvapi::ApiError {
                code,
                message: "m".into(),
                leader: None,
                oldest_revision: None,
            },
        }
    }

    #[test]
    fn which_failures_retry_reauthenticate_or_stop() {
        use ErrorCode::*;
        for code in [NoLeader, Unavailable, NotInitialized] {
            assert_eq!(
                on_failure(&api(503, code), true),
                OnFailure::Retry,
                "{code:?}"
            );
        }
        for code in [BadRequest, PermissionDenied, NotFound, Compacted, TooLarge] {
            assert_eq!(
                on_failure(&api(400, code), true),
                OnFailure::Stop,
                "{code:?}"
            );
        }
        let gone = ClientError::Compacted {
            endpoint: "e".into(),
            revision: 5,
            oldest_revision: Some(120),
        };
        assert_eq!(on_failure(&gone, true), OnFailure::Stop);
        let e401 = api(401, Unauthenticated);
        assert_eq!(on_failure(&e401, true), OnFailure::Reauthenticate);
        assert_eq!(on_failure(&e401, false), OnFailure::Stop);
        let wrong_password = ClientError::Authentication {
            user: "u".into(),
            cause: Box::new(e401),
        };
        assert_eq!(on_failure(&wrong_password, true), OnFailure::Stop);
        let no_server = ClientError::Authentication {
            user: "u".into(),
            cause: Box::new(api(503, NoLeader)),
        };
        assert_eq!(on_failure(&no_server, true), OnFailure::Retry);
        let cut = ClientError::Interrupted {
            endpoint: "e".into(),
            detail: "d".into(),
        };
        assert_eq!(on_failure(&cut, false), OnFailure::Retry);
        let bad_gateway = ClientError::Unexpected {
            endpoint: "e".into(),
            status: 502,
            body: "<html>".into(),
        };
        assert_eq!(on_failure(&bad_gateway, false), OnFailure::Retry);
    }

    #[test]
    fn compacted_errors_name_both_revisions() {
        let e = ClientError::Compacted {
            endpoint: "http://n1".into(),
            revision: 5,
            oldest_revision: Some(120),
        };
        assert_eq!(
            e.to_string(),
            "http://n1: revision 5 is compacted; the oldest available is 120"
        );
        assert_eq!(e.code(), Some(ErrorCode::Compacted));
        assert!(!e.retryable());
        let c = ClientError::WatchCanceled {
            endpoint: "http://n1".into(),
            code: WatchCancel::PermissionDenied,
            reason: "no read permission".into(),
            resume_revision: 9,
        };
        assert_eq!(c.code(), Some(ErrorCode::PermissionDenied));
        assert_eq!(
            c.to_string(),
            "http://n1: watch canceled (permission_denied): no read permission"
        );
    }

    #[test]
    fn the_query_names_the_target_and_the_options() {
        let q = WatchOptions::range("a", "c d")
            .with_prev_value(true)
            .with_filter(WatchFilter::Delete)
            .with_progress_interval(Duration::from_millis(250))
            .query(Some(12));
        let expect = [
            ("start", "a"),
            ("end", "c d"),
            ("start_revision", "12"),
            ("prev_value", "true"),
            ("filter", "delete"),
            ("progress_interval_ms", "250"),
        ];
        let got: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(got, expect);
        let q = WatchOptions::prefix("").query(None);
        assert_eq!(q, [("prefix", String::new())]);
        assert_eq!(
            WatchOptions::key("k").query(None),
            [("key", "k".to_string())]
        );
    }

    #[test]
    fn the_idle_timeout_follows_the_progress_interval() {
        let o = WatchOptions::key("k");
        assert_eq!(o.idle_timeout(), Some(Duration::from_secs(15)));
        let o = o.with_progress_interval(Duration::from_secs(1));
        assert_eq!(o.idle_timeout(), Some(Duration::from_secs(7)));
        let o = o.with_progress_interval(Duration::ZERO);
        assert_eq!(o.idle_timeout(), None);
        let retry = WatchRetry {
            idle_timeout: Some(Duration::from_secs(3)),
            ..WatchRetry::default()
        };
        assert_eq!(
            o.with_retry(retry).idle_timeout(),
            Some(Duration::from_secs(3))
        );
    }

    /// What the scripted server answers one request with.
    enum Answer {
        /// `200`, this NDJSON body, then close (or, `hang`, keep the
        /// connection open and send nothing more).
        Stream(String, bool),
        /// This status and JSON body.
        Status(u16, String),
    }

    /// A request as the scripted server saw it: `METHOD /path?query` and
    /// its bearer token.
    #[derive(Debug, Clone)]
    struct Req {
        line: String,
        token: Option<String>,
    }

    type Seen = std::sync::Arc<std::sync::Mutex<Vec<Req>>>;

    /// A server answering each request (one per connection) with
    /// `answer(request, index of the request)`.
    async fn server<F>(answer: F) -> (String, Seen)
    where
        F: Fn(&Req, usize) -> Answer + Send + Sync + 'static,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Seen::default();
        let log = seen.clone();
        let answer = std::sync::Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break data.len(),
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&data[..head_end]).to_string();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                };
                // Read a body, so that closing does not reset the connection.
                let len: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while data.len() < head_end + len {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                }
                let line = head.lines().next().unwrap_or_default();
                let req = Req {
                    line: line.trim_end_matches(" HTTP/1.1").to_owned(),
                    token: header("authorization")
                        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned)),
                };
                let n = {
                    let mut log = log.lock().expect("log");
                    log.push(req.clone());
                    log.len() - 1
                };
                let (resp, hang) = match answer(&req, n) {
                    Answer::Stream(body, hang) => (
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
                             connection: close\r\n\r\n{body}"
                        ),
                        hang,
                    ),
                    Answer::Status(status, body) => (
                        format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        false,
                    ),
                };
                let _ = sock.write_all(resp.as_bytes()).await;
                if hang {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        drop(sock);
                    });
                }
            }
        });
        (url, seen)
    }

    fn lines(lines: &[WatchLine]) -> String {
        lines
            .iter()
            .map(|l| serde_json::to_string(l).expect("json") + "\n")
            .collect()
    }

    fn error(status: u16, code: &str, extra: &str) -> Answer {
        Answer::Status(
            status,
            format!(r#"{{"error":{{"code":"{code}","message":"m"{extra}}}}}"#),
        )
    }

    fn fast_retry() -> WatchRetry {
        WatchRetry {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(10),
            idle_timeout: Some(Duration::from_millis(300)),
            ..WatchRetry::default()
        }
    }

    /// The stream's items as in `feed`, and its error, if it ends in one.
    async fn collect(mut w: WatchStream) -> (Vec<String>, Option<ClientError>) {
        let mut got = Vec::new();
        let timeout = Duration::from_secs(20);
        while let Some(item) = tokio::time::timeout(timeout, w.next())
            .await
            .expect("stuck")
        {
            match item {
                Ok(WatchItem::Put(e) | WatchItem::Delete(e)) => {
                    got.push(format!("{}@{}", e.key, e.revision))
                }
                Ok(WatchItem::Progress { revision }) => got.push(format!("p{revision}")),
                Ok(WatchItem::Created { start_revision, .. }) => {
                    got.push(format!("c{start_revision}"))
                }
                Err(e) => {
                    assert!(w.next().await.is_none(), "nothing after an error");
                    return (got, Some(e));
                }
            }
        }
        (got, None)
    }

    #[tokio::test]
    async fn a_watch_resumes_across_drops_cancels_and_errors_until_compacted() {
        let (url, seen) = server(|_, n| match n {
            // Revision 6 holds b and c; the connection drops inside c's line.
            0 => {
                let mut body = lines(&[created(5), put("a", 5), put("b", 6)]);
                body.push_str(r#"{"type":"put","key":"c","rev"#);
                Answer::Stream(body, false)
            }
            1 => error(503, "no_leader", ""),
            2 => Answer::Stream(
                lines(&[
                    created(6),
                    put("b", 6),
                    put("c", 6),
                    WatchLine::Progress { revision: 6 },
                    cancel(WatchCancel::ShuttingDown, 7),
                ]),
                false,
            ),
            // Registered, then silent: the idle timeout reopens it.
            3 => Answer::Stream(lines(&[created(7)]), true),
            _ => error(410, "compacted", r#","oldest_revision":9"#),
        })
        .await;
        let client = Client::new(&[url]).expect("url");
        let opts = WatchOptions::prefix("").with_retry(fast_retry());
        let (got, err) = collect(client.watch(opts)).await;
        assert_eq!(got, ["c5", "a@5", "b@6", "c@6", "p6"]);
        let err = err.expect("ends in an error");
        assert!(
            matches!(
                err,
                ClientError::Compacted {
                    revision: 7,
                    oldest_revision: Some(9),
                    ..
                }
            ),
            "{err:?}"
        );
        let asked: Vec<String> = seen
            .lock()
            .expect("log")
            .iter()
            .map(|r| r.line.clone())
            .collect();
        assert_eq!(
            asked,
            [
                "GET /v1/watch?prefix=",
                "GET /v1/watch?prefix=&start_revision=6",
                "GET /v1/watch?prefix=&start_revision=6",
                "GET /v1/watch?prefix=&start_revision=7",
                "GET /v1/watch?prefix=&start_revision=7",
            ]
        );
    }

    #[tokio::test]
    async fn a_dead_endpoint_is_skipped_and_permission_denied_stops() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}", l.local_addr().expect("addr"))
        };
        let (live, seen) = server(|_, _| {
            Answer::Stream(
                lines(&[
                    created(3),
                    put("k", 4),
                    cancel(WatchCancel::PermissionDenied, 5),
                ]),
                false,
            )
        })
        .await;
        let client = Client::new(&[dead, live]).expect("urls");
        let opts = WatchOptions::key("k")
            .with_start_revision(3)
            .with_prev_value(true)
            .with_filter(WatchFilter::Put)
            .with_retry(fast_retry());
        let (got, err) = collect(client.watch(opts)).await;
        assert_eq!(got, ["c3", "k@4"]);
        let err = err.expect("stops");
        assert_eq!(err.code(), Some(ErrorCode::PermissionDenied), "{err:?}");
        let seen = seen.lock().expect("log").clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(
            seen[0].line,
            "GET /v1/watch?key=k&start_revision=3&prev_value=true&filter=put"
        );
    }

    #[tokio::test]
    async fn reconnecting_gives_up_after_max_attempts() {
        let (url, seen) = server(|_, _| error(503, "unavailable", "")).await;
        let client = Client::new(&[url]).expect("url");
        let retry = WatchRetry {
            max_attempts: 4,
            ..fast_retry()
        };
        let (got, err) = collect(client.watch(WatchOptions::key("k").with_retry(retry))).await;
        assert!(got.is_empty());
        let err = err.expect("gives up");
        assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err:?}");
        assert_eq!(seen.lock().expect("log").len(), 4);
    }

    #[tokio::test]
    async fn bad_request_stops_at_once() {
        let (url, seen) = server(|_, _| error(400, "bad_request", "")).await;
        let client = Client::new(&[url]).expect("url");
        let (_, err) = collect(client.watch(WatchOptions::key("k"))).await;
        assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::BadRequest));
        assert_eq!(seen.lock().expect("log").len(), 1);
    }

    /// Authenticating yields t1, t2, ...; a watch is served to `good`.
    async fn token_server(good: &'static str) -> (String, Seen) {
        let tokens = std::sync::atomic::AtomicUsize::new(0);
        server(move |req, _| {
            if req.line == "POST /v1/auth/authenticate" {
                let n = tokens.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                return Answer::Status(200, format!(r#"{{"token":"t{n}","expires_in":60}}"#));
            }
            if req.token.as_deref() != Some(good) {
                return error(401, "unauthenticated", "");
            }
            let body = lines(&[
                created(1),
                put("k", 2),
                cancel(WatchCancel::PermissionDenied, 3),
            ]);
            Answer::Stream(body, false)
        })
        .await
    }

    fn authentications(seen: &Seen) -> usize {
        let seen = seen.lock().expect("log");
        seen.iter()
            .filter(|r| r.line == "POST /v1/auth/authenticate")
            .count()
    }

    #[tokio::test]
    async fn an_expired_token_is_renewed_once() {
        let (url, seen) = token_server("t2").await;
        let client = Client::new(&[url]).expect("url").with_credentials("u", "p");
        let (got, _) = collect(client.watch(WatchOptions::key("k").with_retry(fast_retry()))).await;
        assert_eq!(got, ["c1", "k@2"]);
        assert_eq!(authentications(&seen), 2);

        // Refused again after renewal: an error, not a loop.
        let (url, seen) = token_server("never").await;
        let client = Client::new(&[url]).expect("url").with_credentials("u", "p");
        let (got, err) =
            collect(client.watch(WatchOptions::key("k").with_retry(fast_retry()))).await;
        assert!(got.is_empty());
        let err = err.expect("refused");
        assert!(
            matches!(err, ClientError::Api { status: 401, .. }),
            "{err:?}"
        );
        assert_eq!(authentications(&seen), 2);
        // Without credentials there is nothing to renew.
        let (url, seen) = token_server("t1").await;
        let client = Client::new(&[url]).expect("url").with_token("old");
        let (_, err) = collect(client.watch(WatchOptions::key("k"))).await;
        assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::Unauthenticated));
        assert_eq!(authentications(&seen), 0);
    }

    #[tokio::test]
    async fn an_undecodable_line_stops_the_watch() {
        let (url, _) = server(|_, _| Answer::Stream("{\"type\":\"bogus\"}\n".into(), false)).await;
        let client = Client::new(&[url]).expect("url");
        let (_, err) = collect(client.watch(WatchOptions::key("k"))).await;
        let err = err.expect("stops");
        assert!(
            matches!(&err, ClientError::Unexpected { status: 200, body, .. } if body.contains("undecodable")),
            "{err:?}"
        );
    }

    #[test]
    fn items_turn_back_into_their_lines() {
        let e = ev("k", 4);
        let item = WatchItem::Delete(e.clone());
        assert_eq!(item.event(), Some(&e));
        assert_eq!(item.to_line(), WatchLine::Delete(e));
        assert_eq!(
            WatchItem::Progress { revision: 3 }
                .to_line()
                .next_revision(),
            Some(4)
        );
    }
}
