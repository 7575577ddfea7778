//! Backups through a real S3-compatible server and real kvnode processes:
//! moto's server on loopback (installed by `scripts/prereqs.sh test`), the
//! kvnode binary the build made, and the operator's own bucket code
//! (`backup::store`). What the KvBackup controller adds on top (status,
//! schedule, retention, fromBackup) is covered by the e2e suite on a real
//! API server.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStore;
use raftkv_operator::backup::crd::S3Destination;
use raftkv_operator::backup::store::{Bucket, Credentials, StoreError};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// moto's S3 server on a free loopback port, with one bucket.
struct S3 {
    _proc: Proc,
    endpoint: String,
}

const BUCKET: &str = "raftkv-backups";

impl S3 {
    async fn start() -> S3 {
        let cache = std::env::var("RAFTKV_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/raftkv")
            });
        let python = cache.join("moto/bin/python");
        assert!(
            python.exists(),
            "{} is missing: `scripts/prereqs.sh test` installs moto's S3 server",
            python.display()
        );
        let port = free_port();
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto");
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let url = format!("{endpoint}/{BUCKET}");
        // moto answers once it listens; creating the bucket is the probe.
        wait_for(
            Duration::from_secs(60),
            "moto to create the bucket",
            || async {
                let r = http.put(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await;
        S3 {
            _proc: Proc(child),
            endpoint,
        }
    }

    fn destination(&self, prefix: &str) -> S3Destination {
        S3Destination {
            endpoint: Some(self.endpoint.clone()),
            bucket: BUCKET.into(),
            prefix: prefix.into(),
            region: "us-east-1".into(),
            credentials_secret: "unused-here".into(),
            virtual_hosted_style: false,
        }
    }

    fn bucket(&self, prefix: &str) -> Bucket {
        Bucket::open(&self.destination(prefix), &creds()).expect("bucket")
    }

    /// The same bucket through object_store directly, to plant objects.
    fn raw(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .build()
            .expect("raw store")
    }
}

fn creds() -> Credentials {
    Credentials {
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        session_token: None,
    }
}

/// The kvnode binary the build made, beside this test's directory.
fn kvnode_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("kvnode");
    assert!(
        bin.exists(),
        "{} is missing: build it first (scripts/build.sh, or cargo build --workspace)",
        bin.display()
    );
    bin
}

/// One plaintext kvnode on loopback.
struct Node {
    proc: Option<Proc>,
    args: Vec<String>,
    url: String,
    _dir: tempfile::TempDir,
}

impl Node {
    /// `dev`: initializes itself as a one-node cluster; otherwise it waits
    /// uninitialized.
    async fn start(name: &str, dev: bool) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (free_port(), free_port());
        let mut args: Vec<String> = [
            "--name",
            name,
            "--data-dir",
            &dir.path().join("data").to_string_lossy(),
            "--client-addr",
            &format!("127.0.0.1:{client}"),
            "--peer-addr",
            &format!("127.0.0.1:{peer}"),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if dev {
            args.push("--dev".into());
        }
        let mut node = Node {
            proc: None,
            args,
            url: format!("http://127.0.0.1:{client}"),
            _dir: dir,
        };
        node.spawn();
        node.wait_healthy().await;
        node
    }

    fn spawn(&mut self) {
        let child = Command::new(kvnode_bin())
            .args(&self.args)
            .env("KVNODE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting kvnode");
        self.proc = Some(Proc(child));
    }

    fn client(&self) -> kvclient::Client {
        kvclient::Client::new(&[&self.url]).expect("client")
    }

    async fn wait_healthy(&self) {
        let c = self.client();
        wait_for(Duration::from_secs(30), "kvnode to answer", || async {
            c.status().await.ok().map(drop)
        })
        .await;
    }

    /// Waits until the process exits by itself (as a node does after a
    /// restore), then starts it again as its supervisor would.
    async fn restart_after_exit(&mut self) {
        let proc = self.proc.as_mut().expect("running");
        wait_for(
            Duration::from_secs(30),
            "kvnode to exit after the restore",
            || {
                let exited = proc.0.try_wait().expect("wait").is_some();
                async move { exited.then_some(()) }
            },
        )
        .await;
        self.spawn();
        self.wait_healthy().await;
    }
}

async fn write_keys(c: &kvclient::Client, n: usize) -> u64 {
    let mut last = 0;
    for i in 0..n {
        // Values of varied size, some over a kilobyte.
        let value = format!("value-{i}-{}", "x".repeat(i % 1500));
        last = c.put(&format!("k/{i:05}"), value).await.expect("put");
    }
    last
}

