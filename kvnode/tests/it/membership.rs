//! Membership 3 -> 5 -> 3 through the admin API while writes continue,
//! without losing a write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Cluster, Opts, is_voter, wait_for};
use kvclient::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_five_and_shrink_to_three_under_writes() {
    let mut c = Cluster::start(3, Opts::default()).await;
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // Writers use the original three nodes, which stay in the cluster.
    let writer_client = c.client();
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("m/{i:06}");
                if let Ok(rev) = writer_client.put(&k, i.to_string()).await {
                    acked.lock().expect("lock").insert(k, rev);
                }
                i += 1;
            }
        })
    };
    let admin = c.client();

    // 3 -> 5: add learners, then promote them.
    let mut new_ids = Vec::new();
    for name in ["n4", "n5"] {
        let i = c.spawn_extra(name).await;
        let n = &c.nodes[i];
        let req = n.learner_request(n.id);
        admin.add_learner(&req).await.expect("add learner");
        // Idempotent: the same request again is fine.
        admin.add_learner(&req).await.expect("add learner again");
        new_ids.push(n.id);
    }
    let all: Vec<u64> = c.nodes.iter().map(|n| n.id).collect();
    admin.set_voters(&all).await.expect("promote");
    let st = voters_settle(&admin, 5).await;
    for id in &all {
        assert!(is_voter(&st, *id), "{id} is a voter");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 5 -> 3: move leadership off the nodes going away if needed, drop them
    // from the voters, then remove them.
    let leader = c.leader().await;
    let keep: Vec<u64> = c.nodes[..3].iter().map(|n| n.id).collect();
    if !keep.contains(&c.nodes[leader].id) {
        admin.transfer_leader(keep[0]).await.expect("transfer");
    }
    admin.set_voters(&keep).await.expect("demote");
    for id in &new_ids {
        admin.remove_member(*id).await.expect("remove");
    }
    let st = voters_settle(&admin, 3).await;
    assert!(st.membership.learners.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    for n in c.nodes.drain(3..) {
        drop(n);
    }

    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 20, "writes continued ({} acked)", acked.len());
    let client = c.client();
    for (k, rev) in &acked {
        let got = client
            .get(k)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{k} lost"));
        assert_eq!(got.revision, *rev, "{k}");
    }
}

async fn voters_settle(admin: &Client, n: usize) -> kvclient::ClusterStatus {
    wait_for(Duration::from_secs(20), &format!("{n} voters"), || async {
        let st = admin.status().await.ok()?;
        (st.membership.voters.len() == n && !st.membership.joint).then_some(st)
    })
    .await
}
