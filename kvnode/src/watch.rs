//! Watches: each open watch is one task that sends the events of its keys
//! from a start revision on, in revision order, to one HTTP stream.
//!
//! A watch first reads the history (`store/history.rs`) until it reaches
//! the applied revision, then follows what the state machine publishes
//! after each apply. It subscribes before its first history read, so every
//! apply is either in what it read or in what it receives; revisions it has
//! already sent are skipped. A watcher that falls behind the publisher's
//! backlog goes back to reading history, so a slow reader costs disk reads,
//! never memory or the write path; one that falls `--watch-max-lag`
//! revisions further behind than it started, or whose next revision is
//! compacted away, is cancelled with the revision to resume from.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use kvapi::{JsonValue, WatchCancel, WatchEvent, WatchLine};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::auth::{Access, KeySpan};
use crate::node::Node;
use crate::store::{Applied, Event, EventKind, HistoryError};

/// History read per step while catching up: whole revisions, about this much.
const PAGE_EVENTS: usize = 512;
const PAGE_BYTES: usize = 256 << 10;
/// A client that takes no data for this long is dropped: it holds a
/// connection and a task, and nothing else can be done for it.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What a watch delivers.
#[derive(Debug, Clone)]
pub struct Filter {
    pub span: KeySpan,
    /// Only this kind of event (`filter=put|delete`); `None`: both.
    pub only: Option<EventKind>,
    pub prev_value: bool,
}

impl Filter {
    pub fn matches(&self, e: &Event) -> bool {
        let k = e.key.as_bytes();
        k >= self.span.start.as_slice()
            && self.span.end.as_ref().is_none_or(|end| k < end.as_slice())
            && self.only.is_none_or(|only| only == e.kind)
    }

    /// The wire form of a matching event.
    pub fn line(&self, e: &Event) -> WatchLine {
        let mut w = WatchEvent {
            key: e.key.clone(),
            revision: e.revision,
            ..WatchEvent::default()
        };
        if e.kind == EventKind::Put {
            let v = JsonValue::from_bytes(&e.value);
            w.value = Some(v.value);
            w.value_encoding = v.value_encoding;
        }
        if self.prev_value
            && let Some((rev, prev)) = &e.prev
        {
            let v = JsonValue::from_bytes(prev);
            w.prev_value = Some(v.value);
            w.prev_value_encoding = v.value_encoding;
            w.prev_revision = Some(*rev);
        }
        match e.kind {
            EventKind::Put => WatchLine::Put(w),
            EventKind::Delete => WatchLine::Delete(w),
        }
    }
}

/// One watch as the API opened it.
#[derive(Debug, Clone)]
pub struct Spec {
    pub filter: Filter,
    /// The first revision to deliver.
    pub start: u64,
    pub progress_interval: Duration,
    /// The user it acts as (auth enabled), re-checked when auth changes.
    pub user: Option<String>,
}

/// Serialises lines as NDJSON into one chunk.
fn chunk(lines: &[WatchLine]) -> Bytes {
    let mut out = Vec::with_capacity(lines.len() * 96);
    for l in lines {
        // Plain data: serialising it cannot fail.
        if serde_json::to_writer(&mut out, l).is_ok() {
            out.push(b'\n');
        }
    }
    Bytes::from(out)
}

/// What woke a watch up.
enum Wake {
    Drained,
    Gone,
    Applied(Result<Applied, RecvError>),
    Tick,
}

/// Why the task stopped sending.
enum Stop {
    /// The client went away (or stopped reading): nothing more to say.
    Gone,
    Cancel(WatchCancel, String),
}

struct Watcher {
    node: Arc<Node>,
    spec: Spec,
    tx: mpsc::Sender<Bytes>,
    /// The next revision to deliver: everything before it has been sent.
    next: u64,
    lag_limit: u64,
    auth_revision: u64,
    sent: bool,
}

impl Watcher {
    async fn send(&mut self, lines: &[WatchLine]) -> Result<(), Stop> {
        self.send_bytes(chunk(lines)).await
    }

