//! The request examples of docs/api.md, sent verbatim to a real node: the
//! documentation and the server cannot drift apart unnoticed.

use crate::common::{Cluster, Opts};
use kvclient::TxnResponse;

/// The code blocks of `doc` whose info string is exactly `info`.
fn blocks<'a>(doc: &'a str, info: &str) -> Vec<&'a str> {
    let fence = format!("```{info}\n");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(at) = rest.find(&fence) {
        let body = &rest[at + fence.len()..];
        let end = body.find("\n```").expect("unterminated code block");
        out.push(&body[..end]);
        rest = &body[end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_transactions_are_accepted() {
    let path = crate::common::manifest_dir().join("../docs/api.md");
    let doc = std::fs::read_to_string(path).expect("read docs/api.md");
    let examples = blocks(&doc, "json txn");
    assert!(
        examples.len() >= 2,
        "docs/api.md lost its transaction examples ({} found)",
        examples.len()
    );
    let c = Cluster::start(1, Opts::default()).await;
    let url = format!("{}/v1/txn", c.nodes[0].client_url());
    let http = reqwest::Client::new();
    // The first example's compares hold once acct/b exists with another
    // value than 10; its success branch writes the blob the second example
    // compares in base64. Two rounds: the first example's compare on
    // acct/a's revision 0 then fails, so both of its branches run.
    c.client().put("acct/b", "5").await.expect("put");
    let mut succeeded = Vec::new();
    for round in 0..2 {
        for (i, body) in examples.iter().enumerate() {
            let resp = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("send");
            let status = resp.status();
            let text = resp.text().await.expect("body");
            assert_eq!(
                status, 200,
                "example {i} (round {round}) rejected: {text}\n{body}"
            );
            let parsed: TxnResponse = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("example {i}: response {text}: {e}"));
            assert!(!parsed.results.is_empty(), "example {i}: {text}");
            succeeded.push(parsed.succeeded);
        }
    }
    let n = examples.len();
    assert!(
        succeeded[0],
        "first example, first round: every compare holds"
    );
    assert!(
        !succeeded[n],
        "first example, second round: acct/a exists now"
    );
    assert!(
        succeeded[1],
        "second example: the base64 compare matches the bytes the first example wrote"
    );
}
