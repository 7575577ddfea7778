//! `kvctl bench watch`: what watchers cost the writes, and how fast the
//! changes reach them.
//!
//! For each watcher count (and first for none, the baseline) it opens that
//! many watches on a fresh prefix, spread over the endpoints, waits until
//! every one is registered, runs closed-loop writers under the prefix for
//! the duration, then lets the watchers drain (at most a few seconds) and
//! closes them. It measures:
//!
//! - write throughput and write latency (request to acknowledgement);
//! - event latency: from a write's acknowledgement to its event's arrival
//!   at a watcher, matched by key and revision. Each watcher times one
//!   event in `k` (k = watchers / --samples-per-write, at least 1, offset
//!   by the watcher's index) so that about that many watchers time each
//!   write; an event that arrives before its write's acknowledgement
//!   (the node sends both at once) counts as 0, and the JSON report says
//!   how many did (`events_before_ack`);
//! - events delivered per second in total (over the watchers, from the
//!   first write to the last arrival), and how many of the expected
//!   events (writes x watchers) arrived before the drain ended.
//!
//! Its keys are deleted before and after each round. The watchers and the
//! nodes share the machine in a local test, so the client's own CPU is
//! part of what is measured.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use kvclient::client::KeyRange;
use kvclient::{Client, WatchItem, WatchOptions};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::bench::{Target, target_endpoints};
use crate::table::Table;

#[derive(Args, Debug, Clone)]
pub struct WatchBenchArgs {
    /// Watcher counts to measure, comma-separated (a 0-watcher baseline is always measured first).
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    pub watchers: Vec<usize>,
    /// Seconds of writes per watcher count.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Concurrent writers (closed loop).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Distinct keys each writer cycles through.
    #[arg(long, default_value_t = 100)]
    pub keys: u64,
    /// Key prefix; every key under it is deleted before and after.
    #[arg(long, default_value = "bench-watch/")]
    pub prefix: String,
    /// Where writes go: `leader` or `all` endpoints round-robin (watches always spread over all).
    #[arg(long, value_enum, default_value = "leader")]
    pub target: Target,
    /// About how many watchers time each write's event.
    #[arg(long, default_value_t = 16)]
    pub samples_per_write: usize,
    /// Seconds to wait, after the writes, for the watchers to receive the last one.
    #[arg(long, default_value_t = 5)]
    pub drain: u64,
}

/// One watcher count's results.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub watchers: usize,
    pub writes: u64,
    pub write_errors: u64,
    pub writes_per_s: f64,
    pub write_p50_ms: f64,
    pub write_p99_ms: f64,
    /// Events delivered to all watchers together.
    pub events: u64,
    /// writes x watchers.
    pub expected_events: u64,
    pub events_per_s: f64,
    pub event_samples: u64,
    /// Timed events that arrived before their write was acknowledged
    /// (counted as 0 ms).
    pub events_before_ack: u64,
    pub event_p50_ms: Option<f64>,
    pub event_p99_ms: Option<f64>,
    /// Watches that ended with an error.
    pub watch_errors: u64,
}

#[derive(Serialize)]
struct Report<'a> {
    target: Target,
    write_endpoints: &'a [String],
    watch_endpoints: &'a [String],
    clients: usize,
    duration_s: u64,
    value_size: usize,
    rows: &'a [Row],
}

pub async fn run(base: &Client, args: WatchBenchArgs, json: bool) -> anyhow::Result<()> {
    if args.clients == 0 || args.keys == 0 || args.duration == 0 {
        bail!("--clients, --keys and --duration must be positive");
    }
    if args.prefix.is_empty() {
        bail!("--prefix must not be empty (its keys are deleted)");
    }
    let counts = watcher_counts(&args.watchers);
    let write_endpoints = target_endpoints(base, args.target).await?;
    let watch_endpoints = base.endpoints().to_vec();
    let mut rows = Vec::new();
    for n in counts {
        if !json {
            eprintln!("bench watch: {n} watchers, {}s of writes...", args.duration);
        }
        let row = round(base, &args, n, &write_endpoints, &watch_endpoints).await;
        // Clean up whatever happened.
        let prefix = round_prefix(&args.prefix, n);
        let cleaned = base.delete_range(&KeyRange::Prefix(prefix.clone())).await;
        let row = row?;
        cleaned.with_context(|| format!("deleting {prefix:?}"))?;
        rows.push(row);
    }
    if json {
        let report = Report {
            target: args.target,
            write_endpoints: &write_endpoints,
            watch_endpoints: &watch_endpoints,
            clients: args.clients,
            duration_s: args.duration,
            value_size: args.value_size,
            rows: &rows,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "writes: {} clients to {:?}, {} B values, {}s per row; watches over {:?}",
            args.clients, write_endpoints, args.value_size, args.duration, watch_endpoints
        );
        print!("{}", table(&rows).render());
    }
    if rows.iter().any(|r| r.writes == 0) {
        bail!("a round had no successful write");
    }
    Ok(())
}

