//! Backups end to end with the real binaries: `kvctl snapshot save` from a
//! node under writes, `kvctl snapshot status`, `kvnode restore` into a new
//! cluster that then grows, refusals of damaged files and used data dirs,
//! and `kvnode force-new-cluster` after a majority is lost.

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kvclient::{Client, Consistency, RangeOptions, UserAddRequest};

use crate::common::kvctl;
use crate::common::{Cluster, NodeProc, Opts, Start, put_keys, wait_for};

/// Every key of the store with its revision, read page by page.
async fn all_keys(c: &Client) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut start = None;
    loop {
        let page = c
            .range(&RangeOptions {
                start: start.clone(),
                limit: Some(1000),
                keys_only: true,
                ..RangeOptions::default()
            })
            .await
            .expect("range");
        out.extend(page.items.into_iter().map(|i| (i.key, i.revision)));
        match page.next {
            Some(n) => start = Some(n),
            None => return out,
        }
    }
}

/// Runs `kvnode <node's flags> <args>` (an offline tool on `n`'s data dir).
fn kvnode_tool(n: &NodeProc, args: &[&str]) -> Output {
    n.command(None).args(args).output().expect("run kvnode")
}

/// Starts `n` (a restored or recovered data dir) and checks it serves as
/// the only voter of its cluster; returns its client and status.
async fn start_as_only_voter(n: &mut NodeProc) -> (Client, kvclient::ClusterStatus) {
    n.start(None).await;
    let client = n.client();
    wait_for(
        Duration::from_secs(20),
        &format!("{} ready", n.name),
        || async { matches!(client.ready().await, Ok(Ok(()))).then_some(()) },
    )
    .await;
    let st = client.status().await.expect("status");
    assert_eq!(st.membership.voter_ids(), vec![n.id]);
    (client, st)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_saved_under_writes_restores_into_a_new_cluster() {
    let c = Cluster::start(3, Opts::default()).await;
    let admin = c.client();
    let source_cluster = c.status(0).await.cluster_id;
    put_keys(&admin, "a", 400).await;
    for i in (0..400).step_by(10) {
        admin.delete(&format!("a-{i:04}")).await.expect("delete");
    }
    for (name, roles) in [("root", vec!["root".to_string()]), ("alice", vec![])] {
        admin
            .user_add(&UserAddRequest {
                name: name.into(),
                password: Some(format!("{name}-pw")),
                roles,
            })
            .await
            .expect("user add");
    }
    // The harness reads status without credentials: before auth is on.
    let leader = c.leader().await;
    admin.auth_enable().await.expect("auth enable");
    let root = admin.clone().with_credentials("root", "root-pw");

    // Writers keep going while the snapshot is taken from a follower.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (root, stop) = (root.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w-{i:05}");
                if let Ok(rev) = root.put(&key, format!("w{i}")).await {
                    acked.insert(key, rev);
                }
                i += 1;
            }
            acked
        })
    };
    let follower = &c.nodes[(leader + 1) % 3];
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.snap");
    let file_s = file.to_str().expect("utf-8 path");
    let ep = follower.client_url();
    // A user without the root role may not take one.
    let refused = kvctl::run_with(
        &ep,
        &["snapshot", "save", file_s],
        "",
        &[("KVCTL_USER", "alice"), ("KVCTL_PASSWORD", "alice-pw")],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("permission"),
        "{}",
        stderr(&refused)
    );
    assert!(!file.exists());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ep2 = ep.clone();
    let file2 = file_s.to_owned();
    let saved = tokio::task::spawn_blocking(move || {
        kvctl::run_with(
            &ep2,
            &["-o", "json", "snapshot", "save", &file2],
            "",
            &[("KVCTL_USER", "root"), ("KVCTL_PASSWORD", "root-pw")],
        )
    })
    .await
    .expect("join");
    assert!(saved.status.success(), "save: {}", stderr(&saved));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    let saved: serde_json::Value = serde_json::from_slice(&saved.stdout).expect("save prints JSON");
    let revision = saved["revision"].as_u64().expect("revision");

    // What the snapshot must hold: the cluster's keys as of `revision`,
    // i.e. every key written at or before it and none after.
    let now = all_keys(&root).await;
    let expected: BTreeMap<String, u64> = now
        .iter()
        .filter(|(_, r)| **r <= revision)
        .map(|(k, r)| (k.clone(), *r))
        .collect();
    assert!(
        written.values().any(|r| *r > revision),
        "no write was acknowledged after the snapshot's revision {revision}"
    );
    assert_eq!(saved["keys"].as_u64(), Some(expected.len() as u64));

    let status = kvctl::ok_json(&ep, &["-o", "json", "snapshot", "status", file_s]);
    assert_eq!(status["revision"].as_u64(), Some(revision));
    assert_eq!(status["keys"], saved["keys"]);
    assert_eq!(status["sha256"], saved["sha256"]);
    assert_eq!(status["checksum_verified"], true);

    // Restore into a new data dir, as a new node of a new cluster.
    let as_root = Opts {
        credentials: Some(("root".into(), "root-pw".into())),
        ..c.opts.clone()
    };
    let mut r1 = NodeProc::new(dir.path(), "r1", as_root.clone());
    let out = kvnode_tool(&r1, &["restore", "--snapshot", file_s]);
    assert!(out.status.success(), "restore: {}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "restored {} keys at revision {revision}",
            expected.len()
        )),
        "{said}"
    );
    let (restored, st) = start_as_only_voter(&mut r1).await;
    assert_ne!(st.cluster_id, source_cluster);
    assert_eq!(all_keys(&restored).await, expected);
    for (k, rev) in expected
        .iter()
        .filter(|(k, _)| k.starts_with("w-"))
        .take(20)
    {
        let got = restored.get(k).await.expect("get").expect("present");
        assert_eq!(got.revision, *rev);
        let i: u64 = k[2..].parse().expect("writer key");
        assert_eq!(got.value, format!("w{i}").into_bytes());
    }
    // Users came with it, auth still on: without credentials, refused.
    let anonymous = Client::new(&[r1.client_url()]).expect("client");
    assert!(anonymous.get("a-0001").await.is_err());
    // Revisions go on from the snapshot's.
    let next = restored.put("after", "restore").await.expect("put");
    assert!(next > revision, "{next} after {revision}");

    // The new cluster grows: a learner catches up from the founding
    // snapshot (the log before it does not exist).
    // Started without credentials: until it joins, it has no users.
    let mut r2 = NodeProc::new(dir.path(), "r2", c.opts.clone());
    r2.start(Start::default()).await;
    restored
        .add_learner(&r2.learner_request(r2.id))
        .await
        .expect("add learner");
    let on_r2 = as_root.client(&[r2.client_url()]);
    wait_for(Duration::from_secs(30), "learner caught up", || async {
        on_r2
            .get_with("after", Consistency::Serializable)
            .await
            .ok()
            .flatten()
    })
    .await;
    for (k, rev) in &expected {
        let got = on_r2
            .get_with(k, Consistency::Serializable)
            .await
            .expect("get");
        assert_eq!(got.map(|g| g.revision), Some(*rev), "{k} on the learner");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_damaged_snapshots_and_used_data_dirs() {
    let c = Cluster::start(1, Opts::default()).await;
    put_keys(&c.client(), "k", 50).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.snap");
    kvctl::ok(
        &c.nodes[0].client_url(),
        &["snapshot", "save", good.to_str().expect("utf-8")],
    );
    let bytes = std::fs::read(&good).expect("read");
    let cut = dir.path().join("cut.snap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).expect("write");
    let flipped = dir.path().join("flipped.snap");
    let mut f = bytes.clone();
    f[bytes.len() / 2] ^= 0x20;
    std::fs::write(&flipped, &f).expect("write");

    let r = NodeProc::new(dir.path(), "r", c.opts.clone());
    for (file, says) in [
        (&cut, "truncated"),
        (&flipped, "checksum mismatch"),
        (&dir.path().join("missing.snap"), "No such file"),
    ] {
        let out = kvnode_tool(
            &r,
            &["restore", "--snapshot", file.to_str().expect("utf-8")],
        );
        let err = stderr(&out);
        assert!(!out.status.success(), "{}: {err}", file.display());
        assert!(err.contains(says), "{}: {err}", file.display());
        assert_eq!(err.lines().count(), 1, "{err}");
        // Nothing a node could start on is left behind.
        assert!(!r.data_dir.join("db").exists(), "{}", file.display());
    }
    // kvctl status refuses them too, in one line.
    let err = kvctl::fails(
        &c.nodes[0].client_url(),
        &["snapshot", "status", flipped.to_str().expect("utf-8")],
    );
    assert!(err.contains("checksum mismatch"), "{err}");

    // A data dir that holds a node is never overwritten.
    let used = &c.nodes[0];
    let out = kvnode_tool(
        used,
        &["restore", "--snapshot", good.to_str().expect("utf-8")],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already holds a node"),
        "{}",
        stderr(&out)
    );
    assert!(used.is_running());
    used.assert_holds("k", 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_brings_back_the_survivor_of_a_lost_majority() {
    let mut c = Cluster::start(3, Opts::default()).await;
    let last = put_keys(&c.client(), "k", 300).await;
    let leader = c.leader().await;
    let survivor = (leader + 1) % 3;
    c.wait_applied(survivor, last).await;
    for i in 0..3 {
        if i != survivor {
            c.nodes[i].kill9();
        }
    }
    // Alone, it cannot serve writes.
    assert!(
        c.nodes[survivor]
            .client()
            .with_timeout(Duration::from_secs(3))
            .expect("timeout")
            .put("lost", "x")
            .await
            .is_err()
    );
    let st = c.status(survivor).await;
    c.nodes[survivor].sigterm();
    let out = kvnode_tool(&c.nodes[survivor], &["force-new-cluster"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let n = &mut c.nodes[survivor];
    let (client, now) = start_as_only_voter(n).await;
    assert_eq!(now.cluster_id, st.cluster_id, "same cluster, fewer members");
    n.assert_holds("k", 300).await;
    let rev = client.put("after", "recovery").await.expect("put");
    assert!(rev > last);

    // It grows back from there.
    let idx = c.spawn_extra("fresh").await;
    let fresh = &c.nodes[idx];
    c.nodes[survivor]
        .client()
        .add_learner(&fresh.learner_request(fresh.id))
        .await
        .expect("add learner");
    let fc = fresh.client();
    wait_for(Duration::from_secs(30), "new member caught up", || async {
        fc.get_with("after", Consistency::Serializable)
            .await
            .ok()
            .flatten()
    })
    .await;
    fresh.assert_holds("k", 300).await;
}

/// One stream per node: a second is refused at once (503, retryable), and
/// a client that goes away mid-stream frees the slot (the dump stops rather
/// than holding a RocksDB snapshot and a thread for nobody).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_snapshot_stream_at_a_time_and_a_departed_client_frees_it() {
    let c = Cluster::start(1, Opts::default()).await;
    let client = c.client();
    let big = vec![b'x'; 64 << 10];
    for i in 0..400 {
        client
            .put(&format!("big-{i:03}"), big.clone())
            .await
            .expect("put");
    }
    let url = format!("{}/v1/snapshot", c.nodes[0].client_url());
    let http = reqwest::Client::new();
    let mut first = http.get(&url).send().await.expect("first");
    assert_eq!(first.status(), 200);
    // Read a little, then stall: 25 MiB cannot fit in the node's queue
    // (2 MiB) and loopback socket buffers (a few MiB each way), so the dump
    // is still running.
    first.chunk().await.expect("chunk").expect("some bytes");
    let second = http.get(&url).send().await.expect("second");
    assert_eq!(second.status(), 503);
    let body: serde_json::Value = second.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    drop(first);
    let n = wait_for(Duration::from_secs(20), "the slot freed", || async {
        let r = http.get(&url).send().await.ok()?;
        if r.status() != 200 {
            return None;
        }
        Some(r.bytes().await.expect("whole snapshot").len())
    })
    .await;
    assert!(n > 400 * (64 << 10), "a whole snapshot: {n} bytes");
}

/// The same recovery through the API, as the operator (or an admin in
/// Kubernetes, where the node holds its data dir) does it: refused while a
/// quorum answers or for another cluster id; on the survivor of a lost
/// majority, the node exits and comes back as the only voter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_through_the_api_restarts_the_survivor_alone() {
    let mut c = Cluster::start(3, Opts::default()).await;
    let last = put_keys(&c.client(), "k", 200).await;
    let leader = c.leader().await;
    let survivor = (leader + 1) % 3;
    let cluster_id = c.status(survivor).await.cluster_id.expect("cluster id");
    let ep = c.nodes[survivor].client_url();
    let err = kvctl::fails(&ep, &["force-new-cluster", &cluster_id]);
    assert!(err.contains("a quorum of the cluster answers"), "{err}");
    let err = kvctl::fails(&ep, &["force-new-cluster", "not-this-one"]);
    assert!(err.contains("is not this node's cluster"), "{err}");

    c.wait_applied(survivor, last).await;
    for i in 0..3 {
        if i != survivor {
            c.nodes[i].kill9();
        }
    }
    let out = kvctl::ok(&ep, &["force-new-cluster", &cluster_id]);
    assert!(out.contains("exits now"), "{out}");
    let n = &mut c.nodes[survivor];
    let st = n.wait_exit(Duration::from_secs(30)).await;
    assert!(st.success(), "exit status {st:?}");
    // Its supervisor (the kubelet) restarts it; here, the test.
    let (client, now) = start_as_only_voter(n).await;
    assert_eq!(now.cluster_id.as_deref(), Some(cluster_id.as_str()));
    n.assert_holds("k", 200).await;
    assert!(client.put("after", "x").await.expect("put") > last);
    assert!(!n.data_dir.join("FORCE-NEW-CLUSTER").exists());
}