    async fn send_bytes(&mut self, bytes: Bytes) -> Result<(), Stop> {
        self.sent = true;
        match tokio::time::timeout(SEND_TIMEOUT, self.tx.send(bytes)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Stop::Gone),
        }
    }

    /// Sends the matching events not sent yet, and moves `next` past
    /// `upto`. `shared`: the batch's encodings (live events), made once for
    /// all watchers; history pages are encoded here.
    async fn deliver(
        &mut self,
        events: &[Event],
        shared: Option<&[OnceLock<Vec<Bytes>>; 2]>,
        upto: u64,
    ) -> Result<(), Stop> {
        // Before sending: events applied after a revoke must not go out.
        self.checks()?;
        let filter = &self.spec.filter;
        let encoded = shared.map(|enc| {
            enc[usize::from(filter.prev_value)]
                .get_or_init(|| events.iter().map(|e| chunk(&[filter.line(e)])).collect())
        });
        let mut out = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if e.revision >= self.next && filter.matches(e) {
                match encoded {
                    Some(lines) => out.extend_from_slice(&lines[i]),
                    None => out.extend_from_slice(&chunk(&[filter.line(e)])),
                }
            }
        }
        self.next = self.next.max(upto + 1);
        if out.is_empty() {
            return Ok(());
        }
        self.send_bytes(Bytes::from(out)).await
    }

    /// Reads history until nothing is left past `next`; `Ok(())` once
    /// caught up with what was applied when the last page was read.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            let db = self.node.db.clone();
            let from = self.next;
            let page =
                tokio::task::spawn_blocking(move || db.history(from, PAGE_EVENTS, PAGE_BYTES))
                    .await
                    .map_err(|_| Stop::Gone)?;
            match page {
                Err(HistoryError::Compacted { oldest, .. }) => {
                    return Err(Stop::Cancel(
                        WatchCancel::Compacted,
                        format!(
                            "revision {from} is no longer in this node's history \
                             (it starts at {oldest})"
                        ),
                    ));
                }
                Err(HistoryError::Store(e)) => {
                    tracing::warn!(error = %e, "watch: history read failed");
                    return Err(Stop::Cancel(
                        WatchCancel::ShuttingDown,
                        format!("history read failed: {e}; resume on another node"),
                    ));
                }
                Ok(p) if p.events.is_empty() => return Ok(()),
                Ok(p) => self.deliver(&p.events, None, p.next - 1).await?,
            }
        }
    }

    /// Permission still held, and not too far behind.
    fn checks(&mut self) -> Result<(), Stop> {
        let auth = self.node.db.auth();
        if auth.revision != self.auth_revision {
            self.auth_revision = auth.revision;
            if let Some(user) = &self.spec.user
                && auth.enabled
                && !auth.allows(user, Access::Read, &self.spec.filter.span)
            {
                return Err(Stop::Cancel(
                    WatchCancel::PermissionDenied,
                    format!("user {user:?} may no longer read the watched keys"),
                ));
            }
        }
        let behind = self.node.db.revision().saturating_sub(self.next - 1);
        if behind > self.lag_limit {
            return Err(Stop::Cancel(
                WatchCancel::Lagging,
                format!("{behind} revisions behind the writes; resume from the last one received"),
            ));
        }
        Ok(())
    }

    async fn run(&mut self) -> Result<(), Stop> {
        let mut applied = self.node.db.subscribe();
        let mut progress = tokio::time::interval(self.spec.progress_interval);
        progress.reset();
        let mut behind = true;
        loop {
            if behind {
                self.catch_up().await?;
                behind = false;
            }
            let node = self.node.clone();
            let wake = tokio::select! {
                _ = node.drained() => Wake::Drained,
                _ = self.tx.closed() => Wake::Gone,
                m = applied.recv() => Wake::Applied(m),
                _ = progress.tick() => Wake::Tick,
            };
            match wake {
                Wake::Drained => {
                    return Err(Stop::Cancel(
                        WatchCancel::ShuttingDown,
                        "the node is shutting down; resume on another node".into(),
                    ));
                }
                Wake::Gone | Wake::Applied(Err(RecvError::Closed)) => return Err(Stop::Gone),
                Wake::Applied(Err(RecvError::Lagged(_))) => behind = true,
                Wake::Applied(Ok(Applied::Events { batch, revision })) => {
                    if revision < self.next {
                        continue;
                    }
                    // Only after a lag: what it skipped is in history.
                    if batch.events.first().is_some_and(|e| e.revision > self.next) {
                        behind = true;
                        continue;
                    }
                    self.deliver(&batch.events, Some(&batch.encoded), revision)
                        .await?;
                }
                Wake::Applied(Ok(Applied::Reset { floor })) if self.next < floor => {
                    return Err(Stop::Cancel(
                        WatchCancel::Compacted,
                        format!(
                            "this node installed a snapshot; its history now starts at {floor}"
                        ),
                    ));
                }
                Wake::Applied(Ok(Applied::Reset { .. })) => {}
                Wake::Tick => {
                    if !std::mem::take(&mut self.sent) {
                        let line = WatchLine::Progress {
                            revision: self.next - 1,
                        };
                        self.send(&[line]).await?;
                        self.sent = false;
                    }
                }
            }
            self.checks()?;
        }
    }
}