/// 0 first, then the requested counts in order, without repeats.
fn watcher_counts(requested: &[usize]) -> Vec<usize> {
    let mut out = vec![0];
    for &n in requested {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

fn round_prefix(prefix: &str, watchers: usize) -> String {
    format!("{prefix}w{watchers}/")
}

/// Every k-th event is timed by a watcher, k such that about
/// `samples_per_write` watchers time each write.
fn sample_every(watchers: usize, samples_per_write: usize) -> u64 {
    (watchers / samples_per_write.max(1)).max(1) as u64
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

pub fn table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        "WATCHERS",
        "WRITES/S",
        "WRITE P50 MS",
        "WRITE P99 MS",
        "EVENTS/S",
        "EVENT P50 MS",
        "EVENT P99 MS",
        "DELIVERED",
        "ERRORS",
    ]);
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for r in rows {
        let delivered = if r.watchers == 0 {
            "-".to_string()
        } else if r.expected_events == 0 {
            "0/0".to_string()
        } else {
            format!("{:.1}%", 100.0 * r.events as f64 / r.expected_events as f64)
        };
        t.row(vec![
            r.watchers.to_string(),
            format!("{:.0}", r.writes_per_s),
            format!("{:.2}", r.write_p50_ms),
            format!("{:.2}", r.write_p99_ms),
            if r.watchers == 0 {
                "-".into()
            } else {
                format!("{:.0}", r.events_per_s)
            },
            opt(r.event_p50_ms),
            opt(r.event_p99_ms),
            delivered,
            format!("{}", r.write_errors + r.watch_errors),
        ]);
    }
    t
}

/// What one watcher saw.
#[derive(Default)]
struct Seen {
    events: u64,
    /// (revision, key, arrival) of the timed events.
    samples: Vec<(u64, String, Instant)>,
    last_arrival: Option<Instant>,
    error: bool,
}

/// One write as acknowledged.
struct Ack {
    key: String,
    at: Instant,
}

