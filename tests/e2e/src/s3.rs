//! An S3-compatible server for the backup scenarios: moto's server (from
//! PyPI, installed by `scripts/prereqs.sh test`), started by the test on
//! the host's address on the pod network so that the operator pod reaches
//! it, and stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "e2e-access";
pub const SECRET_KEY: &str = "e2e-secret";

pub struct S3 {
    child: Child,
    /// `http://HOST:PORT`, as the operator pod reaches it.
    pub endpoint: String,
    http: reqwest::Client,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The host's address on the pod network: `RAFTKV_E2E_S3_HOST`, else the
/// local control plane's bridge address (`tests/local-k8s.sh`: the host
/// side of `$RAFTKV_NET`, default 10.244.0.1).
pub fn host() -> String {
    std::env::var("RAFTKV_E2E_S3_HOST").unwrap_or_else(|_| {
        format!(
            "{}.1",
            std::env::var("RAFTKV_NET").unwrap_or_else(|_| "10.244.0".into())
        )
    })
}

fn python() -> anyhow::Result<PathBuf> {
    let cache = std::env::var("RAFTKV_CACHE")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache/raftkv")))?;
    let python = cache.join("moto/bin/python");
    anyhow::ensure!(
        python.exists(),
        "{} is missing: `scripts/prereqs.sh test` installs moto's S3 server",
        python.display()
    );
    Ok(python)
}

impl S3 {
    /// Starts the server and creates `buckets`.
    pub async fn start(buckets: &[&str]) -> anyhow::Result<S3> {
        let host = host();
        let port = {
            let l = std::net::TcpListener::bind((host.as_str(), 0)).map_err(|e| {
                anyhow::anyhow!(
                    "binding {host}: {e} (set RAFTKV_E2E_S3_HOST to an address pods reach)"
                )
            })?;
            l.local_addr()?.port()
        };
        let child = Command::new(python()?)
            .args(["-m", "moto.server", "-H", &host, "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let s3 = S3 {
            child,
            endpoint: format!("http://{host}:{port}"),
            http: reqwest::Client::new(),
        };
        let start = Instant::now();
        for bucket in buckets {
            loop {
                match s3.http.put(s3.url(bucket, "")).send().await {
                    Ok(r) if r.status().is_success() => break,
                    r => {
                        anyhow::ensure!(
                            start.elapsed() < Duration::from_secs(60),
                            "moto did not create bucket {bucket}: {r:?}"
                        );
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
        Ok(s3)
    }

    fn url(&self, bucket: &str, key: &str) -> String {
        format!("{}/{bucket}/{key}", self.endpoint)
    }

    /// The keys under `prefix` (moto does not check signatures, so the
    /// test reads the bucket as a plain HTTP client).
    pub async fn list(&self, bucket: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
        let body = self
            .http
            .get(self.url(bucket, ""))
            .query(&[("list-type", "2"), ("prefix", prefix)])
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let mut keys: Vec<String> = body
            .split("<Key>")
            .skip(1)
            .filter_map(|part| part.split("</Key>").next())
            .map(str::to_owned)
            .collect();
        keys.sort();
        Ok(keys)
    }

    pub async fn get(&self, bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self
            .http
            .get(self.url(bucket, key))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?
            .to_vec())
    }

    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
        self.http
            .put(self.url(bucket, key))
            .body(body)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}
