//! The store revision follows etcd's rule: only a change of data advances
//! it. Deletes of missing keys, failed preconditions, read-only
//! transactions, empty range deletes and leader changes leave it alone;
//! range deletes remove exactly their range in one revision.

use crate::common::{Cluster, Opts};
use kvclient::{CompareOp, CompareTarget, RangeOptions, TxnOp, TxnOpResult, TxnRequest};

/// `DELETE url` (a range delete), expecting 200 and its JSON answer.
async fn delete_range(http: &reqwest::Client, url: String) -> kvclient::DeleteRangeResponse {
    let resp = http.delete(&url).send().await.expect("send");
    assert_eq!(resp.status(), 200, "DELETE {url}");
    resp.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_changes_advance_the_revision() {
    let c = Cluster::start(3, Opts::default()).await;
    let cl = c.client();
    let http = reqwest::Client::new();
    let revision = || async { c.status(0).await.revision };

    let r1 = cl.put("a", "1").await.expect("put");
    let r2 = cl.put("b", "2").await.expect("put");
    assert_eq!(r2, r1 + 1, "consecutive puts, consecutive revisions");

    let gone = cl.delete("missing").await.expect("delete missing");
    assert!(!gone.deleted);
    assert_eq!(gone.revision, r2, "a delete that finds nothing");

    let failed = cl.put_if_revision("a", "x", r1 + 100).await;
    assert!(failed.is_err(), "precondition must fail");

    let read_only = cl
        .txn(&TxnRequest {
            compare: vec![kvclient::Compare {
                key: "a".into(),
                target: CompareTarget::Revision(r1),
                op: CompareOp::Eq,
            }],
            success: vec![
                TxnOp::Get { key: "a".into() },
                TxnOp::Get { key: "b".into() },
            ],
            failure: vec![],
        })
        .await
        .expect("read-only txn");
    assert!(read_only.succeeded);
    assert_eq!(read_only.revision, r2, "a transaction of gets");
    assert!(matches!(
        &read_only.results[0],
        TxnOpResult::Get { found: true, revision, .. } if *revision == r1
    ));

    // A leader change appends log entries but changes no data.
    let leader = c.leader().await;
    let to = c.nodes[(leader + 1) % 3].id;
    cl.transfer_leader(to).await.expect("transfer");
    let base = c.nodes[c.leader().await].client_url();
    let after_election = cl.put("c", "3").await.expect("put after election");
    assert_eq!(after_election, r2 + 1, "nothing in between changed data");
    let r3 = after_election;
    c.wait_applied(0, r3).await;
    assert_eq!(revision().await, r3, "status reports the store revision");

    // Range deletes: by prefix and by [start, end), one revision each.
    for k in ["p/1", "p/2", "p/3", "q/1", "q/2", "r"] {
        cl.put(k, "v").await.expect("put");
    }
    let r4 = r3 + 6;
    let del = delete_range(&http, format!("{base}/v1/kv?prefix=p%2F")).await;
    assert_eq!((del.deleted, del.revision), (3, r4 + 1));
    let del = delete_range(&http, format!("{base}/v1/kv?start=q%2F1&end=q%2F2")).await;
    assert_eq!((del.deleted, del.revision), (1, r4 + 2), "end is exclusive");
    let none = delete_range(&http, format!("{base}/v1/kv?prefix=nothing-here")).await;
    assert_eq!(
        (none.deleted, none.revision),
        (0, r4 + 2),
        "an empty range delete"
    );
    let left: Vec<String> = cl
        .range(&RangeOptions::default())
        .await
        .expect("range")
        .items
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(left, ["a", "b", "c", "q/2", "r"]);

    // Bad range deletes are 400s that change nothing.
    for q in ["", "?start=b", "?start=b&end=a", "?prefix=a&start=b&end=c"] {
        let resp = http
            .delete(format!("{base}/v1/kv{q}"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 400, "DELETE /v1/kv{q}");
        let body: serde_json::Value = resp.json().await.expect("json error body");
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
    }

    // Every key, then the revision keeps counting from where it was.
    let all = delete_range(&http, format!("{base}/v1/kv?prefix=")).await;
    assert_eq!((all.deleted, all.revision), (5, r4 + 3));
    assert!(
        cl.range(&RangeOptions::default())
            .await
            .expect("range")
            .items
            .is_empty()
    );
    assert_eq!(cl.put("z", "1").await.expect("put"), r4 + 4);
}

/// A restart keeps the counter (it is persisted with the data, not derived
/// from the keys that are left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revision_survives_a_restart_of_every_node() {
    let mut c = Cluster::start(3, Opts::default()).await;
    let cl = c.client();
    cl.put("a", "1").await.expect("put");
    let del = cl.delete("a").await.expect("delete");
    assert!(del.deleted);
    for i in 0..3 {
        c.wait_applied(i, del.revision).await;
    }
    for n in &mut c.nodes {
        n.kill9();
    }
    for n in &mut c.nodes {
        let id = n.id;
        n.start(Some(id)).await;
    }
    c.wait_all_ready().await;
    let cl = c.client();
    assert_eq!(cl.put("b", "2").await.expect("put"), del.revision + 1);
}