async fn round(
    base: &Client,
    args: &WatchBenchArgs,
    watchers: usize,
    write_endpoints: &[String],
    watch_endpoints: &[String],
) -> anyhow::Result<Row> {
    let prefix = round_prefix(&args.prefix, watchers);
    base.delete_range(&KeyRange::Prefix(prefix.clone()))
        .await
        .with_context(|| format!("deleting {prefix:?}"))?;

    // The watchers, all registered before the first write.
    let per_endpoint: Vec<Client> = watch_endpoints
        .iter()
        .map(|e| base.for_endpoints(&[e]))
        .collect::<Result<_, _>>()?;
    let (stop_tx, stop_rx) = watch::channel::<Option<(u64, Instant)>>(None);
    let (ready_tx, mut ready_rx) = mpsc::channel::<bool>(watchers.max(1));
    let every = sample_every(watchers, args.samples_per_write);
    let mut tasks = Vec::with_capacity(watchers);
    for i in 0..watchers {
        let client = per_endpoint[i % per_endpoint.len()].clone();
        let opts = WatchOptions::prefix(&prefix);
        let (stop, ready) = (stop_rx.clone(), ready_tx.clone());
        tasks.push(tokio::spawn(watcher(
            client, opts, i as u64, every, stop, ready,
        )));
    }
    drop(ready_tx);
    let open_deadline = Duration::from_secs(30) + Duration::from_millis(20 * watchers as u64);
    let opened = tokio::time::timeout(open_deadline, async {
        let mut ok = 0;
        while ok < watchers {
            match ready_rx.recv().await {
                Some(true) => ok += 1,
                Some(false) | None => return Err(ok),
            }
        }
        Ok(())
    })
    .await;
    match opened {
        Ok(Ok(())) => {}
        Ok(Err(ok)) => {
            for t in &tasks {
                t.abort();
            }
            bail!("only {ok} of {watchers} watches opened (is the open-file limit high enough?)");
        }
        Err(_) => {
            for t in &tasks {
                t.abort();
            }
            bail!("the {watchers} watches did not all open within {open_deadline:?}");
        }
    }

    // The writers.
    let value = vec![b'x'; args.value_size];
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration);
    let mut writers = Vec::new();
    for w in 0..args.clients {
        let c = base
            .for_endpoints(&[&write_endpoints[w % write_endpoints.len()]])?
            .with_attempts(1);
        let (value, errors, prefix, keys) =
            (value.clone(), errors.clone(), prefix.clone(), args.keys);
        writers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("3 significant digits is valid");
            let mut acks: Vec<(u64, Ack)> = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = format!("{prefix}{w:04}/{:06}", n % keys);
                n += 1;
                let t = Instant::now();
                match c.put(&key, value.clone()).await {
                    Ok(rev) => {
                        let at = Instant::now();
                        let _ = hist.record((at - t).as_micros() as u64);
                        acks.push((rev, Ack { key, at }));
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (hist, acks)
        }));
    }
    let mut write_hist = Histogram::<u64>::new(3).expect("3 significant digits is valid");
    let mut acks: HashMap<u64, Ack> = HashMap::new();
    for w in writers {
        let (h, a) = w.await?;
        write_hist.add(h)?;
        acks.extend(a);
    }
    let write_elapsed = start.elapsed().as_secs_f64();
    let last_revision = acks.keys().copied().max().unwrap_or(0);

    // Let the watchers catch up with the last write, then close them.
    let _ = stop_tx.send(Some((
        last_revision,
        Instant::now() + Duration::from_secs(args.drain),
    )));
    let mut event_hist = Histogram::<u64>::new(3).expect("3 significant digits is valid");
    let (mut events, mut watch_errors, mut last_arrival) = (0u64, 0u64, None::<Instant>);
    let mut early = 0u64;
    for t in tasks {
        let seen = t.await?;
        events += seen.events;
        watch_errors += u64::from(seen.error);
        last_arrival = last_arrival.max(seen.last_arrival);
        for (rev, key, arrived) in seen.samples {
            if let Some(ack) = acks.get(&rev)
                && ack.key == key
            {
                early += u64::from(arrived < ack.at);
                let _ =
                    event_hist.record(arrived.saturating_duration_since(ack.at).as_micros() as u64);
            }
        }
    }
    let writes = write_hist.len();
    let delivery = last_arrival.map_or(0.0, |l| (l - start).as_secs_f64());
    let timed = !event_hist.is_empty();
    Ok(Row {
        watchers,
        writes,
        write_errors: errors.load(Ordering::Relaxed),
        writes_per_s: writes as f64 / write_elapsed,
        write_p50_ms: ms(write_hist.value_at_quantile(0.5)),
        write_p99_ms: ms(write_hist.value_at_quantile(0.99)),
        events,
        expected_events: writes * watchers as u64,
        events_per_s: if delivery > 0.0 {
            events as f64 / delivery
        } else {
            0.0
        },
        event_samples: event_hist.len(),
        events_before_ack: early,
        event_p50_ms: timed.then(|| ms(event_hist.value_at_quantile(0.5))),
        event_p99_ms: timed.then(|| ms(event_hist.value_at_quantile(0.99))),
        watch_errors,
    })
}

