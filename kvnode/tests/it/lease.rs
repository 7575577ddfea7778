//! Leases between real processes: expiry deletes the keys on every node,
//! keep-alives (through any node) hold them, a leader kill does not expire
//! them early, revoke deletes the keys in one revision, a put naming a
//! missing lease changes nothing, and the table survives restarts and
//! travels in snapshots.

use std::time::{Duration, Instant};

use crate::common::{Cluster, NodeProc, Opts, wait_for};
use crate::watch::open;
use kvapi::{LeaseGrant, LeaseInfo, LeaseList, LeaseRevoked, WatchLine};
use kvclient::Consistency;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Raw lease calls against one node.
struct Leases {
    http: reqwest::Client,
    base: String,
}

impl Leases {
    fn on(n: &NodeProc) -> Leases {
        Leases {
            http: reqwest::Client::new(),
            base: n.client_url(),
        }
    }

    async fn grant(&self, ttl: u64) -> LeaseGrant {
        let r = self
            .http
            .post(format!("{}/v1/leases", self.base))
            .json(&json!({ "ttl": ttl }))
            .send()
            .await
            .expect("grant");
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.expect("grant body")
    }

    async fn keep_alive(&self, id: u64) -> StatusCode {
        self.http
            .post(format!("{}/v1/leases/{id}/keepalive", self.base))
            .send()
            .await
            .expect("keepalive")
            .status()
    }

    async fn info(&self, id: u64) -> Result<LeaseInfo, (StatusCode, Value)> {
        let r = self
            .http
            .get(format!("{}/v1/leases/{id}?keys=true", self.base))
            .send()
            .await
            .expect("info");
        match r.status() {
            StatusCode::OK => Ok(r.json().await.expect("info body")),
            s => Err((s, r.json().await.unwrap_or(Value::Null))),
        }
    }

    async fn list(&self) -> Vec<u64> {
        let r: LeaseList = self
            .http
            .get(format!("{}/v1/leases", self.base))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("list body");
        r.leases.iter().map(|l| l.id).collect()
    }

