//! Watches between real processes: history then live changes in order,
//! filters, progress on a quiet watch, `compacted` below the history
//! window (after compaction and after a snapshot install), shutdown that
//! says where to resume, many watchers on one node, and permissions.

use std::time::{Duration, Instant};

use crate::common::{Cluster, Opts, wait_for};
use futures::StreamExt;
use kvapi::{WatchCancel, WatchLine};
use serde_json::Value;
use tokio::sync::mpsc;

/// One watch read as a client reads it: the lines in order, parsed.
pub struct RawWatch {
    lines: mpsc::UnboundedReceiver<WatchLine>,
}

/// Opens `GET /v1/watch?{query}` on `base`: the answer's status and body
/// when it is not a stream, the stream otherwise.
pub async fn open(base: &str, query: &str, token: Option<&str>) -> Result<RawWatch, (u16, Value)> {
    let mut req = reqwest::Client::new().get(format!("{base}/v1/watch?{query}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("watch request");
    let status = resp.status().as_u16();
    if status != 200 {
        return Err((status, resp.json().await.unwrap_or(Value::Null)));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let parsed = serde_json::from_slice(&line).expect("a watch line");
                if tx.send(parsed).is_err() {
                    return;
                }
            }
        }
    });
    Ok(RawWatch { lines: rx })
}

impl RawWatch {
    pub async fn next(&mut self) -> Option<WatchLine> {
        tokio::time::timeout(Duration::from_secs(10), self.lines.recv())
            .await
            .expect("a watch line within 10 s")
    }

    /// The next `n` put/delete lines, skipping progress.
    pub async fn events(&mut self, n: usize) -> Vec<WatchLine> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next().await.expect("stream open") {
                WatchLine::Progress { .. } => {}
                l @ (WatchLine::Put(_) | WatchLine::Delete(_)) => out.push(l),
                other => panic!("expected an event, got {other:?}"),
            }
        }
        out
    }
}

