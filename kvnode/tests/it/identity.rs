//! Node identity: ids live in the data dir, a wiped node comes back as a new
//! node that disturbs nothing until it is added, and peer RPCs for another
//! node or cluster are refused.

use std::time::Duration;

use crate::common::{Cluster, NodeProc, Opts, is_voter, put_keys, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_follower_returns_with_new_id_and_rejoins_when_added() {
    let mut c = Cluster::start(3, Opts::default()).await;
    let client = c.client();
    let last = put_keys(&client, "d", 100).await;
    let leader = c.leader().await;
    let f = (leader + 1) % 3;
    let old_id = c.nodes[f].id;

    c.nodes[f].kill9();
    c.nodes[f].wipe();
    c.nodes[f].start(None).await;
    let new_id = c.nodes[f].id;
    assert_ne!(new_id, old_id, "a wiped node gets a new id");

    // It is not a member and cannot disturb the cluster: quorum and data
    // stay, and it is not ready.
    let st = c.nodes[f].client().status().await.expect("status");
    assert_eq!(st.role, kvclient::Role::Uninitialized);
    assert!(c.nodes[f].client().ready().await.expect("answers").is_err());
    let rev = client.put("while-wiped", "ok").await.expect("quorum kept");
    assert!(rev > last);
    let lst = c.status(leader).await;
    assert!(is_voter(&lst, old_id), "old id still listed until removed");
    assert!(!lst.membership.contains(new_id));

    // Replace: remove the old id, add the new one, promote it.
    let admin = c.nodes[leader].client();
    admin.remove_member(old_id).await.expect("remove old id");
    let n = &c.nodes[f];
    admin
        .add_learner(&n.learner_request(new_id))
        .await
        .expect("add new id");
    c.wait_applied(f, rev).await;
    let mut voters = admin.status().await.expect("status").membership.voter_ids();
    voters.push(new_id);
    admin.set_voters(&voters).await.expect("promote");
    c.nodes[f].assert_holds("d", 100).await;
    wait_for(Duration::from_secs(10), "3 voters incl. new id", || async {
        let st = admin.status().await.ok()?;
        (st.membership.voters.len() == 3 && is_voter(&st, new_id)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_id_mismatch_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = NodeProc::new(dir.path(), "a", Opts::default());
    n.start(Some(7)).await;
    n.kill9();
    let out = n.command(Some(8)).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to start"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_rpc_for_another_node_or_cluster_is_refused() {
    let c = Cluster::start(3, Opts::default()).await;
    let n = &c.nodes[0];
    let cluster_id = c.status(0).await.cluster_id.expect("cluster id");
    let http = reqwest::Client::new();
    let url = format!("{}/raft/vote", n.peer_url());

    let wrong_node = http
        .post(&url)
        .header("x-raftkv-target-id", (n.id + 1000).to_string())
        .header("x-raftkv-cluster-id", &cluster_id)
        .body(vec![0u8])
        .send()
        .await
        .expect("send");
    assert_eq!(wrong_node.status().as_u16(), 409);
    let msg = wrong_node.text().await.expect("body");
    // A prober learns nothing about the node it reached.
    assert!(
        !msg.contains(&n.id.to_string()),
        "the answer names the real id: {msg}"
    );

    // Without the cluster id, or from a node that is not a member: refused
    // before the body is looked at (it is not even valid MessagePack).
    let no_cluster = http
        .post(&url)
        .header("x-raftkv-target-id", n.id.to_string())
        .body(vec![0xc1u8; 64])
        .send()
        .await
        .expect("send");
    assert_eq!(no_cluster.status().as_u16(), 409);
    let read_index = format!("{}/raft/read-index", n.peer_url());
    for from in [None, Some(n.id + 1000)] {
        let mut req = http
            .post(&read_index)
            .header("x-raftkv-target-id", n.id.to_string())
            .header("x-raftkv-cluster-id", &cluster_id);
        if let Some(f) = from {
            req = req.header("x-raftkv-from-id", f.to_string());
        }
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 403, "read-index from {from:?}");
    }
    let member = http
        .post(&read_index)
        .header("x-raftkv-target-id", n.id.to_string())
        .header("x-raftkv-cluster-id", &cluster_id)
        .header("x-raftkv-from-id", c.nodes[1].id.to_string())
        .send()
        .await
        .expect("send");
    assert_ne!(
        member.status().as_u16(),
        403,
        "a member's rpc passes the gate"
    );

    let wrong_cluster = http
        .post(&url)
        .header("x-raftkv-target-id", n.id.to_string())
        .header("x-raftkv-cluster-id", "another-cluster")
        .body(vec![0u8])
        .send()
        .await
        .expect("send");
    assert_eq!(wrong_cluster.status().as_u16(), 409);
    assert!(
        wrong_cluster
            .text()
            .await
            .expect("body")
            .contains("cluster")
    );

    // The peer API is not on the client port at all.
    let on_client = http
        .post(format!("{}/raft/vote", n.client_url()))
        .send()
        .await
        .expect("send");
    assert_eq!(on_client.status().as_u16(), 404);
}
