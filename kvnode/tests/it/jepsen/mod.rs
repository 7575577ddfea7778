//! Jepsen-style runs: concurrent clients do linearizable reads, writes and
//! compare-and-set on a few keys through random nodes while a nemesis
//! injects faults (partitions through a [`Fabric`], pauses, kills); every
//! invocation and completion is recorded, and each key's history must be
//! linearizable ([`checker`]). Serializable reads are allowed to be stale
//! but never to go backwards on one node process.
//!
//! A failure prints the fault timeline, the checker's message and the path
//! of the history file (JSON lines, one operation each), so the run can be
//! studied and replayed. `RAFTKV_SOAK_SECS` stretches every run (see
//! `scripts/soak.sh`); `RAFTKV_JEPSEN_SEED` repeats a run's random choices.

pub mod checker;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvapi::{Compare, CompareOp, CompareTarget, TxnOp, TxnRequest};
use kvclient::{Client, Consistency};

use crate::common::fabric::Fabric;
use crate::common::{Cluster, Opts, wait_for};
use checker::{Call, Op, Ret, Value};

pub const KEYS: usize = 3;
pub const CLIENTS: usize = 5;

/// A small deterministic generator: a run's choices follow from its seed.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

/// The seed of this run: `RAFTKV_JEPSEN_SEED`, or the clock.
pub fn seed() -> u64 {
    std::env::var("RAFTKV_JEPSEN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// How long the workload runs: `base`, or `RAFTKV_SOAK_SECS` when set.
pub fn duration(base: Duration) -> Duration {
    std::env::var("RAFTKV_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(base, Duration::from_secs)
}

/// A serializable read: which node process answered, when, and the
/// revision of the key it saw (its last modification).
#[derive(Clone, Debug)]
struct SerialRead {
    node: usize,
    key: usize,
    incarnation: u64,
    invoked: u64,
    completed: u64,
    revision: u64,
}

/// What the clients recorded, shared with the nemesis for the timeline.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<(usize, Op)>>,
    serial: Mutex<Vec<SerialRead>>,
    timeline: Mutex<Vec<String>>,
    /// Bumped when a node process is restarted (kept in the history: a
    /// serializable read must not go backwards across a restart either).
    incarnations: Mutex<Vec<u64>>,
}

impl Recorder {
    fn new(nodes: usize) -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            ops: Mutex::default(),
            serial: Mutex::default(),
            timeline: Mutex::default(),
            incarnations: Mutex::new(vec![0; nodes]),
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// One line of the fault timeline.
    pub fn event(&self, what: impl Into<String>) {
        let line = format!(
            "{:8.3}s  {}",
            self.start.elapsed().as_secs_f64(),
            what.into()
        );
        lock(&self.timeline).push(line);
    }

    pub fn restarted(&self, node: usize) {
        let mut inc = lock(&self.incarnations);
        if node >= inc.len() {
            inc.resize(node + 1, 0);
        }
        inc[node] += 1;
    }

    fn incarnation(&self, node: usize) -> u64 {
        lock(&self.incarnations).get(node).copied().unwrap_or(0)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(k: usize) -> String {
    format!("jepsen/r{k}")
}

fn parse(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

async fn read(client: &Client, key: &str, consistency: Consistency) -> Option<(Value, u64)> {
    match client.get_with(key, consistency).await {
        Ok(Some(r)) => Some((Some(parse(&r.value)?), r.revision)),
        Ok(None) => Some((None, 0)),
        Err(_) => None,
    }
}

/// The request reached no leader, so nothing was written: the connection
/// to the node could not be made (a killed node refuses it), or the node
/// said so.
fn never_sent(e: &kvclient::ClientError) -> bool {
    match e {
        kvclient::ClientError::Transport { source, .. } => source.is_connect(),
        // A node answers `no_leader` only when it proposed nothing: no
        // leader known, or the leader's client port refused the relay.
        _ => e.code() == Some(kvapi::ErrorCode::NoLeader),
    }
}

/// `None`: the request was never sent.
async fn cas(client: &Client, key: &str, expect: u64, new: u64) -> Option<Ret> {
    let txn = TxnRequest {
        compare: vec![Compare {
            key: key.to_owned(),
            target: CompareTarget::Value(kvapi::JsonValue::from_bytes(
                expect.to_string().as_bytes(),
            )),
            op: CompareOp::Eq,
        }],
        success: vec![TxnOp::Put {
            key: key.to_owned(),
            value: new.to_string(),
            value_encoding: None,
            lease: None,
        }],
        failure: vec![],
    };
    Some(match client.txn(&txn).await {
        Ok(r) if r.succeeded => Ret::CasOk,
        Ok(_) => Ret::CasFailed,
        Err(e) if never_sent(&e) => return None,
        // Timeouts, dropped connections and errors after the request may
        // have reached a leader: the write may or may not have happened.
        Err(_) => Ret::Unknown,
    })
}

/// One client: until `until`, random operations on random keys through
/// random nodes. Write values are unique to the whole run.
async fn client_loop(
    id: usize,
    endpoints: Vec<String>,
    opts: Opts,
    rec: Arc<Recorder>,
    mut rng: Rng,
    until: Instant,
) {
    let clients: Vec<Client> = endpoints
        .iter()
        .map(|e| {
            opts.client(std::slice::from_ref(e))
                .single_shot()
                .with_timeout(Duration::from_millis(1500))
                .expect("client timeout")
        })
        .collect();
    let mut process = id;
    let mut seq = 0u64;
    let mut seen: [Option<u64>; KEYS] = [None; KEYS];
    while Instant::now() < until {
        // Paced (up to ~100 operations a second per client): the suite runs
        // other timing-sensitive tests beside this one on 2 cores, and
        // histories of a few thousand operations are what the faults need.
        tokio::time::sleep(rng.millis(5, 15)).await;
        let k = rng.below(KEYS);
        let node = rng.below(clients.len());
        let client = &clients[node];
        let name = key(k);
        let dice = rng.below(100);
        if dice < 10 {
            let incarnation = rec.incarnation(node);
            let invoked = rec.now();
            if let Some((_, revision)) = read(client, &name, Consistency::Serializable).await {
                let completed = rec.now();
                lock(&rec.serial).push(SerialRead {
                    node,
                    key: k,
                    incarnation,
                    invoked,
                    completed,
                    revision,
                });
            }
            continue;
        }
        let invoked = rec.now();
        let (call, ret) = if dice < 45 {
            match read(client, &name, Consistency::Linearizable).await {
                Some((v, _)) => {
                    seen[k] = v;
                    (Call::Read, Ret::Read(v))
                }
                // A failed read changed nothing: not part of the history.
                None => continue,
            }
        } else {
            seq += 1;
            let value = (id as u64 + 1) * 1_000_000 + seq;
            if dice < 75 {
                let ret = match client.put(&name, value.to_string()).await {
                    Ok(_) => {
                        seen[k] = Some(value);
                        Ret::Written
                    }
                    Err(e) if never_sent(&e) => continue,
                    Err(_) => Ret::Unknown,
                };
                (Call::Write(value), ret)
            } else {
                let Some(expect) = seen[k] else {
                    continue;
                };
                let Some(ret) = cas(client, &name, expect, value).await else {
                    continue;
                };
                if ret == Ret::CasOk {
                    seen[k] = Some(value);
                }
                (Call::Cas { expect, new: value }, ret)
            }
        };
        let completed = rec.now();
        lock(&rec.ops).push((
            k,
            Op {
                process,
                call,
                ret,
                invoked,
                completed,
            },
        ));
        if ret == Ret::Unknown {
            // The operation may still be in flight: later operations of
            // this client are another process's.
            process += CLIENTS;
        }
    }
}

/// The outcome of a run, printed by the tests.
pub struct Summary {
    pub ops: usize,
    pub unknown: usize,
    pub serial_reads: usize,
    pub faults: usize,
}

/// The faults a run injects, over and over until the workload ends.
#[derive(Clone, Copy, Debug)]
pub enum Nemesis {
    /// A minority as large as it gets (1 of 3, 2 of 5) cut off from the
    /// rest, holding the leader half of the time.
    Partitions,
    /// One-way cuts: the leader cannot reach the others (they still reach
    /// it), or a random single directed link.
    OneWay,
    /// SIGSTOP and later SIGCONT of the leader or a random node.
    Pauses,
    /// kill -9 of the leader or a random node, and a restart.
    Kills,
    /// A fourth node added (learner, then voter) and removed again, each
    /// change made while a random follower is cut off.
    MembershipInPartition,
    /// The leader's or a random node's raft log syncs each take 100-1000 ms
    /// (the `KVNODE_SLOW_SYNC_FILE` failpoint), then fast again.
    SlowDisk,
}

/// The slow-disk failpoint file, in each node's data dir.
const SLOW_SYNC_FILE: &str = "SLOW-SYNC-MS";

/// Runs the workload for `length` while `nemesis` injects faults, then
/// heals, waits for the cluster, reads every key back and checks. Panics
/// with the timeline and the history file on any violation.
pub async fn run(
    name: &str,
    cluster: &mut Cluster,
    fabric: &mut Fabric,
    length: Duration,
    nemesis: Nemesis,
) -> Summary {
    let seed = seed();
    eprintln!("[{name}] seed {seed} (RAFTKV_JEPSEN_SEED={seed} repeats the random choices)");
    let rec = Recorder::new(cluster.nodes.len());
    let mut rng = Rng::new(seed);
    let until = Instant::now() + length;
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.client_url()).collect();
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        let client_rng = Rng::new(rng.next());
        tasks.push(tokio::spawn(client_loop(
            id,
            endpoints.clone(),
            cluster.opts.clone(),
            rec.clone(),
            client_rng,
            until,
        )));
    }
    let mut nemesis_rng = Rng::new(rng.next());
    inject(nemesis, cluster, fabric, &rec, &mut nemesis_rng, until).await;
    for t in tasks {
        t.await.expect("client task");
    }
    fabric.heal();
    rec.event("healed; waiting for every node to be ready");
    cluster.wait_all_ready().await;

    // Final linearizable reads of every key, after everything: a lost
    // acknowledged write shows up here as a read the checker cannot place.
    let client = cluster.client();
    for k in 0..KEYS {
        let invoked = rec.now();
        let (v, _) = wait_for(Duration::from_secs(20), "a final read", || async {
            read(&client, &key(k), Consistency::Linearizable).await
        })
        .await;
        let completed = rec.now();
        lock(&rec.ops).push((
            k,
            Op {
                process: usize::MAX,
                call: Call::Read,
                ret: Ret::Read(v),
                invoked,
                completed,
            },
        ));
        // And every node converges on it.
        for n in &cluster.nodes {
            let c = n.client();
            wait_for(
                Duration::from_secs(20),
                &format!("{} to hold the final value of {}", n.name, key(k)),
                || async {
                    let (got, _) = read(&c, &key(k), Consistency::Serializable).await?;
                    (got == v).then_some(())
                },
            )
            .await;
        }
    }

    let ops = std::mem::take(&mut *lock(&rec.ops));
    let serial = std::mem::take(&mut *lock(&rec.serial));
    let timeline = std::mem::take(&mut *lock(&rec.timeline));
    let history_file = write_history(name, seed, &ops, &timeline);
    let fail = |what: String| -> ! {
        panic!(
            "[{name}] {what}\nseed {seed}; history: {}\nfault timeline:\n{}",
            history_file.display(),
            timeline.join("\n")
        )
    };
    let mut per_key: BTreeMap<usize, Vec<Op>> = BTreeMap::new();
    for (k, op) in &ops {
        per_key.entry(*k).or_default().push(op.clone());
    }
    for (k, history) in &per_key {
        match checker::check_bounded(history, None, 50_000_000) {
            Ok(Some(())) => {}
            Ok(None) => fail(format!(
                "{}: the checker gave up ({} operations): too hard to decide",
                key(*k),
                history.len()
            )),
            Err(v) => fail(format!("{} is not linearizable: {}", key(*k), v.message)),
        }
    }
    if let Some(msg) = backwards(&serial) {
        fail(msg);
    }
    let summary = Summary {
        ops: ops.len(),
        unknown: ops.iter().filter(|(_, o)| o.ret == Ret::Unknown).count(),
        serial_reads: serial.len(),
        faults: timeline.len(),
    };
    eprintln!(
        "[{name}] linearizable: {} operations on {KEYS} keys ({} indeterminate), {} serializable \
         reads monotonic per node, {} fault events; history {}",
        summary.ops,
        summary.unknown,
        summary.serial_reads,
        summary.faults,
        history_file.display()
    );
    summary
}

/// A serializable read of a key that started after another of the same
/// key on the same node had finished, and saw an older version (keys are
/// never deleted here, so a key's revision only grows). Across restarts
/// too: what a node served was applied, and applied state is durable.
fn backwards(reads: &[SerialRead]) -> Option<String> {
    let mut by_node: BTreeMap<(usize, usize), Vec<&SerialRead>> = BTreeMap::new();
    for r in reads.iter().filter(|r| r.revision > 0) {
        by_node.entry((r.node, r.key)).or_default().push(r);
    }
    for ((node, k), mut rs) in by_node {
        rs.sort_by_key(|r| r.completed);
        let mut best: Option<&SerialRead> = None;
        let mut j = 0;
        let mut by_invoke = rs.clone();
        by_invoke.sort_by_key(|r| r.invoked);
        for r in &by_invoke {
            // Every read that completed before `r` was invoked.
            while j < rs.len() && rs[j].completed < r.invoked {
                if best.is_none_or(|b| rs[j].revision > b.revision) {
                    best = Some(rs[j]);
                }
                j += 1;
            }
            if let Some(b) = best
                && r.revision < b.revision
            {
                return Some(format!(
                    "serializable reads of {} went backwards on n{}: revision {} (process {}) \
                     after {} (process {})",
                    key(k),
                    node + 1,
                    r.revision,
                    r.incarnation,
                    b.revision,
                    b.incarnation
                ));
            }
        }
    }
    None
}

fn write_history(
    name: &str,
    seed: u64,
    ops: &[(usize, Op)],
    timeline: &[String],
) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("raftkv-jepsen");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{name}-{seed}.jsonl"));
    let mut out = String::new();
    for (k, op) in ops {
        out.push_str(
            &serde_json::json!({
                "key": key(*k),
                "process": op.process,
                "call": format!("{:?}", op.call),
                "ret": format!("{:?}", op.ret),
                "invoked_ns": op.invoked,
                "completed_ns": op.completed,
            })
            .to_string(),
        );
        out.push('\n');
    }
    for line in timeline {
        out.push_str(&serde_json::json!({ "fault": line }).to_string());
        out.push('\n');
    }
    let _ = std::fs::write(&path, out);
    path
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}

/// The fault loop: a healthy spell, a fault, its end; until `until`.
/// Every fault is over (links healed, processes running) when it returns.
async fn inject(
    nemesis: Nemesis,
    cluster: &mut Cluster,
    fabric: &mut Fabric,
    rec: &Recorder,
    rng: &mut Rng,
    until: Instant,
) {
    let n = cluster.nodes.len();
    let mut extra: Option<usize> = None;
    loop {
        sleep_until((Instant::now() + rng.millis(500, 1500)).min(until)).await;
        if Instant::now() >= until {
            break;
        }
        let target = match leader_guess(cluster).await {
            Some(l) if rng.below(2) == 0 => l,
            _ => rng.below(n),
        };
        let end = (Instant::now() + rng.millis(1000, 3000)).min(until);
        match nemesis {
            Nemesis::Partitions => {
                // The largest minority: the target and n/2 - 1 others.
                let mut side = vec![target];
                while side.len() < n / 2 {
                    let other = rng.below(n);
                    if !side.contains(&other) {
                        side.push(other);
                    }
                }
                fabric.partition(&side);
                let names: Vec<String> = side.iter().map(|h| format!("n{}", h + 1)).collect();
                rec.event(format!(
                    "minority {} cut off ({})",
                    names.join(","),
                    fabric.describe()
                ));
                sleep_until(end).await;
                fabric.heal();
                rec.event("healed");
            }
            Nemesis::OneWay => {
                if rng.below(2) == 0 {
                    for other in (0..n).filter(|o| *o != target) {
                        fabric.cut_one_way(target, other);
                    }
                } else {
                    let to = (target + 1 + rng.below(n - 1)) % n;
                    fabric.cut_one_way(target, to);
                }
                rec.event(fabric.describe());
                sleep_until(end).await;
                fabric.heal();
                rec.event("healed");
            }
            Nemesis::SlowDisk => {
                let ms = rng.millis(100, 1000).as_millis();
                let file = cluster.nodes[target].data_dir.join(SLOW_SYNC_FILE);
                std::fs::write(&file, ms.to_string()).expect("slow the disk");
                rec.event(format!("n{} syncs take {ms} ms", target + 1));
                sleep_until(end).await;
                std::fs::write(&file, "0").expect("heal the disk");
                rec.event(format!("n{} disk fast again", target + 1));
            }
            Nemesis::Pauses => {
                cluster.nodes[target].pause(true);
                rec.event(format!("paused n{}", target + 1));
                sleep_until(end).await;
                cluster.nodes[target].pause(false);
                rec.event(format!("resumed n{}", target + 1));
            }
            Nemesis::Kills => {
                cluster.nodes[target].kill9();
                fabric.set_down(target, true);
                rec.event(format!("killed n{}", target + 1));
                sleep_until(end).await;
                fabric.set_down(target, false);
                cluster.nodes[target].start(None).await;
                rec.restarted(target);
                rec.event(format!("restarted n{}", target + 1));
            }
            Nemesis::MembershipInPartition => {
                let Some(leader) = leader_guess(cluster).await else {
                    continue;
                };
                let follower = (leader + 1 + rng.below(n - 1)) % n;
                fabric.isolate(follower);
                rec.event(format!("isolated n{}", follower + 1));
                let admin = cluster.opts.client(&[cluster.nodes[leader].client_url()]);
                let change = match extra {
                    None => {
                        let i = cluster.nodes.len();
                        let mut node = crate::common::NodeProc::new(
                            cluster.dir.path(),
                            &format!("n{}", i + 1),
                            cluster.opts.clone(),
                        );
                        fabric.host(i, &mut node).await;
                        node.start(None).await;
                        let info = node.info();
                        let learner = kvclient::AddLearnerRequest {
                            id: node.id,
                            name: info.name,
                            peer_url: info.peer_url,
                            client_url: info.client_url,
                        };
                        cluster.nodes.push(node);
                        extra = Some(i);
                        let voters: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
                        match admin.add_learner(&learner).await {
                            Ok(_) => admin
                                .set_voters(&voters)
                                .await
                                .map(|_| format!("added n{} as learner, then voter", i + 1)),
                            Err(e) => Err(e),
                        }
                    }
                    Some(i) => match admin.remove_member(cluster.nodes[i].id).await {
                        Ok(_) => {
                            cluster.nodes[i].kill9();
                            cluster.nodes.truncate(i);
                            extra = None;
                            Ok(format!("removed n{}", i + 1))
                        }
                        Err(e) => Err(e),
                    },
                };
                match change {
                    Ok(what) => rec.event(what),
                    // Refused or timed out in the partition: tried again
                    // in the next round (adding is idempotent).
                    Err(e) => rec.event(format!("membership change failed: {e}")),
                }
                sleep_until(end).await;
                fabric.heal();
                rec.event("healed");
            }
        }
    }
}

/// Best guess of the current leader: what most running nodes say.
pub async fn leader_guess(cluster: &Cluster) -> Option<usize> {
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    for n in cluster.nodes.iter().filter(|n| n.is_running()) {
        let c = n.client().with_timeout(Duration::from_millis(300)).ok()?;
        if let Ok(st) = c.status().await
            && let Some(l) = st.leader
        {
            *votes.entry(l.id).or_default() += 1;
        }
    }
    let (id, _) = votes.into_iter().max_by_key(|(_, n)| *n)?;
    cluster.nodes.iter().position(|n| n.id == id)
}

/// A 3-node cluster, each node its own host on `fabric`.
/// A cluster of `n` voters on `fabric`, tuned as the fault runs need.
pub async fn cluster_of(fabric: &mut Fabric, n: usize) -> Cluster {
    let opts = Opts {
        heartbeat_ms: crate::common::HEARTBEAT_MS,
        election_ms: crate::common::ELECTION_MS,
        snapshot_threshold: 500,
        tls: None,
        token: Arc::default(),
        // Read at each log sync; only Nemesis::SlowDisk writes the file.
        env: vec![("KVNODE_SLOW_SYNC_FILE".into(), SLOW_SYNC_FILE.into())],
        credentials: None,
    };
    Cluster::start_on(fabric, n, opts).await
}
