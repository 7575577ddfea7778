//! `POST /v1/cluster/restore` with real processes: a fresh node receives a
//! snapshot, exits, and restarted (by the test, as the kubelet would) is
//! the only voter of a new cluster holding it; damaged bodies, concurrent
//! restores and initialized nodes are refused and change nothing; a crash
//! while the restore is applied at start is redone at the next start.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kvclient::{Client, ClientError, Consistency, RangeOptions, Role, UserAddRequest};

use crate::common::{Cluster, NodeProc, Opts, put_keys, wait_for};

/// Every key of the store with its revision, read page by page.
async fn all_keys(c: &Client) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut start = None;
    loop {
        let page = c
            .range(&RangeOptions {
                start: start.clone(),
                limit: Some(5000),
                keys_only: true,
                consistency: Consistency::Serializable,
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

/// The whole snapshot `GET /v1/snapshot` streams from `c`'s first node.
async fn take_snapshot(c: &Client) -> (u64, Vec<u8>) {
    let mut s = c.snapshot(false).await.expect("snapshot");
    let mut out = Vec::new();
    while let Some(chunk) = s.next_chunk().await.expect("chunk") {
        out.extend_from_slice(&chunk);
    }
    (s.revision, out)
}

/// Where the value of record `i` of `synthetic` starts: after the header
/// (magic, revision, two empty sections: 24 bytes) and `i` records of 125
/// bytes (lengths, a 9-byte key, a revision, a 100-byte value), then its
/// key length, key, revision and value length.
fn value_at(i: usize) -> usize {
    24 + i * 125 + 4 + 9 + 8 + 4
}

/// A snapshot of `n` keys `s-0000000..` (value `v<i>` padded to 100 bytes,
/// revision `i + 1`) at store revision `n + 10`, without auth or leases.
fn synthetic(n: u64) -> Vec<u8> {
    let mut e = kvapi::snapshot::Encoder::new(Vec::new(), n + 10, &[], &[]).expect("encoder");
    for i in 0..n {
        let value = format!("v{i:<99}");
        e.add(format!("s-{i:07}").as_bytes(), i + 1, value.as_bytes())
            .expect("add");
    }
    e.finish().expect("finish").0
}

/// The API error of a refused restore: (HTTP status, code, message).
fn refusal(r: Result<kvapi::RestoreResponse, ClientError>) -> (u16, String, String) {
    match r {
        Err(ClientError::Api { status, error, .. }) => {
            (status, error.code.as_str().to_owned(), error.message)
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Checks `n` is running, uninitialized, with nothing left from a restore.
async fn assert_untouched_fresh(n: &NodeProc) {
    let st = n.client().status().await.expect("status");
    assert_eq!(st.role, Role::Uninitialized, "{}", n.name);
    assert_eq!(st.cluster_id, None, "{}", n.name);
    assert_eq!(st.id, n.id);
    for f in [
        "RESTORE-UPLOAD.part",
        "RESTORE-PENDING.snap",
        "RESTORE-INCOMPLETE",
    ] {
        assert!(!n.data_dir.join(f).exists(), "{f} left in {}", n.name);
    }
}

/// Restarts `n` after a restore made it exit, and waits until it is ready.
async fn restart_ready(n: &mut NodeProc) -> Client {
    let st = n.wait_exit(Duration::from_secs(30)).await;
    assert!(st.success(), "exit status {st:?}:\n{}", n.log_tail());
    n.start(None).await;
    let client = n.client();
    wait_for(
        Duration::from_secs(60),
        &format!("{} ready", n.name),
        || async { matches!(client.ready().await, Ok(Ok(()))).then_some(()) },
    )
    .await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_through_the_api_founds_a_new_cluster_on_a_fresh_node() {
    let c = Cluster::start(1, Opts::default()).await;
    let admin = c.client();
    let source_cluster = c.status(0).await.cluster_id.expect("cluster id");
    put_keys(&admin, "a", 300).await;
    for i in (0..300).step_by(7) {
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
    admin.auth_enable().await.expect("auth enable");
    let root = admin.clone().with_credentials("root", "root-pw");
    let expected = all_keys(&root).await;
    let (revision, snap) = take_snapshot(&root).await;

    // A fresh node, never initialized (no users, no auth yet).
    let as_root = Opts {
        credentials: Some(("root".into(), "root-pw".into())),
        ..c.opts.clone()
    };
    let mut b = NodeProc::new(c.dir.path(), "b", c.opts.clone());
    b.start(None).await;
    let b_id = b.id;
    assert_untouched_fresh(&b).await;

    let t0 = Instant::now();
    let resp = b
        .client()
        .restore(snap.clone())
        .await
        .expect("restore accepted");
    let received = t0.elapsed();
    assert_eq!(resp.node_id, b_id);
    assert_eq!(resp.revision, revision);
    assert_eq!(resp.keys, expected.len() as u64);
    assert_eq!(resp.bytes, snap.len() as u64);
    assert!(resp.restarting);
    // It exits by itself; its supervisor (here the test) starts it again,
    // now asking with the restored root's credentials.
    b.set_opts(as_root.clone());
    let restored = restart_ready(&mut b).await;
    eprintln!(
        "restore of {} keys ({} bytes): received in {received:?}, serving {:?} after the request",
        expected.len(),
        snap.len(),
        t0.elapsed()
    );
    let st = restored.status().await.expect("status");
    assert_eq!(st.id, b_id, "the node keeps its id");
    assert_eq!(st.membership.voter_ids(), vec![b_id]);
    assert!(st.membership.learners.is_empty());
    let new_cluster = st.cluster_id.clone().expect("cluster id");
    assert_ne!(new_cluster, source_cluster);
    assert_eq!(all_keys(&restored).await, expected);
    let got = restored.get("a-0001").await.expect("get").expect("present");
    assert_eq!(got.value, b"a1".to_vec());
    // Users came with it, auth still on.
    let anonymous = Client::new(&[b.client_url()]).expect("client");
    assert!(anonymous.get("a-0001").await.is_err());
    let alice = restored.user_get("alice").await.expect("alice restored");
    assert_eq!(alice.name, "alice");
    // Revisions go on from the snapshot's.
    let next = restored.put("after", "restore").await.expect("put");
    assert!(next > revision, "{next} after {revision}");
    for f in ["RESTORE-PENDING.snap", "RESTORE-INCOMPLETE"] {
        assert!(!b.data_dir.join(f).exists(), "{f} left behind");
    }
    // A second restore into the restored node is refused.
    let (status, code, _) = refusal(restored.restore(snap).await);
    assert_eq!((status, code.as_str()), (409, "already_exists"));

    // It grows as usual: a learner catches up, then is promoted.
    let mut d = NodeProc::new(c.dir.path(), "d", c.opts.clone());
    d.start(None).await;
    restored
        .add_learner(&d.learner_request(d.id))
        .await
        .expect("add learner");
    let on_d = as_root.client(&[d.client_url()]);
    wait_for(Duration::from_secs(30), "learner caught up", || async {
        on_d.get_with("after", Consistency::Serializable)
            .await
            .ok()
            .flatten()
    })
    .await;
    let voters = restored
        .set_voters(&[b_id, d.id])
        .await
        .expect("promote the learner");
    let mut ids = voters.membership.voter_ids();
    ids.sort_unstable();
    let mut want = vec![b_id, d.id];
    want.sort_unstable();
    assert_eq!(ids, want);
    let st = on_d.status().await.expect("status");
    assert_eq!(st.cluster_id.as_deref(), Some(new_cluster.as_str()));
    restored
        .put("grown", "yes")
        .await
        .expect("put after growing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_through_the_api_refuses_damaged_bodies_and_never_interleaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys: u64 = std::env::var("RAFTKV_RESTORE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let good = synthetic(keys);
    let mut b = NodeProc::new(dir.path(), "b", Opts::default());
    b.start(None).await;
    let client = b.client();

    let cut = good[..good.len() * 2 / 3].to_vec();
    let mut flipped = good.clone();
    // Inside the value of the middle key: only the checksum can tell.
    flipped[value_at(keys as usize / 2) + 10] ^= 0x01;
    // A value length no node writes, half way: refused there, and the
    // rest of the body is read (and dropped) so that the client, still
    // sending, gets the answer.
    let mut bad_length = good.clone();
    let len_at = value_at(keys as usize / 2) - 4;
    bad_length[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_be_bytes()[..]);
    bad_length[len_at] = 0x7f;
    for (body, says) in [
        (cut, "snapshot is truncated"),
        (flipped, "checksum mismatch"),
        (bad_length, "larger than any a node writes"),
        (b"certainly not a snapshot".to_vec(), "bad magic"),
        (Vec::new(), "snapshot is truncated"),
    ] {
        let answer = client.restore(body).await;
        assert!(
            matches!(answer, Err(ClientError::Api { .. })),
            "{says}: {answer:?}\n{}",
            b.log_tail()
        );
        let (status, code, message) = refusal(answer);
        assert_eq!(status, 400, "{message}");
        assert_eq!(code, "bad_request");
        assert!(message.contains(says), "{says}: {message}");
        assert_untouched_fresh(&b).await;
    }

    // A body cut by the client mid-way (the connection drops): the node
    // removes what it had received.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let sending = tokio::spawn({
        let client = client.clone();
        async move { client.restore(reqwest::Body::wrap_stream(stream)).await }
    });
    tx.send(Ok(Bytes::copy_from_slice(&good[..good.len() / 2])))
        .await
        .expect("send");
    wait_for(Duration::from_secs(10), "the upload started", || async {
        b.data_dir
            .join("RESTORE-UPLOAD.part")
            .exists()
            .then_some(())
    })
    .await;
    tx.send(Err(std::io::Error::other("the source went away")))
        .await
        .expect("send");
    drop(tx);
    assert!(sending.await.expect("join").is_err());
    wait_for(Duration::from_secs(10), "the upload removed", || async {
        (!b.data_dir.join("RESTORE-UPLOAD.part").exists()).then_some(())
    })
    .await;
    assert_untouched_fresh(&b).await;

    // One restore at a time: while one streams, another restore and an
    // init are refused (503), and the first still completes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let t0 = Instant::now();
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.restore(reqwest::Body::wrap_stream(stream)).await }
    });
    let half = good.len() / 2;
    tx.send(Ok(Bytes::copy_from_slice(&good[..half])))
        .await
        .expect("send");
    wait_for(Duration::from_secs(10), "the upload started", || async {
        b.data_dir
            .join("RESTORE-UPLOAD.part")
            .exists()
            .then_some(())
    })
    .await;
    let (status, code, message) = refusal(client.restore(good.clone()).await);
    assert_eq!((status, code.as_str()), (503, "unavailable"), "{message}");
    assert!(message.contains("another restore"), "{message}");
    let init = client.init(&kvclient::InitRequest::default()).await;
    match init {
        Err(ClientError::Api {
            status: 503, error, ..
        }) => {
            assert!(error.message.contains("restore"), "{}", error.message)
        }
        other => panic!("init during a restore: {other:?}"),
    }
    tx.send(Ok(Bytes::copy_from_slice(&good[half..])))
        .await
        .expect("send");
    drop(tx);
    let resp = first.await.expect("join").expect("the first restore");
    let received = t0.elapsed();
    assert_eq!(resp.keys, keys);
    assert_eq!(resp.revision, keys + 10);
    let b_id = b.id;
    let restored = restart_ready(&mut b).await;
    eprintln!(
        "restore of {keys} keys ({} bytes): received in {received:?}, serving {:?} after \
         the request",
        good.len(),
        t0.elapsed()
    );
    let st = restored.status().await.expect("status");
    assert_eq!(st.membership.voter_ids(), vec![b_id]);
    assert_eq!(st.revision, keys + 10);
    let all = all_keys(&restored).await;
    assert_eq!(all.len() as u64, keys);
    assert_eq!(all.get("s-0000123"), Some(&124));
    let v = restored
        .get("s-0000123")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(v.value, format!("v{:<99}", 123).into_bytes());

    // After failed restores a fresh node still initializes as usual.
    let mut e = NodeProc::new(dir.path(), "e", Opts::default());
    e.start(None).await;
    let (status, _, _) = refusal(
        e.client()
            .restore(b"RKVSNAP5 and then nothing".to_vec())
            .await,
    );
    assert_eq!(status, 400);
    assert_untouched_fresh(&e).await;
    e.client()
        .init(&kvclient::InitRequest::default())
        .await
        .expect("init after a refused restore");
    let ec = e.client();
    wait_for(Duration::from_secs(20), "e ready", || async {
        matches!(ec.ready().await, Ok(Ok(()))).then_some(())
    })
    .await;
    ec.put("k", "v").await.expect("put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_through_the_api_is_refused_on_an_initialized_node_or_a_member() {
    let mut c = Cluster::start(1, Opts::default()).await;
    let client = c.client();
    let last = put_keys(&client, "k", 50).await;
    let (_, snap) = take_snapshot(&client).await;
    let before = c.status(0).await;
    let node = c.nodes[0].client();
    let (status, code, message) = refusal(node.restore(snap.clone()).await);
    assert_eq!(
        (status, code.as_str()),
        (409, "already_exists"),
        "{message}"
    );
    assert!(message.contains("already initialized"), "{message}");
    // Nothing changed, and it does not exit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = c.status(0).await;
    assert_eq!(after.cluster_id, before.cluster_id);
    assert_eq!(after.revision, last);
    c.nodes[0].assert_holds("k", 50).await;
    assert!(!c.nodes[0].data_dir.join("RESTORE-PENDING.snap").exists());
    assert!(!c.nodes[0].data_dir.join("RESTORE-UPLOAD.part").exists());

    // A node added as a learner has no voters of its own yet, but belongs
    // to a cluster: refused too.
    let l = c.spawn_extra("learner").await;
    let req = c.nodes[l].learner_request(c.nodes[l].id);
    client.add_learner(&req).await.expect("add learner");
    c.wait_applied(l, last).await;
    let (status, code, message) = refusal(c.nodes[l].client().restore(snap).await);
    assert_eq!(
        (status, code.as_str()),
        (409, "already_exists"),
        "{message}"
    );
    c.nodes[l].assert_holds("k", 50).await;
    assert!(c.nodes[0].is_running() && c.nodes[l].is_running());
}

/// The restore is applied at the next start; a crash after the data dir is
/// seeded and before the received file is removed seeds it again from the
/// file (same node id), and a received file damaged on disk stops the node
/// with a clear error instead of a node serving nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_through_the_api_is_redone_after_a_crash_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = synthetic(500);
    let mut b = NodeProc::new(dir.path(), "b", Opts::default());
    b.start(None).await;
    let b_id = b.id;
    b.client().restore(good.clone()).await.expect("restore");
    let st = b.wait_exit(Duration::from_secs(30)).await;
    assert!(st.success());
    // Damaged on disk while the node was down: it refuses to start.
    let pending = b.data_dir.join("RESTORE-PENDING.snap");
    let mut bad = good.clone();
    bad[value_at(250) + 10] ^= 0x01;
    std::fs::write(&pending, &bad).expect("damage");
    let out = tokio::task::spawn_blocking({
        let mut cmd = b.command(None);
        move || cmd.output().expect("run kvnode")
    })
    .await
    .expect("join");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("cannot be applied"), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(pending.exists());
    // Put right again; dies after seeding, before the file is removed.
    std::fs::write(&pending, &good).expect("repair");
    let out = tokio::task::spawn_blocking({
        let mut cmd = b.command(None);
        cmd.env("KVNODE_CRASH_AT", "restore-seeded-before-pending-removed");
        move || cmd.output().expect("run kvnode")
    })
    .await
    .expect("join");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("crash point reached"), "{err}");
    assert!(pending.exists());
    // Started again: seeded again from the file, then the file is gone.
    b.start(None).await;
    let client = b.client();
    wait_for(Duration::from_secs(30), "b ready", || async {
        matches!(client.ready().await, Ok(Ok(()))).then_some(())
    })
    .await;
    let st = client.status().await.expect("status");
    assert_eq!(st.id, b_id);
    assert_eq!(st.membership.voter_ids(), vec![b_id]);
    assert_eq!(all_keys(&client).await.len(), 500);
    assert!(!pending.exists());
    assert!(!b.data_dir.join("RESTORE-INCOMPLETE").exists());
}

/// On a node that verifies client certificates, a restore chooses the new
/// cluster's users: without a certificate naming root it is refused (403)
/// and the node stays empty; the operator's certificate (CN root) is let in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_on_a_tls_node_needs_a_client_certificate_naming_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = std::sync::Arc::new(crate::common::Pki::new(dir.path().join("pki")));
    let opts = Opts {
        tls: Some(pki.clone()),
        ..Opts::default()
    };
    let snap = synthetic(50);
    let mut b = NodeProc::new(dir.path(), "b", opts);
    b.start(None).await;
    assert_untouched_fresh(&b).await;
    let url = b.client_url();
    for who in [None, Some("alice")] {
        if let Some(user) = who {
            pki.issue_client(user);
        }
        let http = crate::common::Pki::http(&pki, who.map(|u| (pki.as_ref(), u)));
        let client = Client::with_http(&[&url], http).expect("client");
        let (status, code, message) = refusal(client.restore(snap.clone()).await);
        assert_eq!(
            (status, code.as_str()),
            (403, "permission_denied"),
            "{who:?}: {message}"
        );
        assert!(
            message.contains("client certificate naming root"),
            "{message}"
        );
        assert_untouched_fresh(&b).await;
    }
    pki.issue_client("root");
    let http = crate::common::Pki::http(&pki, Some((pki.as_ref(), "root")));
    let resp = Client::with_http(&[&url], http)
        .expect("client")
        .restore(snap)
        .await
        .expect("root's certificate may restore");
    assert_eq!(resp.keys, 50);
    let restored = restart_ready(&mut b).await;
    assert_eq!(restored.status().await.expect("status").role, Role::Leader);
}

/// `kvctl snapshot restore` and `kvctl snapshot delete`, the commands a
/// backup Job runs, with `--report` as the Job writes its termination
/// message: a damaged file is refused before anything reaches the node, a
/// good one founds a new cluster, and delete removes snapshots only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvctl_restores_a_saved_file_into_a_fresh_node_and_deletes_only_snapshots() {
    use crate::common::kvctl;

    let c = Cluster::start(1, Opts::default()).await;
    put_keys(&c.client(), "k", 120).await;
    let expected = all_keys(&c.client()).await;
    let dir = c.dir.path();
    // Directories that do not exist yet, as on a fresh backup volume.
    let file = dir.join("ns/kv/backup.snap");
    let file_s = file.to_str().expect("utf-8 path");
    let report = dir.join("report.json");
    let report_s = report.to_str().expect("utf-8 path");
    let read_report = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&report).expect("report written")).expect("json")
    };
    let saved = kvctl::ok_json(
        &c.endpoints()[0],
        &[
            "-o", "json", "snapshot", "save", file_s, "--report", report_s,
        ],
    );
    assert_eq!(read_report(), saved, "the report is the printed result");
    assert_eq!(saved["keys"], expected.len() as u64);
    let revision = saved["revision"].as_u64().expect("revision");

    let mut b = NodeProc::new(dir, "b", c.opts.clone());
    b.start(None).await;
    let ep = b.client_url();

    // Truncated: refused by kvctl itself; the node never hears of it.
    let bytes = std::fs::read(&file).expect("read");
    let cut = dir.join("cut.snap");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).expect("write");
    let cut_s = cut.to_str().expect("utf-8 path");
    let err = kvctl::fails(&ep, &["snapshot", "restore", cut_s, "--report", report_s]);
    assert!(err.contains("cut.snap"), "{err}");
    let reported = read_report()["error"].as_str().expect("error").to_owned();
    assert!(reported.contains("cut.snap"), "{reported}");
    assert_untouched_fresh(&b).await;
    // One node only: a restore to "the first of several" would be a guess.
    let two = format!("{ep},{}", c.endpoints()[0]);
    let err = kvctl::fails(&two, &["snapshot", "restore", file_s]);
    assert!(err.contains("exactly one endpoint"), "{err}");

    let out = kvctl::ok_json(
        &ep,
        &[
            "-o", "json", "snapshot", "restore", file_s, "--report", report_s,
        ],
    );
    assert_eq!(read_report(), out);
    assert_eq!(out["node_id"], b.id);
    assert_eq!(out["revision"], revision);
    assert_eq!(out["keys"], expected.len() as u64);
    assert_eq!(out["sha256"], saved["sha256"]);
    assert_eq!(out["restarting"], true);
    let restored = restart_ready(&mut b).await;
    assert_eq!(all_keys(&restored).await, expected);

    // Delete: anything but a snapshot stays; a snapshot goes; twice is an
    // error unless --missing-ok (a retried Job).
    let other = dir.join("notes.txt");
    std::fs::write(&other, "not a snapshot at all").expect("write");
    let err = kvctl::fails(&ep, &["snapshot", "delete", other.to_str().expect("path")]);
    assert!(err.contains("not a raftkv snapshot"), "{err}");
    assert!(other.exists());
    let out = kvctl::ok_json(
        &ep,
        &[
            "-o", "json", "snapshot", "delete", file_s, "--report", report_s,
        ],
    );
    assert_eq!(out["deleted"], true);
    assert_eq!(read_report(), out);
    assert!(!file.exists());
    kvctl::fails(&ep, &["snapshot", "delete", file_s]);
    let out = kvctl::ok_json(
        &ep,
        &["-o", "json", "snapshot", "delete", file_s, "--missing-ok"],
    );
    assert_eq!(out["deleted"], false);
}
