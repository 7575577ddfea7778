//! `kvctl bench`: a closed-loop load generator. Each of N clients sends one
//! request, waits for the answer, and sends the next, for a fixed time;
//! latencies go into HDR histograms merged at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use kvclient::{Client, Consistency};

use crate::bench_watch::{self, WatchBenchArgs};

#[derive(Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Another benchmark than the key-value load (the flags below).
    #[command(subcommand)]
    mode: Option<BenchMode>,
    /// Concurrent clients (spread over the endpoints round-robin).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Measured run time in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Fraction of reads, 0.0 (writes only) to 1.0 (reads only).
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
    /// Serializable (local) reads instead of linearizable ones.
    #[arg(long)]
    serializable: bool,
    /// Write every key once before measuring (for read benchmarks).
    #[arg(long)]
    prefill: bool,
    /// Key prefix.
    #[arg(long, default_value = "bench/")]
    prefix: String,
    /// Where requests go: `leader` (found through the status API, as a
    /// leader-aware client would) or `all` endpoints round-robin (followers
    /// forward to the leader).
    #[arg(long, value_enum, default_value = "leader")]
    target: Target,
}

#[cfg(test)]
impl BenchArgs {
    /// The benchmark chosen by a subcommand, if any.
    pub fn mode(&self) -> Option<&BenchMode> {
        self.mode.as_ref()
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum BenchMode {
    /// Watch fan-out: write throughput and latency and event delivery latency with 0 and N watchers.
    Watch(WatchBenchArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Leader,
    All,
}

#[derive(serde::Serialize)]
struct Report {
    target: Target,
    endpoints: Vec<String>,
    clients: usize,
    duration_s: f64,
    read_ratio: f64,
    value_size: usize,
    ops: u64,
    errors: u64,
    throughput_ops_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// `base`: the configured client; its endpoints and TLS options are used.
pub async fn run(base: &Client, args: BenchArgs, json: bool) -> anyhow::Result<()> {
    if let Some(BenchMode::Watch(w)) = args.mode {
        return bench_watch::run(base, w, json).await;
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        anyhow::bail!("--read-ratio must be between 0 and 1");
    }
    if args.clients == 0 || args.keys == 0 || args.duration == 0 {
        anyhow::bail!("--clients, --keys and --duration must be positive");
    }
    let endpoints = target_endpoints(base, args.target).await?;
    let clients: Vec<Client> = (0..args.clients)
        .map(|i| {
            base.for_endpoints(&[&endpoints[i % endpoints.len()]])
                .map(|c| c.with_attempts(1))
        })
        .collect::<Result<_, _>>()?;
    let value = vec![b'x'; args.value_size];
    if args.prefill {
        prefill(&clients, &args, &value).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let args = args.clone();
        let value = value.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("3 significant digits is valid");
            let mut n: u64 = i as u64;
            let consistency = if args.serializable {
                Consistency::Serializable
            } else {
                Consistency::Linearizable
            };
            while Instant::now() < deadline {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = format!("{}{:010}", args.prefix, (n >> 11) % args.keys);
                let read = ((n >> 33) as f64 / (1u64 << 31) as f64) < args.read_ratio;
                let t = Instant::now();
                let ok = if read {
                    c.get_with(&key, consistency).await.is_ok()
                } else {
                    c.put(&key, value.clone()).await.is_ok()
                };
                if ok {
                    let _ = hist.record(t.elapsed().as_micros() as u64);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            hist
        }));
    }
    let mut hist = Histogram::<u64>::new(3).expect("3 significant digits is valid");
    for t in tasks {
        hist.add(t.await?)?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let report = Report {
        target: args.target,
        endpoints: endpoints.clone(),
        clients: args.clients,
        duration_s: elapsed,
        read_ratio: args.read_ratio,
        value_size: args.value_size,
        ops: hist.len(),
        errors: errors.load(Ordering::Relaxed),
        throughput_ops_s: hist.len() as f64 / elapsed,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: hist.max() as f64 / 1000.0,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "target {:?} {:?}\n{} ops in {:.1}s with {} clients ({} errors): {:.0} ops/s\nlatency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            report.target,
            report.endpoints,
            report.ops,
            report.duration_s,
            report.clients,
            report.errors,
            report.throughput_ops_s,
            report.p50_ms,
            report.p90_ms,
            report.p99_ms,
            report.max_ms
        );
    }
    if report.ops == 0 {
        anyhow::bail!("no request succeeded ({} errors)", report.errors);
    }
    Ok(())
}

/// Where requests go for `target`: the leader's client URL (from the
/// status API) or every endpoint.
pub async fn target_endpoints(base: &Client, target: Target) -> anyhow::Result<Vec<String>> {
    Ok(match target {
        Target::All => base.endpoints().to_vec(),
        Target::Leader => {
            let st = base.status().await?;
            let leader = st
                .leader
                .ok_or_else(|| anyhow::anyhow!("no leader known; is the cluster initialized?"))?;
            vec![leader.info.client_url]
        }
    })
}

async fn prefill(clients: &[Client], args: &BenchArgs, value: &[u8]) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in clients {
        let c = c.clone();
        let next = next.clone();
        let value = value.to_vec();
        let (keys, prefix) = (args.keys, args.prefix.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= keys {
                    return Ok::<_, kvclient::ClientError>(());
                }
                c.put(&format!("{prefix}{k:010}"), value.clone()).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
