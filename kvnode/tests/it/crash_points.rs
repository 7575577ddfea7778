//! Crash points (`KVNODE_CRASH_AT`, see `kvnode/src/crash.rs`): a node
//! aborts at a chosen place around a durable write, is restarted without the
//! crash point, and must recover to a state that holds every acknowledged
//! write.

use std::time::Duration;

use crate::common::{Cluster, NodeProc, Opts, Start, put_keys};

/// Waits for `node` to die at its crash point (and not somewhere else).
async fn expect_crash(node: &mut NodeProc, point: &str) {
    let status = node.wait_exit(Duration::from_secs(30)).await;
    assert!(
        !status.success(),
        "{point}: {} exited with {status}",
        node.name
    );
    assert!(
        node.log_tail().contains("crash point reached"),
        "{point}: {} died elsewhere:\n{}",
        node.name,
        node.log_tail()
    );
}

/// A learner that already holds data is removed, misses writes the leader
/// then compacts away, and is added back, so it must install a snapshot; it
/// dies at each step of that install. Restarted, it finishes the install
/// from its marker instead of serving a half-replaced state machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_each_snapshot_install_step_is_recovered_on_restart() {
    let mut c = Cluster::start(
        3,
        Opts {
            snapshot_threshold: 100,
            ..Opts::default()
        },
    )
    .await;
    let client = c.client();
    let l = c.spawn_extra("learner").await;
    let add = c.nodes[l].learner_request(c.nodes[l].id);
    client.add_learner(&add).await.expect("add learner");
    let last = put_keys(&client, "base", 100).await;
    c.wait_applied(l, last).await;
    let id = add.id;
    let mut written = vec![("base".to_owned(), 100)];
    for point in [
        "snapshot-install-after-marker",
        "snapshot-install-after-delete",
        "snapshot-install-after-ingest",
    ] {
        client.remove_member(id).await.expect("remove learner");
        c.nodes[l].kill9();
        put_keys(&client, point, 300).await;
        written.push((point.to_owned(), 300));
        c.nodes[l]
            .start(Start::from(Some(id)).env(&[("KVNODE_CRASH_AT", point)]))
            .await;
        client.add_learner(&add).await.expect("add learner again");
        expect_crash(&mut c.nodes[l], point).await;

        let last = client.put("marker", point).await.expect("put");
        c.nodes[l].start(Some(id)).await;
        c.wait_applied(l, last).await;
        assert!(
            c.nodes[l]
                .log_tail()
                .contains("finishing a snapshot install that was interrupted"),
            "{point}: no resumed install in the log:\n{}",
            c.nodes[l].log_tail()
        );
        for (prefix, n) in &written {
            c.nodes[l].assert_holds(prefix, *n).await;
        }
    }
}

/// A follower that dies at `point` (a pass after its restart) while writes
/// continue: the other two keep the quorum, and the restarted follower ends
/// up with every acknowledged write.
async fn follower_crash_at(point: &str) {
    let mut c = Cluster::start(3, Opts::default()).await;
    let client = c.client();
    put_keys(&client, "before", 50).await;
    let leader = c.leader().await;
    let f = (leader + 1) % 3;
    c.nodes[f].kill9();
    let id = c.nodes[f].id;
    let spec = format!("{point}@10");
    c.nodes[f]
        .start(Start::from(Some(id)).env(&[("KVNODE_CRASH_AT", &spec)]))
        .await;
    let last = put_keys(&client, "during", 200).await;
    expect_crash(&mut c.nodes[f], point).await;
    let last = last.max(put_keys(&client, "after", 50).await);
    c.nodes[f].start(Some(id)).await;
    c.wait_applied(f, last).await;
    for (prefix, n) in [("before", 50), ("during", 200), ("after", 50)] {
        c.nodes[f].assert_holds(prefix, n).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_crash_between_wal_write_and_sync_is_recovered() {
    follower_crash_at("log-append-unsynced").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_crash_before_writing_applied_entries_is_recovered() {
    follower_crash_at("sm-apply-before-write").await;
}

/// A misspelt point would never fire, and a test relying on it would pass
/// without crashing anything: kvnode refuses to start instead.
#[test]
fn a_misspelt_crash_point_stops_kvnode_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvnode"))
        .args([
            "--dev",
            "--client-addr",
            "127.0.0.1:0",
            "--peer-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("KVNODE_CRASH_AT", "log-append-unsyncd")
        .output()
        .expect("run kvnode");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no crash point \"log-append-unsyncd\""),
        "{err}"
    );
}