/// Runs one watch until the client leaves or it is cancelled; the
/// `created` line goes first, a `canceled` line (if any) last.
pub async fn run(node: Arc<Node>, spec: Spec, tx: mpsc::Sender<Bytes>) {
    let revision = node.db.revision();
    let start = spec.start;
    let lag_limit = revision.saturating_sub(start.saturating_sub(1)) + node.config.watch_max_lag;
    let mut w = Watcher {
        auth_revision: node.db.auth().revision,
        node,
        spec,
        tx,
        next: start,
        lag_limit,
        sent: false,
    };
    if w.send(&[WatchLine::Created {
        revision,
        start_revision: start,
    }])
    .await
    .is_err()
    {
        return;
    }
    if let Err(Stop::Cancel(code, reason)) = w.run().await {
        tracing::debug!(?code, %reason, resume = w.next, "watch cancelled");
        let line = WatchLine::Canceled {
            code,
            reason,
            resume_revision: w.next,
        };
        let _ = w.send(&[line]).await;
    }
}

/// Drops history older than the retention settings, every few seconds, for
/// as long as the node runs.
pub async fn compact_history(node: Arc<Node>) {
    let retention = Duration::from_secs(node.config.history_retention_secs);
    let max_revisions = node.config.history_max_revisions;
    let tick = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(10));
    // (when, revision then): the revision that was current `retention` ago
    // is the oldest one kept. Kept in memory: after a restart the window
    // is longer than asked until a full retention period has passed.
    let mut seen: std::collections::VecDeque<(tokio::time::Instant, u64)> = Default::default();
    let mut timer = tokio::time::interval(tick);
    loop {
        timer.tick().await;
        let now = tokio::time::Instant::now();
        let revision = node.db.revision();
        seen.push_back((now, revision));
        let mut by_age = 0;
        while let Some(&(t, r)) = seen.front() {
            if now.duration_since(t) < retention {
                break;
            }
            by_age = r + 1;
            seen.pop_front();
        }
        let by_count = revision.saturating_sub(max_revisions) + 1;
        let keep_from = by_age.max(by_count);
        let db = node.db.clone();
        match tokio::task::spawn_blocking(move || db.compact_history(keep_from)).await {
            Ok(Ok(Some(floor))) => tracing::debug!(floor, "history compacted"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "history compaction failed"),
            Err(e) => tracing::warn!(error = %e, "history compaction task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, key: &str) -> Event {
        Event {
            kind,
            key: key.into(),
            revision: 5,
            value: b"new".to_vec(),
            prev: Some((3, serde_bytes::ByteBuf::from(vec![0xff, 0x00]))),
        }
    }

    #[test]
    fn filters_select_keys_and_kinds_and_lines_carry_prev_values_on_request() {
        let f = Filter {
            span: KeySpan::prefix("app/"),
            only: None,
            prev_value: false,
        };
        assert!(f.matches(&ev(EventKind::Put, "app/x")));
        assert!(!f.matches(&ev(EventKind::Put, "apq")));
        let puts_only = Filter {
            only: Some(EventKind::Put),
            ..f.clone()
        };
        assert!(!puts_only.matches(&ev(EventKind::Delete, "app/x")));
        let one = Filter {
            span: KeySpan::key("k"),
            only: None,
            prev_value: true,
        };
        assert!(one.matches(&ev(EventKind::Put, "k")));
        assert!(!one.matches(&ev(EventKind::Put, "k2")));

        let WatchLine::Put(w) = f.line(&ev(EventKind::Put, "app/x")) else {
            panic!("a put");
        };
        assert_eq!((w.value.as_deref(), w.prev_value), (Some("new"), None));
        let WatchLine::Delete(w) = one.line(&ev(EventKind::Delete, "k")) else {
            panic!("a delete");
        };
        assert_eq!(w.value, None);
        // Binary previous values travel as base64, flagged.
        assert_eq!(w.prev_value.as_deref(), Some("/wA="));
        assert_eq!(w.prev_value_encoding, Some(kvapi::ValueEncoding::Base64));
        assert_eq!(w.prev_revision, Some(3));
    }

    #[test]
    fn chunks_are_one_json_object_per_line() {
        let c = chunk(&[
            WatchLine::Progress { revision: 4 },
            WatchLine::Created {
                revision: 4,
                start_revision: 5,
            },
        ]);
        let text = std::str::from_utf8(&c).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(text.ends_with('\n'));
        for l in lines {
            serde_json::from_str::<WatchLine>(l).expect("each line parses");
        }
    }
}
