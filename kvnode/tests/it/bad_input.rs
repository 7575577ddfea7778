//! Bad input gets the documented 4xx/503 JSON error and the node keeps
//! serving.

use crate::common::{Cluster, NodeProc, Opts};
use serde_json::Value;

async fn send(method: reqwest::Method, url: String, body: Vec<u8>) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .request(method, url)
        .body(body)
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let json: Value = resp.json().await.expect("every error is JSON");
    (status, json)
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors() {
    let c = Cluster::start(3, Opts::default()).await;
    let base = c.nodes[1].client_url(); // a follower or the leader, either way
    use reqwest::Method as M;

    let long_key = "k".repeat(4097);
    let (s, v) = send(M::PUT, format!("{base}/v1/kv/{long_key}"), b"x".to_vec()).await;
    assert_eq!((s, code(&v)), (413, "too_large"));

    let (s, v) = send(
        M::PUT,
        format!("{base}/v1/kv/big"),
        vec![b'x'; (1 << 20) + 1],
    )
    .await;
    assert_eq!((s, code(&v)), (413, "too_large"));

    let (s, v) = send(M::POST, format!("{base}/v1/txn"), b"{not json".to_vec()).await;
    assert_eq!((s, code(&v)), (400, "bad_request"));

    let unknown_op = br#"{"success": [{"op": "increment", "key": "a"}]}"#.to_vec();
    let (s, v) = send(M::POST, format!("{base}/v1/txn"), unknown_op).await;
    assert_eq!((s, code(&v)), (400, "bad_request"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("increment")
    );

    let (s, v) = send(
        M::PUT,
        format!("{base}/v1/kv/a?if_revision=abc"),
        b"1".to_vec(),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "bad_request"));

    let (s, v) = send(
        M::GET,
        format!("{base}/v1/kv/a?consistency=eventual"),
        vec![],
    )
    .await;
    assert_eq!((s, code(&v)), (400, "bad_request"));

    let (s, v) = send(M::GET, format!("{base}/v1/kv/%FF%FE"), vec![]).await;
    assert_eq!((s, code(&v)), (400, "bad_request"));

    let (s, v) = send(M::GET, format!("{base}/v1/kv/missing"), vec![]).await;
    assert_eq!((s, code(&v)), (404, "not_found"));

    let (s, v) = send(
        M::DELETE,
        format!("{base}/v1/cluster/members/424242"),
        vec![],
    )
    .await;
    assert_eq!((s, code(&v)), (404, "not_found"));

    let (s, v) = send(
        M::PUT,
        format!("{base}/v1/cluster/voters"),
        br#"{"voters": [1, 424242]}"#.to_vec(),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "bad_request"));

    let (s, v) = send(
        M::POST,
        format!("{base}/v1/cluster/learners"),
        br#"{"id": 9, "peer_url": "nope", "client_url": "http://x:1"}"#.to_vec(),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "bad_request"));

    let (s, v) = send(
        M::POST,
        format!("{base}/v1/cluster/transfer-leader"),
        br#"{"to": "x"}"#.to_vec(),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "bad_request"));

    let (s, v) = send(M::GET, format!("{base}/no/such/route"), vec![]).await;
    assert_eq!((s, code(&v)), (404, "not_found"));

    let ops: Vec<Value> = (0..129)
        .map(|i| serde_json::json!({"op": "put", "key": format!("k{i}"), "value": "v"}))
        .collect();
    let too_many = serde_json::to_vec(&serde_json::json!({ "success": ops })).expect("json");
    let (s, v) = send(M::POST, format!("{base}/v1/txn"), too_many).await;
    assert_eq!((s, code(&v)), (400, "bad_request"));

    // Garbage on the peer port, correctly addressed (as if from a member),
    // is refused too.
    let st = c.status(1).await;
    let garbage = reqwest::Client::new()
        .post(format!("{}/raft/append", c.nodes[1].peer_url()))
        .header("x-raftkv-target-id", st.id.to_string())
        .header(
            "x-raftkv-cluster-id",
            st.cluster_id.clone().unwrap_or_default(),
        )
        .header("x-raftkv-from-id", c.nodes[0].id.to_string())
        .body(vec![0xc1u8, 0xff, 0x00, 0x13])
        .send()
        .await
        .expect("send");
    assert_eq!(garbage.status().as_u16(), 400);

    // Re-init of a 3-voter cluster as a one-node cluster is refused.
    let (s, v) = send(
        M::POST,
        format!("{}/v1/cluster/init", c.nodes[0].client_url()),
        vec![],
    )
    .await;
    assert_eq!((s, code(&v)), (412, "precondition_failed"), "{v}");

    // Still serving, nothing lost.
    let client = c.client();
    let rev = client
        .put("after", "ok")
        .await
        .expect("put after bad input");
    assert!(rev > 0);
    assert_eq!(client.get("big").await.expect("get"), None);
    for n in &c.nodes {
        assert!(n.client().health().await.is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninitialized_node_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = NodeProc::new(dir.path(), "lonely", Opts::default());
    n.start(None).await;
    let base = n.client_url();
    use reqwest::Method as M;
    for (m, path) in [
        (M::GET, "/v1/kv/a"),
        (M::PUT, "/v1/kv/a"),
        (M::POST, "/v1/cluster/learners"),
        (M::PUT, "/v1/cluster/voters"),
        (M::POST, "/v1/cluster/transfer-leader"),
    ] {
        let body = match path {
            "/v1/cluster/learners" => br#"{"id": 5, "peer_url": "http://127.0.0.1:1", "client_url": "http://127.0.0.1:2"}"#.to_vec(),
            "/v1/cluster/voters" => br#"{"voters": [5]}"#.to_vec(),
            "/v1/cluster/transfer-leader" => br#"{"to": 5}"#.to_vec(),
            _ => b"v".to_vec(),
        };
        let (s, v) = send(m.clone(), format!("{base}{path}"), body).await;
        assert_eq!((s, code(&v)), (503, "not_initialized"), "{m} {path}: {v}");
    }
    let ready = n.client().ready().await.expect("answers");
    assert!(ready.is_err(), "not ready before init");

    // init then works and is idempotent.
    n.client().init(&Default::default()).await.expect("init");
    n.client()
        .init(&Default::default())
        .await
        .expect("init again");
    crate::common::wait_for(std::time::Duration::from_secs(10), "ready", || async {
        matches!(n.client().ready().await, Ok(Ok(()))).then_some(())
    })
    .await;
    n.client().put("a", "1").await.expect("put");
}
