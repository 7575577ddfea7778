//! SIGTERM on the leader hands leadership over before the process exits.

use std::time::{Duration, Instant};

use crate::common::{Cluster, Opts, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_leader_transfers_leadership() {
    // A long election timeout: no follower may start an election on its own
    // within 3 s of the last heartbeat, so a leader seen sooner than that
    // can only come from the transfer.
    let opts = Opts {
        heartbeat_ms: 100,
        election_ms: 3000,
        ..Opts::default()
    };
    let mut c = Cluster::start(3, opts).await;
    let client = c.client();
    for i in 0..20 {
        client.put(&format!("s{i}"), "v").await.expect("put");
    }
    let old = c.leader().await;
    let old_id = c.nodes[old].id;
    let start = Instant::now();
    let status = c.nodes[old].sigterm();
    let exit_time = start.elapsed();
    assert!(status.success(), "exit status {status:?}");

    let survivors: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let new_leader = wait_for(Duration::from_secs(10), "new leader", || async {
        let st = c.nodes[survivors[0]].client().status().await.ok()?;
        st.leader.filter(|l| l.id != old_id).map(|l| l.id)
    })
    .await;
    let elapsed = start.elapsed();
    eprintln!("exit after {exit_time:?}, new leader {new_leader} after {elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(2500),
        "new leader only after {elapsed:?}: no handover"
    );
    // The survivors serve writes and still have the data.
    let c2 = kvclient::Client::new(&[
        c.nodes[survivors[0]].client_url(),
        c.nodes[survivors[1]].client_url(),
    ])
    .expect("client");
    c2.put("after", "x").await.expect("put after shutdown");
    assert!(c2.get("s19").await.expect("get").is_some());
}
