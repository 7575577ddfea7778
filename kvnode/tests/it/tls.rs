//! TLS on both ports, with real handshakes between real processes: peers
//! prove themselves with certificates from the cluster's CA, plaintext and
//! foreign certificates are refused at the handshake, certificate files
//! are re-read without a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{Cluster, NodeProc, Opts, Pki, wait_for};
use kvclient::Consistency;

fn tls_opts(dir: &std::path::Path, name: &str) -> Opts {
    Opts {
        tls: Some(Arc::new(Pki::new(dir.join(name)))),
        ..Opts::default()
    }
}

/// The DER of the certificate a TLS server presented for `resp`.
fn presented(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info with the peer certificate")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_runs_on_mutual_tls_and_refuses_plaintext_and_foreign_peers() {
    let pkis = tempfile::tempdir().expect("tempdir");
    let opts = tls_opts(pkis.path(), "cluster");
    let pki = opts.tls.clone().expect("pki");
    let mut c = Cluster::start(3, opts.clone()).await;

    // Replication, forwarding and follower reads all run over TLS.
    let leader = c.leader().await;
    let f1 = (leader + 1) % 3;
    let f2 = (leader + 2) % 3;
    let rev = c.nodes[f1]
        .client()
        .put("k", "over tls")
        .await
        .expect("forwarded put");
    let got = c.nodes[f2]
        .client()
        .get("k")
        .await
        .expect("get")
        .expect("present");
    assert_eq!((&got.value[..], got.revision), (&b"over tls"[..], rev));

    // Plaintext to either port is not HTTP the node will answer.
    let plain = reqwest::Client::new();
    let n = &c.nodes[leader];
    for url in [
        format!("http://127.0.0.1:{}/healthz", n.client_port),
        format!("http://127.0.0.1:{}/raft/vote", n.peer_port),
    ] {
        let r = plain.post(&url).body("x").send().await;
        assert!(
            r.is_err(),
            "plaintext {url} answered: {:?}",
            r.map(|r| r.status())
        );
    }

    // A caller with a certificate from another CA fails the handshake on
    // the peer port; the same call with this CA's certificate reaches the
    // node (and is refused by raft's own checks, not by TLS).
    let foreign = Pki::new(pkis.path().join("foreign"));
    foreign.issue_node("intruder");
    pki.issue_client("insider");
    let peer_vote = format!("https://127.0.0.1:{}/raft/vote", n.peer_port);
    let intruder = Pki::http(&pki, Some((&foreign, "intruder")));
    let r = intruder.post(&peer_vote).body("x").send().await;
    assert!(
        r.is_err(),
        "foreign certificate admitted: {:?}",
        r.map(|r| r.status())
    );
    let no_cert = Pki::http(&pki, None);
    let r = no_cert.post(&peer_vote).body("x").send().await;
    assert!(
        r.is_err(),
        "peer port admitted a client without a certificate"
    );
    let insider = Pki::http(&pki, Some((&pki, "insider")));
    let r = insider
        .post(&peer_vote)
        .body("x")
        .send()
        .await
        .expect("handshake with our CA");
    assert_ne!(
        r.status(),
        200,
        "an RPC without cluster headers must not reach raft"
    );

    // A node whose certificates come from another CA, added as a learner,
    // never receives data: the leader cannot complete a handshake with it.
    let mut stranger = NodeProc::new(
        c.dir.path(),
        "stranger",
        Opts {
            tls: Some(Arc::new(foreign)),
            ..Opts::default()
        },
    );
    stranger.start(None).await;
    c.client()
        .add_learner(&stranger.learner_request(stranger.id))
        .await
        .expect("add learner");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        c.client()
            .put("k", "more")
            .await
            .expect("cluster keeps writing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = stranger.client().status().await.expect("stranger status");
    assert_eq!(
        st.cluster_id, None,
        "the stranger never heard from the cluster"
    );
    assert_eq!(st.revision, 0);
    assert!(
        stranger
            .client()
            .get_with("k", Consistency::Serializable)
            .await
            .is_err(),
        "the stranger holds no data"
    );
    c.client()
        .remove_member(stranger.id)
        .await
        .expect("remove stranger");
    c.nodes.push(stranger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cert_auth_requires_a_certificate_from_the_ca() {
    let pkis = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(pkis.path().join("ca"));
    let foreign = Pki::new(pkis.path().join("foreign"));
    let dir = tempfile::tempdir().expect("tempdir");
    let n = NodeProc::new(dir.path(), "n1", Opts::default());
    let (cert, key) = pki.issue_node("n1");
    pki.issue_client("alice");
    foreign.issue_client("mallory");
    let (cert, key, ca) = (
        cert.display().to_string(),
        key.display().to_string(),
        pki.ca_file().display().to_string(),
    );
    let mut cmd = n.command(None);
    cmd.args(["--dev", "--cert-file", &cert, "--key-file", &key])
        .args(["--trusted-ca-file", &ca, "--client-cert-auth"]);
    let _node = crate::common::Spawned::new(cmd, &n.data_dir.with_extension("log"));
    let url = format!("https://127.0.0.1:{}/healthz", n.client_port);

    let alice = Pki::http(&pki, Some((&pki, "alice")));
    wait_for(Duration::from_secs(20), "node to serve", || async {
        alice
            .get(&url)
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
    let none = Pki::http(&pki, None).get(&url).send().await;
    assert!(none.is_err(), "no client certificate was admitted");
    let mallory = Pki::http(&pki, Some((&foreign, "mallory")))
        .get(&url)
        .send()
        .await;
    assert!(
        mallory.is_err(),
        "a certificate from another CA was admitted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_are_reloaded_without_a_restart() {
    let pkis = tempfile::tempdir().expect("tempdir");
    let opts = tls_opts(pkis.path(), "ca");
    let pki = opts.tls.clone().expect("pki");
    let c = Cluster::start(1, opts).await;
    let url = format!("{}/healthz", c.nodes[0].client_url());
    let before = presented(&Pki::http(&pki, None).get(&url).send().await.expect("get"));

    // Writes keep flowing through one pooled client while the files change.
    let writer = {
        let cl = c.client();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                match cl.put("rotating", format!("{ok}")).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    pki.issue_node(&c.nodes[0].name);
    let rotated_at = Instant::now();
    let after = wait_for(Duration::from_secs(5), "the new certificate", || async {
        // A new client: a new connection, a new handshake.
        let r = Pki::http(&pki, None).get(&url).send().await.ok()?;
        let der = presented(&r);
        (der != before).then_some(der)
    })
    .await;
    eprintln!(
        "new certificate served {:?} after the files changed",
        rotated_at.elapsed()
    );
    assert_ne!(after, before);
    let (ok, failed) = writer.await.expect("writer");
    assert!(
        failed.is_empty(),
        "writes failed during rotation: {failed:?}"
    );
    assert!(ok > 50, "only {ok} writes in 5 s");
}