#[tokio::test]
async fn backup_goes_to_the_bucket_and_restores_into_a_new_cluster() {
    let s3 = S3::start().await;
    let a = Node::start("a0", true).await;
    let ca = a.client();
    let written = write_keys(&ca, 600).await;
    let source = ca.status().await.expect("status");

    let bucket = s3.bucket("prod/");
    let key = bucket.key("ns/kv/first.snap");
    let started = Instant::now();
    let mut progress = 0;
    let up = bucket
        .upload(&key, ca.snapshot(false).await.expect("snapshot"), |b| {
            progress = b
        })
        .await
        .expect("upload");
    println!(
        "MEASURED backup of {} keys ({} bytes) into moto in {:.2} s",
        up.keys,
        up.bytes,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(up.keys, 600);
    assert_eq!(
        up.revision, written,
        "the snapshot holds every acknowledged write"
    );
    assert_eq!(progress, up.bytes, "progress reaches the whole size");
    assert_eq!(up.location, format!("s3://{BUCKET}/prod/ns/kv/first.snap"));
    assert_eq!(bucket.list().await.expect("list"), vec![key.clone()]);
    let (size, _) = bucket.download(&key).await.expect("head");
    assert_eq!(size, up.bytes, "the object is the whole snapshot");

    // Writes after the backup are not in it.
    ca.put("k/after", "later").await.expect("put");

    let mut b = Node::start("b0", false).await;
    let cb = b.client();
    let (_, stream) = bucket.download(&key).await.expect("download");
    let restored = cb
        .restore(reqwest::Body::wrap_stream(stream))
        .await
        .expect("restore");
    assert_eq!((restored.keys, restored.revision), (600, written));
    b.restart_after_exit().await;
    let status = wait_for(
        Duration::from_secs(30),
        "b0 to lead its new cluster",
        || async {
            let s = cb.status().await.ok()?;
            (s.role == kvclient::Role::Leader).then_some(s)
        },
    )
    .await;
    assert_ne!(
        status.cluster_id, source.cluster_id,
        "a restore founds a new cluster"
    );
    for i in (0..600).step_by(37).chain([599]) {
        let got = cb
            .get(&format!("k/{i:05}"))
            .await
            .expect("get")
            .expect("key restored");
        assert_eq!(
            got.value,
            Bytes::from(format!("value-{i}-{}", "x".repeat(i % 1500)))
        );
    }
    assert!(cb.get("k/after").await.expect("get").is_none());
    let all = cb
        .range(&kvclient::RangeOptions {
            prefix: Some("k/".into()),
            keys_only: true,
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .expect("range");
    assert_eq!(
        all.items.len(),
        600,
        "every key of the backup, nothing else"
    );

    // Retention's delete, and deleting what is gone already.
    bucket.delete(&key).await.expect("delete");
    bucket.delete(&key).await.expect("delete again");
    assert!(bucket.list().await.expect("list").is_empty());
}

#[tokio::test]
async fn a_corrupt_or_truncated_object_is_refused_and_the_node_stays_empty() {
    let s3 = S3::start().await;
    let a = Node::start("a0", true).await;
    let ca = a.client();
    write_keys(&ca, 200).await;
    let bucket = s3.bucket("");
    let key = bucket.key("good.snap");
    bucket
        .upload(&key, ca.snapshot(false).await.expect("snapshot"), |_| {})
        .await
        .expect("upload");
    let (_, mut stream) = bucket.download(&key).await.expect("download");
    let mut good = Vec::new();
    while let Some(chunk) = stream.next().await {
        good.extend_from_slice(&chunk.expect("chunk"));
    }
    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x40;
    let truncated = good[..good.len() - 40].to_vec();
    let raw = s3.raw();
    for (name, bytes) in [("flipped.snap", flipped), ("truncated.snap", truncated)] {
        raw.put(&object_store::path::Path::from(name), bytes.into())
            .await
            .expect("plant");
    }

    let b = Node::start("b0", false).await;
    let cb = b.client();
    for (name, expect) in [
        ("flipped.snap", "checksum"),
        ("truncated.snap", "truncated"),
    ] {
        let (_, stream) = bucket.download(name).await.expect("download");
        let err = cb
            .restore(reqwest::Body::wrap_stream(stream))
            .await
            .expect_err("a damaged snapshot is refused");
        assert_eq!(
            err.code(),
            Some(kvclient::ErrorCode::BadRequest),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(expect), "{name}: {err}");
        let status = cb.status().await.expect("b0 still serves");
        assert_eq!(
            status.role,
            kvclient::Role::Uninitialized,
            "{name} left b0 empty"
        );
    }
    let missing = bucket.download("nothing-here.snap").await;
    assert!(
        matches!(missing, Err(StoreError::Object { .. })),
        "a missing object is an error naming it"
    );
}

/// A node that serves a damaged snapshot (what a disk or network fault
/// would do): the upload must not complete, so no object names it.
#[tokio::test]
async fn a_snapshot_that_fails_its_checksum_leaves_no_object() {
    let s3 = S3::start().await;
    let a = Node::start("a0", true).await;
    let ca = a.client();
    write_keys(&ca, 100).await;
    let mut good = Vec::new();
    let mut snap = ca.snapshot(false).await.expect("snapshot");
    while let Some(chunk) = snap.next_chunk().await.expect("chunk") {
        good.extend_from_slice(&chunk);
    }
    let mut bad = good.clone();
    let at = bad.len() / 3;
    bad[at] ^= 1;

    // A loopback server that answers /v1/snapshot with the damaged bytes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = Bytes::from(bad);
    let app = axum::Router::new().route(
        "/v1/snapshot",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([(kvapi::snapshot::REVISION_HEADER, "1")], body) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let fake = kvclient::Client::new(&[format!("http://{addr}")]).expect("client");

    let bucket = s3.bucket("");
    let err = bucket
        .upload(
            "bad.snap",
            fake.snapshot(false).await.expect("open"),
            |_| {},
        )
        .await
        .expect_err("a damaged snapshot is not stored");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    assert!(
        bucket.list().await.expect("list").is_empty(),
        "the aborted multipart upload left no object"
    );
}
