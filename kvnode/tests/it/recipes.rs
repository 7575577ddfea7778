//! Locks, elections and leases through the real kvctl binary against a
//! real 3-node cluster: `kvctl lock` holders never overlap and pass on
//! their command's exit status; a holder killed with SIGKILL keeps the
//! lock until its lease runs out, and not longer; a lock whose lease is
//! revoked kills its command; an election hands over when the leader's
//! lease is revoked, and an observer sees it; and `kvctl lease` plus
//! `put --lease` end to end.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvclient::{Client, RangeOptions};
use tokio::sync::mpsc;

use crate::common::kvctl::{fails, kvctl_bin, ok, ok_json, run};
use crate::common::{Cluster, Opts, wait_for};

/// A kvctl running in the background: its stdout lines as they come, with
/// the time each arrived; its stderr kept for messages. Killed on drop.
struct Bg {
    child: Child,
    args: Vec<String>,
    lines: mpsc::UnboundedReceiver<(Instant, String)>,
    stderr: Arc<Mutex<String>>,
}

impl Bg {
    fn spawn(endpoints: &str, args: &[&str]) -> Bg {
        let mut child = Command::new(kvctl_bin())
            .arg("--endpoints")
            .arg(endpoints)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kvctl");
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    return;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&text);
            }
        });
        Bg {
            child,
            args: args.iter().map(|s| s.to_string()).collect(),
            lines,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next stdout line and when it came, within `timeout`.
    async fn line(&mut self, timeout: Duration) -> (Instant, String) {
        match tokio::time::timeout(timeout, self.lines.recv()).await {
            Ok(Some(l)) => l,
            Ok(None) => panic!("kvctl {:?} ended its output: {}", self.args, self.stderr()),
            Err(_) => panic!(
                "kvctl {:?}: no line within {timeout:?}; stderr: {}",
                self.args,
                self.stderr()
            ),
        }
    }

    /// A line already printed, if any.
    fn printed(&mut self) -> Option<String> {
        self.lines.try_recv().ok().map(|(_, l)| l)
    }

    /// Waits for the process to exit by itself.
    async fn exit(&mut self, timeout: Duration) -> ExitStatus {
        let until = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                Instant::now() < until,
                "kvctl {:?} still running after {timeout:?}; stderr: {}",
                self.args,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The keys under `prefix`, as (key, revision).
async fn keys(client: &Client, prefix: &str) -> Vec<(String, u64)> {
    client
        .range(&RangeOptions {
            prefix: Some(prefix.into()),
            keys_only: true,
            ..RangeOptions::default()
        })
        .await
        .expect("range")
        .items
        .into_iter()
        .map(|i| (i.key, i.revision))
        .collect()
}

async fn wait_keys(client: &Client, prefix: &str, n: usize, what: &str) {
    wait_for(Duration::from_secs(20), what, || async {
        (keys(client, prefix).await.len() == n).then_some(())
    })
    .await;
}

/// The lease id a lock or election key names (`NAME/<hex>`).
fn lease_of(key: &str) -> u64 {
    let hex = key.rsplit('/').next().expect("a key with a slash");
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{key}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_holders_never_overlap_and_pass_on_the_command_status() {
    let c = Cluster::start(3, Opts::default()).await;
    let eps = c.endpoints().join(",");
    let client = c.client();
    let log = c.dir.path().join("holders.log");
    // Each holder writes its start and end with a pause between, and the
    // lock key it was given.
    let script = format!(
        "echo \"start $$ $KVCTL_LOCK_KEY\" >> {log}; sleep 0.3; echo \"end $$\" >> {log}",
        log = log.display()
    );
    let mut holders: Vec<Bg> = (0..4)
        .map(|_| {
            Bg::spawn(
                &eps,
                &["lock", "it-a", "--ttl", "5", "--", "sh", "-c", &script],
            )
        })
        .collect();
    for h in &mut holders {
        let st = h.exit(Duration::from_secs(60)).await;
        assert!(st.success(), "{st}: {}", h.stderr());
    }
    let text = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    let mut pids = Vec::new();
    for pair in lines.chunks(2) {
        // start P, then end P: nobody started in between.
        let start: Vec<&str> = pair[0].split(' ').collect();
        assert_eq!(start.len(), 3, "{text}");
        assert_eq!(start[0], "start", "{text}");
        assert!(start[2].starts_with("it-a/"), "lock key {text}");
        assert_eq!(pair[1], format!("end {}", start[1]), "overlap:\n{text}");
        pids.push(start[1]);
    }
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 4, "{text}");
    // Everything released: no key and no lease left.
    assert!(keys(&client, "it-a/").await.is_empty());
    assert!(client.lease_list().await.expect("leases").leases.is_empty());

    // kvctl exits with the command's status, and releases the lock.
    let out = run(&eps, &["lock", "it-a", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(keys(&client, "it-a/").await.is_empty());
    // Without a command: prints the key, holds until SIGTERM, releases.
    let mut h = Bg::spawn(&eps, &["lock", "it-a"]);
    let (_, key) = h.line(Duration::from_secs(20)).await;
    assert!(key.starts_with("it-a/"), "{key}");
    assert_eq!(keys(&client, "it-a/").await.len(), 1);
    h.sigterm();
    assert!(
        h.exit(Duration::from_secs(10)).await.success(),
        "{}",
        h.stderr()
    );
    assert!(keys(&client, "it-a/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_keeps_the_lock_until_its_lease_runs_out() {
    const TTL: u64 = 3;
    let c = Cluster::start(3, Opts::default()).await;
    let eps = c.endpoints().join(",");
    let client = c.client();
    let ttl = TTL.to_string();
    let mut holder = Bg::spawn(&eps, &["lock", "it-b", "--ttl", &ttl]);
    let (_, key) = holder.line(Duration::from_secs(20)).await;
    let lease = lease_of(&key);
    let mut waiter = Bg::spawn(&eps, &["lock", "it-b", "--ttl", &ttl]);
    wait_keys(&client, "it-b/", 2, "the waiter to queue").await;
    assert_eq!(
        waiter.printed(),
        None,
        "the waiter must not hold the lock yet"
    );

    // How long the holder's lease has left, as the leader sees it; the
    // leader cannot expire it before then (it counts from its own receipt
    // of the last keep-alive, after `asked`).
    let asked = Instant::now();
    let info = client
        .lease_time_to_live(lease, false)
        .await
        .expect("timetolive")
        .expect("the holder's lease");
    holder.kill9();
    let killed = Instant::now();
    let earliest = asked + Duration::from_secs_f64(info.remaining);

    let (acquired, key2) = waiter.line(Duration::from_secs(TTL + 10)).await;
    assert!(key2.starts_with("it-b/") && key2 != key, "{key2}");
    let waited = acquired.saturating_duration_since(killed);
    println!(
        "lock passed {waited:?} after SIGKILL (TTL {TTL}s, {:.2}s left at the kill)",
        info.remaining
    );
    // Not before the lease ran out (a tick of slack for the leader's
    // clock), and not long after.
    assert!(
        acquired + Duration::from_millis(250) >= earliest,
        "acquired {:?} before the lease could expire",
        earliest.saturating_duration_since(acquired)
    );
    assert!(
        waited <= Duration::from_secs(TTL + 4),
        "passed only {waited:?} after the kill"
    );
    // The holder's key went with its lease.
    let left = keys(&client, "it-b/").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0, key2);
    assert_eq!(
        client.lease_time_to_live(lease, false).await.expect("ttl"),
        None
    );
    waiter.sigterm();
    assert!(
        waiter.exit(Duration::from_secs(10)).await.success(),
        "{}",
        waiter.stderr()
    );
    assert!(keys(&client, "it-b/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lock_lease_kills_the_command() {
    let c = Cluster::start(3, Opts::default()).await;
    let eps = c.endpoints().join(",");
    let client = c.client();
    let pidfile = c.dir.path().join("cmd.pid");
    let script = format!(
        "echo $$ > {}; echo running; exec sleep 60",
        pidfile.display()
    );
    let mut h = Bg::spawn(
        &eps,
        &["lock", "it-e", "--ttl", "30", "--", "sh", "-c", &script],
    );
    // The command's own output goes through kvctl's stdout.
    assert_eq!(h.line(Duration::from_secs(20)).await.1, "running");
    let pid = std::fs::read_to_string(&pidfile).expect("pid file");
    let pid = pid.trim().to_owned();
    let held = keys(&client, "it-e/").await;
    assert_eq!(held.len(), 1);
    ok(
        &eps,
        &["lease", "revoke", &lease_of(&held[0].0).to_string()],
    );
    let st = h.exit(Duration::from_secs(15)).await;
    assert!(!st.success());
    let err = h.stderr();
    assert!(
        err.contains("lost lock it-e") && err.contains("killed the command"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the command (pid {pid}) still runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_hands_over_when_the_leaders_lease_is_revoked() {
    let c = Cluster::start(3, Opts::default()).await;
    let eps = c.endpoints().join(",");
    let client = c.client();
    let mut alpha = Bg::spawn(&eps, &["elect", "it-c", "alpha", "--ttl", "30"]);
    assert_eq!(alpha.line(Duration::from_secs(20)).await.1, "alpha");
    let mut beta = Bg::spawn(&eps, &["elect", "it-c", "beta", "--ttl", "30"]);
    wait_keys(&client, "it-c/", 2, "the second candidate").await;
    let mut observer = Bg::spawn(&eps, &["elect", "it-c", "--listen"]);
    assert_eq!(observer.line(Duration::from_secs(20)).await.1, "alpha");
    assert_eq!(beta.printed(), None, "beta must not lead yet");

    let leader = kvclient::recipes::leader(&client, "it-c")
        .await
        .expect("leader")
        .expect("a leader");
    assert_eq!(leader.value, "alpha");
    let revoked = ok(
        &eps,
        &["lease", "revoke", &lease_of(&leader.key).to_string()],
    );
    assert!(revoked.contains("(1 keys deleted)"), "{revoked}");

    assert_eq!(observer.line(Duration::from_secs(15)).await.1, "beta");
    assert_eq!(beta.line(Duration::from_secs(15)).await.1, "beta");
    // The old leader learns it lost, and says so.
    let st = alpha.exit(Duration::from_secs(15)).await;
    assert!(!st.success());
    let err = alpha.stderr();
    assert!(err.contains("lost the leadership of it-c"), "{err}");

    // The new leader resigns on SIGTERM: nobody leads, nothing is left.
    beta.sigterm();
    assert!(
        beta.exit(Duration::from_secs(10)).await.success(),
        "{}",
        beta.stderr()
    );
    assert!(keys(&client, "it-c/").await.is_empty());
    assert_eq!(observer.printed(), None, "no leader to report");
    observer.sigterm();
    assert!(observer.exit(Duration::from_secs(10)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_commands_and_put_with_a_lease() {
    let c = Cluster::start(3, Opts::default()).await;
    let eps = c.endpoints().join(",");
    let client = c.client();

    let granted = ok(&eps, &["lease", "grant", "6"]);
    let id: u64 = granted
        .strip_prefix("lease ")
        .and_then(|s| s.strip_suffix(" granted with TTL 6s\n"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{granted}"));
    let sid = id.to_string();
    // Kept alive in the background from here on.
    let mut ka = Bg::spawn(&eps, &["lease", "keep-alive", &sid]);
    assert_eq!(
        ka.line(Duration::from_secs(10)).await.1,
        format!("lease {id} kept alive with TTL 6s")
    );
    let json = ok_json(&eps, &["-o", "json", "lease", "grant", "60"]);
    assert_eq!(json["ttl"], 60);
    let other = json["id"].as_u64().expect("id");

    assert!(ok(&eps, &["put", "it-d/k", "v", "--lease", &sid]).starts_with("OK revision"));
    let ttl = ok(&eps, &["lease", "timetolive", &sid, "--keys"]);
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL 6s, ")),
        "{ttl}"
    );
    assert!(ttl.contains("\n  it-d/k"), "{ttl}");
    let info = ok_json(&eps, &["-o", "json", "lease", "timetolive", &sid, "--keys"]);
    assert_eq!(info["keys"], serde_json::json!(["it-d/k"]));
    let remaining = info["remaining"].as_f64().expect("remaining");
    assert!(remaining > 0.0 && remaining <= 6.0, "{info}");
    let list = ok(&eps, &["lease", "list"]);
    for l in [id, other] {
        assert!(
            list.lines().any(|r| r.starts_with(&format!("{l} "))),
            "{list}"
        );
    }
    assert_eq!(
        ok(&eps, &["lease", "keep-alive", &sid, "--once"]),
        format!("lease {id} kept alive with TTL 6s\n")
    );
    // Still there after more than a TTL, kept alive by the background kvctl.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(ok(&eps, &["get", "it-d/k"]), "v\n");

    let revoked = ok(&eps, &["lease", "revoke", &sid]);
    assert!(
        revoked.starts_with(&format!("lease {id} revoked at revision ")),
        "{revoked}"
    );
    assert!(revoked.ends_with(" (1 keys deleted)\n"), "{revoked}");
    assert!(client.get("it-d/k").await.expect("get").is_none());
    assert!(fails(&eps, &["get", "it-d/k"]).contains("not found"));
    // The background keep-alive notices and fails.
    let st = ka.exit(Duration::from_secs(10)).await;
    assert!(!st.success());
    assert!(
        ka.stderr().contains("expired or was revoked"),
        "{}",
        ka.stderr()
    );

    assert!(fails(&eps, &["lease", "timetolive", &sid]).contains("not found"));
    assert!(fails(&eps, &["lease", "revoke", &sid]).contains("not found"));
    assert!(fails(&eps, &["lease", "keep-alive", &sid]).contains("not found"));
    let err = fails(&eps, &["put", "it-d/k", "v", "--lease", &sid]);
    assert!(err.contains("nothing was written"), "{err}");
    assert!(client.get("it-d/k").await.expect("get").is_none());
    ok(&eps, &["lease", "revoke", &other.to_string()]);
    assert!(
        ok_json(&eps, &["-o", "json", "lease", "list"])["leases"]
            .as_array()
            .expect("leases")
            .is_empty()
    );
}