/// One watcher: says when it is registered, counts every put, times one in
/// `every`, and stops once it has the last write (or the drain ran out).
async fn watcher(
    client: Client,
    opts: WatchOptions,
    index: u64,
    every: u64,
    mut stop: watch::Receiver<Option<(u64, Instant)>>,
    ready: mpsc::Sender<bool>,
) -> Seen {
    let mut seen = Seen::default();
    let mut stream = client.watch(opts);
    let mut ready = Some(ready);
    let mut last_revision = 0u64;
    let mut until: Option<(u64, Instant)> = None;
    loop {
        if let Some((last, deadline)) = until
            && (last_revision >= last || Instant::now() >= deadline)
        {
            return seen;
        }
        let sleep_until = until.map(|(_, d)| d);
        let item = tokio::select! {
            item = stream.next() => item,
            changed = stop.changed(), if until.is_none() => {
                if changed.is_err() {
                    return seen;
                }
                until = *stop.borrow_and_update();
                continue;
            }
            _ = async {
                match sleep_until {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => futures::future::pending().await,
                }
            } => return seen,
        };
        match item {
            Some(Ok(WatchItem::Created { .. })) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(true).await;
                }
            }
            Some(Ok(WatchItem::Put(e))) => {
                let now = Instant::now();
                if (seen.events + index).is_multiple_of(every) {
                    seen.samples.push((e.revision, e.key, now));
                }
                seen.events += 1;
                seen.last_arrival = Some(now);
                last_revision = last_revision.max(e.revision);
            }
            Some(Ok(WatchItem::Delete(e))) => last_revision = last_revision.max(e.revision),
            Some(Ok(WatchItem::Progress { revision })) => {
                last_revision = last_revision.max(revision);
            }
            Some(Err(_)) | None => {
                seen.error = true;
                if let Some(r) = ready.take() {
                    let _ = r.send(false).await;
                }
                return seen;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Cmd};

    fn args(argv: &[&str]) -> Result<WatchBenchArgs, clap::Error> {
        let cli = Cli::try_parse_from(["kvctl", "bench", "watch"].iter().chain(argv).copied())?;
        let Cmd::Bench(b) = cli.cmd else {
            panic!("not bench")
        };
        match b.mode() {
            Some(crate::bench::BenchMode::Watch(w)) => Ok(w.clone()),
            None => panic!("no watch mode"),
        }
    }

    #[test]
    fn watch_bench_flags() {
        let a = args(&[]).expect("defaults");
        assert_eq!(a.watchers, [1, 100, 1000]);
        assert_eq!((a.duration, a.clients, a.value_size), (5, 16, 256));
        let a = args(&[
            "--watchers",
            "10,1",
            "--duration",
            "2",
            "--clients",
            "4",
            "--value-size",
            "64",
        ])
        .expect("flags");
        assert_eq!(a.watchers, [10, 1]);
        assert_eq!((a.duration, a.clients, a.value_size), (2, 4, 64));
        assert!(args(&["--watchers", "x"]).is_err());
        // The key-value bench still parses, and its flags do not mix with `watch`.
        let cli = Cli::try_parse_from(["kvctl", "bench", "--clients", "2", "--duration", "1"])
            .expect("kv bench");
        assert!(matches!(cli.cmd, Cmd::Bench(b) if b.mode().is_none()));
        assert!(Cli::try_parse_from(["kvctl", "bench", "--read-ratio", "0.5", "watch"]).is_err());
    }

    #[test]
    fn the_baseline_comes_first_and_counts_are_not_repeated() {
        assert_eq!(watcher_counts(&[1, 100, 1000]), [0, 1, 100, 1000]);
        assert_eq!(watcher_counts(&[0, 5, 5]), [0, 5]);
        assert_eq!(watcher_counts(&[]), [0]);
    }

    #[test]
    fn about_samples_per_write_watchers_time_each_write() {
        assert_eq!(sample_every(1, 16), 1);
        assert_eq!(sample_every(16, 16), 1);
        assert_eq!(sample_every(100, 16), 6);
        assert_eq!(sample_every(1000, 16), 62);
        assert_eq!(sample_every(10, 0), 10);
    }

    #[test]
    fn the_table_has_a_row_per_count() {
        let row = |watchers, events, expected| Row {
            watchers,
            writes: 1000,
            write_errors: 0,
            writes_per_s: 500.4,
            write_p50_ms: 1.234,
            write_p99_ms: 9.0,
            events,
            expected_events: expected,
            events_per_s: 1500.0,
            event_samples: 10,
            events_before_ack: 0,
            event_p50_ms: (watchers > 0).then_some(0.5),
            event_p99_ms: (watchers > 0).then_some(2.0),
            watch_errors: 0,
        };
        let out = table(&[row(0, 0, 0), row(3, 2990, 3000)]).render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("WATCHERS  WRITES/S"), "{out}");
        let base: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(base, ["0", "500", "1.23", "9.00", "-", "-", "-", "-", "0"]);
        let three: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            three,
            [
                "3", "500", "1.23", "9.00", "1500", "0.50", "2.00", "99.7%", "0"
            ]
        );
    }
}
