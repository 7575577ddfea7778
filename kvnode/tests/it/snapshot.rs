//! A learner added after the leader compacted its log catches up through a
//! streamed snapshot, then through the log.

use crate::common::{Cluster, Opts, wait_for};
use kvclient::Consistency;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_catches_up_from_snapshot() {
    let opts = Opts {
        snapshot_threshold: 100,
        ..Opts::default()
    };
    let mut c = Cluster::start(3, opts).await;
    let client = c.client();
    let mut last = 0;
    for i in 0..600 {
        last = client
            .put(&format!("key{i:04}"), format!("v{i}"))
            .await
            .expect("put");
    }
    // A delete advances the store revision without leaving a key that
    // carries it: the learner can only get it right if the snapshot (or the
    // log after it) carries the counter itself.
    let del = client.delete("key0000").await.expect("delete");
    assert!(del.deleted);
    assert_eq!(del.revision, last + 1);
    last = del.revision;
    let leader = c.leader().await;
    // The leader must have purged the start of its log, or this test would
    // not exercise snapshot transfer.
    let metrics = c.nodes[leader].client().metrics().await.expect("metrics");
    let purged = metric(&metrics, "raftkv_raft_purged_index");
    assert!(purged > 1, "leader purged up to {purged}");

    let idx = c.spawn_extra("learner").await;
    let l = &c.nodes[idx];
    client
        .add_learner(&l.learner_request(l.id))
        .await
        .expect("add learner");
    c.wait_applied(idx, last).await;
    let lm = c.nodes[idx].client().metrics().await.expect("metrics");
    assert!(
        metric(&lm, "raftkv_raft_snapshot_index") > 0,
        "learner installed a snapshot"
    );
    let lc = c.nodes[idx].client();
    assert!(
        lc.get_with("key0000", Consistency::Serializable)
            .await
            .expect("get")
            .is_none()
    );
    for i in [1, 299, 599] {
        let got = lc
            .get_with(&format!("key{i:04}"), Consistency::Serializable)
            .await
            .expect("get")
            .expect("present on learner");
        assert_eq!(String::from_utf8_lossy(&got.value), format!("v{i}"));
    }
    // And keeps following the log afterwards.
    let rev = client.put("after", "snapshot").await.expect("put");
    assert_eq!(rev, last + 1, "one revision per change");
    let got = wait_for(
        Duration::from_secs(20),
        "learner applies 'after'",
        || async {
            lc.get_with("after", Consistency::Serializable)
                .await
                .ok()
                .flatten()
        },
    )
    .await;
    assert_eq!(got.revision, rev, "same revision on the learner");
    let st = lc.status().await.expect("status");
    assert_eq!(
        st.revision, rev,
        "learner's store revision after the snapshot"
    );
    assert_eq!(st.role, kvclient::Role::Learner);
    wait_for(Duration::from_secs(10), "learner ready", || async {
        matches!(lc.ready().await, Ok(Ok(()))).then_some(())
    })
    .await;
    drop(c.nodes.pop());
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("metric {name} missing"))
}
