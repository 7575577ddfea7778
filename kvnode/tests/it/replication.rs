//! A 3-node cluster replicates writes, and reads see them at the promised
//! consistency level from every node.

use crate::common::{Cluster, Opts, put_keys};
use kvclient::Consistency;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_and_follower_reads_are_linearizable() {
    let c = Cluster::start(3, Opts::default()).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;

    // Acknowledged by the leader -> readable on every node once applied.
    let lc = c.nodes[leader].client();
    let last = put_keys(&lc, "k", 50).await;
    for i in 0..3 {
        c.wait_applied(i, last).await;
        c.nodes[i].assert_holds("k", 50).await;
        let got = c.nodes[i]
            .client()
            .get_with("k-0049", Consistency::Serializable)
            .await
            .expect("get")
            .expect("present");
        assert_eq!(got.revision, last, "node {i}");
    }

    // A linearizable read from a follower returns the latest acknowledged
    // write, immediately, with no waiting on the test side.
    let fc = c.nodes[follower].client();
    for round in 0..20 {
        let v = format!("round-{round}");
        lc.put("hot", v.clone()).await.expect("put");
        let got = fc.get("hot").await.expect("get").expect("present");
        assert_eq!(String::from_utf8_lossy(&got.value), v);
    }

    // Writes sent to a follower are forwarded to the leader.
    let rev = fc.put("via-follower", "x").await.expect("forwarded put");
    assert!(rev > last);
    let got = lc.get("via-follower").await.expect("get").expect("present");
    assert_eq!(got.revision, rev);

    // Range scans paginate in key order.
    let page1 = fc
        .range(&kvclient::RangeOptions {
            prefix: Some("k".into()),
            limit: Some(20),
            ..Default::default()
        })
        .await
        .expect("range");
    assert_eq!(page1.items.len(), 20);
    assert_eq!(page1.items[0].key, "k-0000");
    assert_eq!(page1.next.as_deref(), Some("k-0020"));
    let page3 = fc
        .range(&kvclient::RangeOptions {
            prefix: Some("k".into()),
            start: Some("k-0040".into()),
            limit: Some(20),
            ..Default::default()
        })
        .await
        .expect("range");
    assert_eq!(page3.items.len(), 10);
    assert_eq!(page3.next, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preconditions_and_transactions() {
    let c = Cluster::start(3, Opts::default()).await;
    let cl = c.client();

    let r1 = cl.put_if_absent("lock", "a").await.expect("first create");
    let err = cl
        .put_if_absent("lock", "b")
        .await
        .expect_err("second create");
    assert_eq!(err.code(), Some(kvclient::ErrorCode::PreconditionFailed));
    let err = cl
        .put_if_revision("lock", "c", r1 + 1000)
        .await
        .expect_err("stale");
    assert_eq!(err.code(), Some(kvclient::ErrorCode::PreconditionFailed));
    let r2 = cl.put_if_revision("lock", "c", r1).await.expect("cas");
    assert!(r2 > r1);
    let err = cl
        .delete_if_revision("lock", r1)
        .await
        .expect_err("stale delete");
    assert_eq!(err.code(), Some(kvclient::ErrorCode::PreconditionFailed));
    assert!(
        cl.delete_if_revision("lock", r2)
            .await
            .expect("delete")
            .deleted
    );
    assert!(!cl.delete("lock").await.expect("delete absent").deleted);

    // Binary values round-trip through the range API as base64.
    cl.put("bin", vec![0xffu8, 0, 1]).await.expect("put");
    let r = cl
        .range(&kvclient::RangeOptions {
            prefix: Some("bin".into()),
            ..Default::default()
        })
        .await
        .expect("range");
    let v = r.items[0].value.as_ref().expect("value");
    assert_eq!(v.value_encoding, Some(kvclient::ValueEncoding::Base64));
    assert_eq!(v.to_bytes().expect("b64"), vec![0xff, 0, 1]);

    let txn: kvclient::TxnRequest = serde_json::from_value(serde_json::json!({
        "compare": [{"key": "acct/a", "target": {"exists": false}}],
        "success": [
            {"op": "put", "key": "acct/a", "value": "100"},
            {"op": "put", "key": "acct/b", "value": "0"},
            {"op": "get", "key": "acct/a"}
        ],
        "failure": [{"op": "get", "key": "acct/a"}]
    }))
    .expect("txn json");
    let first = cl.txn(&txn).await.expect("txn");
    assert!(first.succeeded);
    assert_eq!(first.results.len(), 3);
    match &first.results[2] {
        kvclient::TxnOpResult::Get {
            found,
            value,
            revision,
        } => {
            assert!(found);
            assert_eq!(value.as_ref().expect("value").value, "100");
            assert_eq!(*revision, first.revision);
        }
        other => panic!("unexpected {other:?}"),
    }
    let second = cl.txn(&txn).await.expect("txn");
    assert!(!second.succeeded, "compare must fail the second time");
    assert_eq!(second.results.len(), 1);
}