    async fn revoke(&self, id: u64) -> (StatusCode, Value) {
        let r = self
            .http
            .delete(format!("{}/v1/leases/{id}", self.base))
            .send()
            .await
            .expect("revoke");
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, key: &str, lease: u64) -> (StatusCode, Value) {
        let r = self
            .http
            .put(format!(
                "{}{}?lease={lease}",
                self.base,
                kvclient::client::key_path(key)
            ))
            .body("v")
            .send()
            .await
            .expect("put");
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
}

/// Whether `key` exists in node `n`'s own state.
async fn has(n: &NodeProc, key: &str) -> bool {
    n.client()
        .get_with(key, Consistency::Serializable)
        .await
        .expect("get")
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_hold_a_lease_and_its_keys_go_everywhere_when_it_expires() {
    let c = Cluster::start(3, Opts::default()).await;
    let leader = c.leader().await;
    let follower = Leases::on(&c.nodes[(leader + 1) % 3]);
    let lease = follower.grant(2).await;
    assert_eq!(lease.ttl, 2);
    for k in ["svc/a", "svc/b"] {
        let (s, v) = follower.put(k, lease.id).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let info = follower.info(lease.id).await.expect("info, forwarded");
    assert_eq!(
        info.keys.as_deref(),
        Some(&["svc/a".to_string(), "svc/b".into()][..])
    );
    // At most the TTL; a leader elected since the grant gives every lease
    // its TTL plus twice the election timeout from when it took over.
    let most = 2.0 + 2.0 * Opts::default().election_ms as f64 / 1000.0;
    assert!(
        info.remaining > 0.0 && info.remaining <= most,
        "{info:?} (at most {most} s)"
    );

    // Twice the TTL with keep-alives through a follower: still there.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(follower.keep_alive(lease.id).await, StatusCode::OK);
    }
    // Answered after the leader reset the deadline: the TTL runs from
    // before this instant.
    let stopped = Instant::now();
    for n in &c.nodes {
        assert!(has(n, "svc/a").await, "kept alive on {}", n.name);
    }
    // Without them, gone from every node within the TTL and a tick.
    for n in &c.nodes {
        wait_for(Duration::from_secs(10), "the keys to expire", || async {
            (!has(n, "svc/a").await && !has(n, "svc/b").await).then_some(())
        })
        .await;
    }
    let took = stopped.elapsed();
    assert!(
        // Not before the TTL less the keep-alive's way back to us.
        took >= Duration::from_millis(1900),
        "expired early: {took:?}"
    );
    println!("lease of 2 s expired {took:?} after the last keep-alive");
    let (s, _) = follower.info(lease.id).await.expect_err("gone");
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(follower.keep_alive(lease.id).await, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_deletes_the_keys_in_one_revision_and_a_missing_lease_writes_nothing() {
    let c = Cluster::start(3, Opts::default()).await;
    let api = Leases::on(&c.nodes[0]);
    let lease = api.grant(60).await;
    let mut first = 0;
    for k in ["l/1", "l/2", "l/3"] {
        let (s, v) = api.put(k, lease.id).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if first == 0 {
            first = v["revision"].as_u64().expect("revision");
        }
    }
    // A key put again without the lease leaves it.
    let client = c.client();
    client.put("l/3", "mine").await.expect("put");
    let mut w = open(
        &c.nodes[1].client_url(),
        &format!("prefix=l/&start_revision={first}"),
        None,
    )
    .await
    .expect("watch");
    w.next().await;
    w.events(4).await;

    let (s, v) = api.revoke(lease.id).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r: LeaseRevoked = serde_json::from_value(v).expect("revoked");
    assert_eq!(r.deleted, 2);
    let dels = w.events(2).await;
    for d in &dels {
        let WatchLine::Delete(e) = d else {
            panic!("expected a delete, got {d:?}")
        };
        assert_eq!(e.revision, r.revision, "one revision for the whole revoke");
    }
    assert!(!has(&c.nodes[1], "l/1").await);
    assert!(has(&c.nodes[1], "l/3").await, "detached by the later put");
    let (s, _) = api.revoke(lease.id).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A put naming a lease that does not exist: 404, nothing written.
    let (s, v) = api.put("l/ghost", lease.id).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let txn = kvapi::TxnRequest {
        success: vec![
            kvapi::TxnOp::Put {
                key: "l/t1".into(),
                value: "x".into(),
                value_encoding: None,
                lease: None,
            },
            kvapi::TxnOp::Put {
                key: "l/t2".into(),
                value: "x".into(),
                value_encoding: None,
                lease: Some(lease.id),
            },
        ],
        ..Default::default()
    };
    let err = client
        .txn(&txn)
        .await
        .expect_err("txn with a missing lease");
    assert_eq!(err.code(), Some(kvapi::ErrorCode::NotFound), "{err}");
    assert!(!has(&c.nodes[0], "l/ghost").await && !has(&c.nodes[0], "l/t1").await);

    // Bad input: a clear 400.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/leases", c.nodes[0].client_url()))
        .json(&json!({"ttl": 0}))
        .send()
        .await
        .expect("grant");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(api.keep_alive(0).await, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_kill_does_not_expire_a_lease_early_and_the_table_survives_restarts() {
    let opts = Opts {
        snapshot_threshold: 50,
        ..Opts::default()
    };
    let mut c = Cluster::start(3, opts).await;
    let leader = c.leader().await;
    let other = (leader + 1) % 3;
    let api = Leases::on(&c.nodes[other]);
    let lease = api.grant(10).await;
    let (s, v) = api.put("lock/owner", lease.id).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(api.keep_alive(lease.id).await, StatusCode::OK);
    let kept = Instant::now();
    c.nodes[leader].kill9();
    // A new leader (election timeout 300 ms here) must not expire it
    // before the TTL has run from the last keep-alive.
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(kept.elapsed())).await;
    assert!(has(&c.nodes[other], "lock/owner").await, "expired early");
    assert_eq!(
        api.keep_alive(lease.id).await,
        StatusCode::OK,
        "kept alive by the new leader"
    );

    c.nodes[leader].start(None).await;
    // Every node killed and restarted: the table is on disk.
    for n in &mut c.nodes {
        n.kill9();
    }
    for n in &mut c.nodes {
        n.start(None).await;
    }
    c.wait_all_ready().await;
    let api = Leases::on(&c.nodes[0]);
    wait_for(
        Duration::from_secs(10),
        "the lease after restarts",
        || async { api.list().await.contains(&lease.id).then_some(()) },
    )
    .await;
    let info = api.info(lease.id).await.expect("info");
    assert_eq!(info.keys.as_deref(), Some(&["lock/owner".to_string()][..]));

    // A learner that catches up by snapshot gets the table too.
    let client = c.client();
    for i in 0..150 {
        client.put(&format!("fill/{i}"), "v").await.expect("put");
    }
    let idx = c.spawn_extra("learner").await;
    let l = &c.nodes[idx];
    client
        .add_learner(&l.learner_request(l.id))
        .await
        .expect("add learner");
    let last = client.put("fill/last", "v").await.expect("put");
    c.wait_applied(idx, last).await;
    let lm = c.nodes[idx].client().metrics().await.expect("metrics");
    assert!(
        lm.contains("raftkv_leases 1"),
        "learner's lease count:\n{lm}"
    );
    let (s, v) = Leases::on(&c.nodes[0]).revoke(lease.id).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let learner = &c.nodes[idx];
    wait_for(
        Duration::from_secs(10),
        "the revoke on the learner",
        || async { (!has(learner, "lock/owner").await).then_some(()) },
    )
    .await;
}