/// (kind, key, revision, value) of an event line, for comparisons.
fn brief(l: &WatchLine) -> (&'static str, String, u64, Option<String>) {
    match l {
        WatchLine::Put(e) => ("put", e.key.clone(), e.revision, e.value.clone()),
        WatchLine::Delete(e) => ("delete", e.key.clone(), e.revision, None),
        other => panic!("not an event: {other:?}"),
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_follower_delivers_history_then_live_changes_in_order() {
    let c = Cluster::start(3, Opts::default()).await;
    let client = c.client();
    let leader = c.leader().await;
    let follower = &c.nodes[(leader + 1) % 3];
    let r1 = client.put("app/a", "1").await.expect("put");
    let r2 = client.put("app/b", "2").await.expect("put");
    client.put("other", "x").await.expect("put");
    let r4 = client.put("app/a", "3").await.expect("put");
    // A range says which revision it read: a watch from the next one
    // continues it exactly (list, then watch).
    let listed = client
        .range(&kvclient::RangeOptions {
            prefix: Some("app/".into()),
            ..Default::default()
        })
        .await
        .expect("range");
    assert_eq!(listed.revision, r4);

    let base = follower.client_url();
    let mut w = open(
        &base,
        &format!("prefix=app/&start_revision={r1}&prev_value=true"),
        None,
    )
    .await
    .expect("watch");
    match w.next().await {
        Some(WatchLine::Created { start_revision, .. }) => assert_eq!(start_revision, r1),
        other => panic!("expected created, got {other:?}"),
    }
    let seen = w.events(3).await;
    assert_eq!(
        seen.iter().map(brief).collect::<Vec<_>>(),
        [
            ("put", "app/a".into(), r1, Some("1".into())),
            ("put", "app/b".into(), r2, Some("2".into())),
            ("put", "app/a".into(), r4, Some("3".into())),
        ],
        "history, in revision order, without the key outside the prefix"
    );
    let WatchLine::Put(e) = &seen[2] else {
        unreachable!()
    };
    assert_eq!(
        (e.prev_value.as_deref(), e.prev_revision),
        (Some("1"), Some(r1))
    );

    // From "now": only what comes after; a key watch and a delete filter.
    let mut now = open(&base, "prefix=app/", None).await.expect("watch");
    let mut one = open(&base, "key=app/b&filter=delete", None)
        .await
        .expect("watch");
    let r5 = client.put("app/c", "5").await.expect("put");
    let del = client.delete("app/b").await.expect("delete");
    // A transaction's changes share one revision and arrive together.
    let put = |k: &str| kvapi::TxnOp::Put {
        key: k.into(),
        value: "t".into(),
        value_encoding: None,
        lease: None,
    };
    let txn = kvapi::TxnRequest {
        success: vec![put("app/t1"), put("app/t2")],
        ..Default::default()
    };
    let tr = client.txn(&txn).await.expect("txn").revision;
    let live = w.events(4).await;
    assert_eq!(
        live.iter().map(brief).collect::<Vec<_>>(),
        [
            ("put", "app/c".into(), r5, Some("5".into())),
            ("delete", "app/b".into(), del.revision, None),
            ("put", "app/t1".into(), tr, Some("t".into())),
            ("put", "app/t2".into(), tr, Some("t".into())),
        ]
    );
    let WatchLine::Delete(d) = &live[1] else {
        unreachable!()
    };
    assert_eq!(
        d.prev_value.as_deref(),
        Some("2"),
        "a delete carries what it removed"
    );
    match now.next().await {
        Some(WatchLine::Created { start_revision, .. }) => assert_eq!(start_revision, r5),
        other => panic!("expected created, got {other:?}"),
    }
    assert_eq!(brief(&now.events(1).await[0]).2, r5);
    one.next().await;
    assert_eq!(
        one.events(1).await.iter().map(brief).collect::<Vec<_>>(),
        [("delete", "app/b".into(), del.revision, None)]
    );

    // Bad requests are refused before any stream starts.
    for q in [
        "",
        "key=a&prefix=b",
        "start=b&end=a",
        "key=a&filter=nope",
        "key=a&start_revision=x",
    ] {
        let Err((status, body)) = open(&base, q, None).await else {
            panic!("{q:?} opened a watch");
        };
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{q:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_sends_progress_and_compacted_history_is_refused() {
    let opts = Opts {
        env: vec![
            ("KVNODE_HISTORY_MAX_REVISIONS".into(), "20".into()),
            ("KVNODE_HISTORY_RETENTION_SECS".into(), "5".into()),
        ],
        ..Opts::default()
    };
    let c = Cluster::start(1, opts).await;
    let client = c.client();
    let base = c.nodes[0].client_url();
    let mut last = 0;
    for i in 0..60 {
        last = client.put(&format!("k{i}"), "v").await.expect("put");
    }
    // Compaction runs every second here and keeps the last 20 revisions.
    let oldest = wait_for(Duration::from_secs(10), "history compaction", || async {
        let m = client.metrics().await.ok()?;
        let floor = metric(&m, "raftkv_history_oldest_revision");
        (floor > 1).then_some(floor)
    })
    .await;
    assert_eq!(oldest, last - 20 + 1);
    let Err((status, body)) = open(&base, "prefix=&start_revision=1", None).await else {
        panic!("a watch from a compacted revision opened");
    };
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], "compacted");
    assert_eq!(body["error"]["oldest_revision"], oldest);
    // The window itself is served.
    let mut w = open(&base, &format!("prefix=&start_revision={oldest}"), None)
        .await
        .expect("watch within the window");
    w.next().await;
    assert_eq!(brief(&w.events(20).await[19]).2, last);

    // Quiet: progress lines at the asked interval carry the revision.
    let mut quiet = open(&base, "key=nothing&progress_interval_ms=200", None)
        .await
        .expect("watch");
    quiet.next().await;
    let started = Instant::now();
    for _ in 0..3 {
        match quiet.next().await {
            Some(WatchLine::Progress { revision }) => assert_eq!(revision, last),
            other => panic!("expected progress, got {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_watch_with_where_to_resume_and_another_node_continues() {
    let mut c = Cluster::start(3, Opts::default()).await;
    let client = c.client();
    let leader = c.leader().await;
    let f = (leader + 1) % 3;
    let first = client.put("p/0", "0").await.expect("put");
    let mut w = open(
        &c.nodes[f].client_url(),
        &format!("prefix=p/&start_revision={first}"),
        None,
    )
    .await
    .expect("watch");
    w.next().await;
    w.events(1).await;
    c.nodes[f].sigterm();
    let resume = loop {
        match w.next().await {
            Some(WatchLine::Canceled {
                code,
                resume_revision,
                ..
            }) => {
                assert_eq!(code, WatchCancel::ShuttingDown);
                break resume_revision;
            }
            Some(WatchLine::Progress { .. }) => {}
            other => panic!("expected canceled, got {other:?}"),
        }
    };
    assert_eq!(resume, first + 1);
    let r = client.put("p/1", "1").await.expect("put");
    let mut again = open(
        &c.nodes[leader].client_url(),
        &format!("prefix=p/&start_revision={resume}"),
        None,
    )
    .await
    .expect("watch");
    again.next().await;
    assert_eq!(
        again.events(1).await.iter().map(brief).collect::<Vec<_>>(),
        [("put", "p/1".into(), r, Some("1".into()))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_on_one_node_each_see_every_write() {
    const WATCHERS: usize = 1000;
    const WRITES: usize = 20;
    let opts = Opts {
        env: vec![("KVNODE_MAX_CONNECTIONS".into(), "4096".into())],
        ..Opts::default()
    };
    let c = Cluster::start(1, opts).await;
    let base = c.nodes[0].client_url();
    let client = c.client();
    let start = client.put("fan/0", "x").await.expect("put") + 1;
    let opened = Instant::now();
    let mut watches = Vec::new();
    for _ in 0..WATCHERS {
        let mut w = open(&base, &format!("prefix=fan/&start_revision={start}"), None)
            .await
            .expect("watch");
        w.next().await;
        watches.push(w);
    }
    let open_time = opened.elapsed();
    let m = client.metrics().await.expect("metrics");
    assert_eq!(metric(&m, "raftkv_watchers"), WATCHERS as u64);
    let wrote = Instant::now();
    let mut revs = Vec::new();
    for i in 1..=WRITES {
        revs.push(client.put(&format!("fan/{i}"), "x").await.expect("put"));
    }
    let handles: Vec<_> = watches
        .into_iter()
        .map(|mut w| {
            tokio::spawn(async move {
                w.events(WRITES)
                    .await
                    .iter()
                    .map(|l| brief(l).2)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.await.expect("watcher"), revs);
    }
    println!(
        "{WATCHERS} watchers opened in {open_time:?}; {WRITES} writes delivered to all \
         ({} events) {:?} after the first write",
        WATCHERS * WRITES,
        wrote.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_restored_from_a_snapshot_says_where_its_history_starts() {
    let opts = Opts {
        snapshot_threshold: 50,
        ..Opts::default()
    };
    let mut c = Cluster::start(3, opts).await;
    let client = c.client();
    let mut last = 0;
    for i in 0..200 {
        last = client.put(&format!("s/{i}"), "v").await.expect("put");
    }
    let idx = c.spawn_extra("learner").await;
    let l = &c.nodes[idx];
    client
        .add_learner(&l.learner_request(l.id))
        .await
        .expect("add learner");
    c.wait_applied(idx, last).await;
    let base = c.nodes[idx].client_url();
    let Err((status, body)) = open(&base, "prefix=s/&start_revision=1", None).await else {
        panic!("the learner served revisions it never applied");
    };
    assert_eq!(status, 410, "{body}");
    let oldest = body["error"]["oldest_revision"].as_u64().expect("oldest");
    assert!(
        oldest > 1 && oldest <= last + 1,
        "oldest {oldest}, last {last}"
    );
    // From there on it serves everything, the live writes included.
    let mut w = open(&base, &format!("prefix=s/&start_revision={oldest}"), None)
        .await
        .expect("watch");
    w.next().await;
    let r = client.put("s/new", "n").await.expect("put");
    let n = (r - oldest + 1) as usize;
    let got = w.events(n).await;
    assert_eq!(
        brief(&got[n - 1]),
        ("put", "s/new".into(), r, Some("n".into()))
    );
}

/// The contract that matters: while writes go on, the leader is killed and
/// restarted, then the watched node itself; the watcher (kvclient's
/// self-resuming stream) sees every acknowledged write exactly once, in
/// revision order, with no revision missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_every_write_once_in_order_across_leader_and_watched_node_kills() {
    use kvclient::{WatchItem, WatchOptions};

    let mut c = Cluster::start(3, Opts::default()).await;
    let leader = c.leader().await;
    let watched = (leader + 1) % 3;
    let mut endpoints = vec![c.nodes[watched].client_url()];
    endpoints.extend(
        c.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != watched)
            .map(|(_, n)| n.client_url()),
    );
    let start = c.client().put("w/start", "s").await.expect("put");
    let watcher = kvclient::Client::new(&endpoints).expect("client");
    let mut stream = watcher.watch(WatchOptions::prefix("w/").with_start_revision(start));
    let received = tokio::spawn(async move {
        let mut got: Vec<(u64, String, String)> = Vec::new();
        while let Some(item) = stream.next().await {
            match item.expect("the watch resumes by itself") {
                WatchItem::Put(e) => {
                    let done = e.key == "w/end";
                    got.push((e.revision, e.key, e.value.unwrap_or_default()));
                    if done {
                        return got;
                    }
                }
                WatchItem::Delete(e) => panic!("no deletes here: {e:?}"),
                _ => {}
            }
        }
        panic!("the stream ended");
    });

    let writes = c.client();
    let mut acked = vec![(start, "w/start".to_string(), "s".to_string())];
    let mut i = 0;
    let mut write_some = async |n: usize, acked: &mut Vec<(u64, String, String)>| {
        for _ in 0..n {
            let (k, v) = (format!("w/{i:04}"), format!("v{i}"));
            i += 1;
            // An error is an unknown outcome: the write may still appear.
            if let Ok(r) = writes.put(&k, v.clone()).await {
                acked.push((r, k, v));
            }
        }
    };
    write_some(100, &mut acked).await;
    c.nodes[leader].kill9();
    write_some(100, &mut acked).await;
    c.nodes[leader].start(None).await;
    write_some(100, &mut acked).await;
    c.nodes[watched].kill9();
    write_some(100, &mut acked).await;
    c.nodes[watched].start(None).await;
    write_some(100, &mut acked).await;
    let end = writes.put("w/end", "e").await.expect("last put");
    acked.push((end, "w/end".into(), "e".into()));

    let got = tokio::time::timeout(Duration::from_secs(60), received)
        .await
        .expect("the watcher reached the last write")
        .expect("watcher task");
    let revs: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(revs.first(), Some(&start));
    for w in revs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "every revision once, in order: {w:?}");
    }
    let by_rev: std::collections::HashMap<u64, &(u64, String, String)> =
        got.iter().map(|g| (g.0, g)).collect();
    for a in &acked {
        assert_eq!(
            by_rev.get(&a.0),
            Some(&a),
            "acknowledged write {a:?} seen as written"
        );
    }
    println!(
        "{} events received for {} acknowledged writes across two kills",
        got.len(),
        acked.len()
    );
}

/// A watcher that stops reading does not hold up the writes: its task
/// blocks on the full connection (a bounded buffer), and once it reads
/// again it is told it fell too far behind, with the revision to resume
/// from. The RSS figures are printed, not asserted: memtables grow with
/// the writes whatever the watchers do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_cancelled_as_lagging_and_can_resume() {
    const LAG: u64 = 200;
    let opts = Opts {
        env: vec![("KVNODE_WATCH_MAX_LAG".into(), LAG.to_string())],
        ..Opts::default()
    };
    let c = Cluster::start(1, opts).await;
    let base = c.nodes[0].client_url();
    let client = c.client();
    let start = client.put("slow/0", "x").await.expect("put");
    // Opened, then not read: the client's channel and the socket fill up.
    let resp = reqwest::Client::new()
        .get(format!(
            "{base}/v1/watch?prefix=slow/&start_revision={start}"
        ))
        .send()
        .await
        .expect("watch");
    assert_eq!(resp.status(), 200);
    let rss_before = rss_kib(c.nodes[0].pid());
    let value = "v".repeat(16 << 10);
    let wrote = Instant::now();
    let mut last = start;
    for i in 1..=1000 {
        last = client
            .put(&format!("slow/{i}"), value.clone())
            .await
            .expect("put");
    }
    let write_time = wrote.elapsed();
    let rss_after = rss_kib(c.nodes[0].pid());

    // Now read: what was buffered, then the cancellation.
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut seen = 0u64;
    let cancel = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("data within 10 s")
            .expect("the stream ends with a canceled line")
            .expect("chunk");
        buf.extend_from_slice(&chunk);
        let mut found = None;
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            match serde_json::from_slice::<WatchLine>(&line).expect("line") {
                WatchLine::Put(e) => {
                    assert_eq!(e.revision, start + seen, "in order, no gap");
                    seen += 1;
                }
                WatchLine::Canceled {
                    code,
                    resume_revision,
                    ..
                } => found = Some((code, resume_revision)),
                _ => {}
            }
        }
        if let Some(f) = found {
            break f;
        }
    };
    assert_eq!(cancel.0, WatchCancel::Lagging);
    assert_eq!(
        cancel.1,
        start + seen,
        "resume right after the last event sent"
    );
    assert!(seen < 1001, "cancelled before the end ({seen} events)");
    // Resuming from there delivers the rest.
    let mut again = open(
        &base,
        &format!("prefix=slow/&start_revision={}", cancel.1),
        None,
    )
    .await
    .expect("resume");
    again.next().await;
    let rest = again.events((last - cancel.1 + 1) as usize).await;
    assert_eq!(brief(rest.last().expect("events")).2, last);
    println!(
        "1000 writes of 16 KiB with a stalled watcher: {write_time:?}; kvnode RSS \
         {rss_before} KiB -> {rss_after} KiB; cancelled after {seen} events"
    );
    // The cancelled watch let go of its task and slot.
    let m = client.metrics().await.expect("metrics");
    assert_eq!(
        metric(&m, "raftkv_watchers"),
        1,
        "only the resumed watch is open"
    );
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// The history is on disk: a node killed with SIGKILL and restarted still
/// serves a watch from before the kill, every event in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_survives_a_kill_and_restart() {
    let mut c = Cluster::start(1, Opts::default()).await;
    let client = c.client();
    let first = client.put("h/0", "0").await.expect("put");
    let mut last = first;
    for i in 1..50 {
        last = client
            .put(&format!("h/{i}"), format!("{i}"))
            .await
            .expect("put");
    }
    let del = client.delete("h/7").await.expect("delete").revision;
    c.nodes[0].kill9();
    c.nodes[0].start(None).await;
    c.wait_all_ready().await;
    let mut w = open(
        &c.nodes[0].client_url(),
        &format!("prefix=h/&start_revision={first}&prev_value=true"),
        None,
    )
    .await
    .expect("watch after the restart");
    w.next().await;
    let got = w.events(51).await;
    assert_eq!(
        brief(&got[0]),
        ("put", "h/0".into(), first, Some("0".into()))
    );
    assert_eq!(
        brief(&got[49]),
        ("put", "h/49".into(), last, Some("49".into()))
    );
    assert_eq!(brief(&got[50]), ("delete", "h/7".into(), del, None));
    let WatchLine::Delete(d) = &got[50] else {
        unreachable!()
    };
    assert_eq!(d.prev_value.as_deref(), Some("7"));
}
