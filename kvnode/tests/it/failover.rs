//! Kill -9 the leader under a stream of writes: a new leader takes over,
//! writes resume through the survivors, and no acknowledged write is lost,
//! also after every node restarts from its data dir.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Cluster, ELECTION_MS, Opts};
use kvclient::Consistency;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3, Opts::default()).await;
    let old = c.leader().await;

    // Writers go through all nodes and record every acknowledged write.
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = c.client();
        let acked = acked.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (k, v) = (format!("w{w}/{i:06}"), format!("value-{w}-{i}"));
                if client.put(&k, v.clone()).await.is_ok() {
                    acked.lock().expect("lock").insert(k, v);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_kill = acked.lock().expect("lock").len();
    assert!(before_kill > 0, "writes flow before the crash");

    let killed_at = Instant::now();
    c.nodes[old].kill9();
    let new = c.leader().await;
    let failover = killed_at.elapsed();
    assert_ne!(new, old);
    // A follower campaigns after 1 to 1.2 election timeouts of silence;
    // allow a split vote or two on a loaded machine.
    assert!(
        failover < Duration::from_millis(ELECTION_MS * 5),
        "new leader after {failover:?}"
    );
    eprintln!("new leader {} after {failover:?}", c.nodes[new].name);

    // Writes resume through the survivors.
    let at_failover = acked.lock().expect("lock").len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        acked.lock().expect("lock").len() > at_failover,
        "writes resumed"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    eprintln!("{} acknowledged writes", acked.len());
    verify(&c, &acked).await;

    // Every node restarts from its data dir: still all there.
    for n in c.nodes.iter_mut() {
        n.kill9();
    }
    for n in c.nodes.iter_mut() {
        let id = n.id;
        n.start(Some(id)).await;
    }
    c.wait_all_ready().await;
    verify(&c, &acked).await;
}

async fn verify(c: &Cluster, acked: &BTreeMap<String, String>) {
    let client = c.client();
    for (k, v) in acked {
        let got = client
            .get_with(k, Consistency::Linearizable)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("acknowledged key {k} lost"));
        assert_eq!(String::from_utf8_lossy(&got.value), *v, "key {k}");
    }
}

/// Right after the leader dies, a follower still names it; a write sent
/// there cannot reach it. Once the follower's connections to the dead
/// leader are refused, the answer says so definitely (`no_leader`,
/// "nothing was sent"), not "may or may not have been applied", and
/// indeed nothing is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_cannot_reach_a_dead_leader_is_a_definite_no_leader() {
    let opts = Opts {
        // Long enough that no election ends the window in which the
        // follower still names the dead leader.
        election_ms: 3000,
        ..Opts::default()
    };
    let mut c = Cluster::start(3, opts).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let client = c.nodes[follower].client();
    client
        .put("warm", "up")
        .await
        .expect("write through the follower");
    c.nodes[leader].kill9();

    let start = Instant::now();
    let mut seen = Vec::new();
    let definite = loop {
        assert!(
            start.elapsed() < Duration::from_millis(2000),
            "no no_leader answer within 2 s; answers: {seen:?}"
        );
        let key = format!("after-{}", seen.len());
        match client.put(&key, "x").await {
            Err(e) if e.code() == Some(kvapi::ErrorCode::NoLeader) => break (key, e.to_string()),
            // The first attempts may meet pooled connections the kill
            // reset: those are rightly ambiguous.
            Err(e) if e.code() == Some(kvapi::ErrorCode::Unavailable) => seen.push(e.to_string()),
            other => panic!("unexpected answer while the follower names a dead leader: {other:?}"),
        }
    };
    assert!(definite.1.contains("nothing was sent"), "{}", definite.1);

    // A new leader takes over; the refused write never happened.
    c.nodes[leader].start(None).await;
    let all = c.client();
    let got = all
        .get_with(&definite.0, Consistency::Linearizable)
        .await
        .expect("read after failover");
    assert!(got.is_none(), "{} was applied: {got:?}", definite.0);
}
