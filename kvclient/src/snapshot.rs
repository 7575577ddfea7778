//! `GET /v1/snapshot` as a stream of chunks (see `kvapi::snapshot` for the
//! format and its decoder). The request goes to each endpoint in turn until
//! one answers; once the stream has begun it is not retried elsewhere (a
//! second node's snapshot is another snapshot), so a cut stream is an
//! error for the caller to act on.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::Method;

pub use kvapi::snapshot::{DecodeError, Decoder, Header, Trailer, is_magic};

use crate::client::{Client, ClientError, error_answer, open_stream};
use crate::watch::STREAM_TIMEOUT;

/// How long the stream may stay silent before it counts as cut: the node
/// sends a chunk as soon as it has one, so only a stuck node or network is
/// this slow.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// An open snapshot stream.
pub struct SnapshotStream {
    /// The node sending it.
    pub endpoint: String,
    /// The store revision the snapshot was taken at.
    pub revision: u64,
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
}

impl SnapshotStream {
    /// The next chunk; `None` at the end of the stream.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        let interrupted = |detail: String| ClientError::Interrupted {
            endpoint: self.endpoint.clone(),
            detail,
        };
        match tokio::time::timeout(IDLE_TIMEOUT, self.body.next()).await {
            Err(_) => Err(interrupted(format!(
                "the snapshot stream sent nothing for {IDLE_TIMEOUT:?}"
            ))),
            Ok(None) => Ok(None),
            Ok(Some(Ok(b))) => Ok(Some(b)),
            Ok(Some(Err(e))) => Err(interrupted(format!("the snapshot stream was cut: {e}"))),
        }
    }
}

impl Client {
    /// Opens a snapshot stream from the first endpoint that serves one.
    /// `serializable`: the node's own state without a quorum check (the
    /// default waits until it has applied everything acknowledged before
    /// the request).
    pub async fn snapshot(&self, serializable: bool) -> Result<SnapshotStream, ClientError> {
        let query: Vec<(&str, String)> = if serializable {
            vec![("consistency", "serializable".into())]
        } else {
            vec![]
        };
        let mut token = self.token(None).await?;
        let mut reauthenticated = false;
        let mut last = ClientError::NoEndpoints;
        for endpoint in self.endpoints() {
            loop {
                let req = self
                    .request(
                        endpoint,
                        Method::GET,
                        "/v1/snapshot",
                        &query,
                        token.header(),
                    )
                    .timeout(STREAM_TIMEOUT);
                match tokio::time::timeout(IDLE_TIMEOUT, open_stream(endpoint, req)).await {
                    Ok(Ok(resp)) => {
                        let revision = resp
                            .headers()
                            .get(kvapi::snapshot::REVISION_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        return Ok(SnapshotStream {
                            endpoint: endpoint.clone(),
                            revision,
                            body: Box::pin(resp.bytes_stream()),
                        });
                    }
                    // A token that expired meanwhile: once, then on.
                    Ok(Err(e))
                        if e.code() == Some(kvapi::ErrorCode::Unauthenticated)
                            && self.has_credentials()
                            && !reauthenticated =>
                    {
                        reauthenticated = true;
                        token = self.token(Some(&token)).await?;
                    }
                    Ok(Err(e)) if e.retryable() => {
                        last = e;
                        break;
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        last = ClientError::Interrupted {
                            endpoint: endpoint.clone(),
                            detail: format!("no answer in {IDLE_TIMEOUT:?}"),
                        };
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// `POST /v1/cluster/restore` on the first endpoint only (never another:
    /// it is that node that becomes the new cluster): makes a node that was
    /// never initialized the only voter of a new cluster holding `snapshot`,
    /// a snapshot as `GET /v1/snapshot` streams it. `snapshot` may be a
    /// stream (`reqwest::Body::wrap_stream`, e.g. an object store download):
    /// it is sent as it comes and not kept, so the call is never retried,
    /// not even after a 401 (authenticate first, with `authenticate`). The
    /// node answers once it has the whole snapshot, checked, on disk, then
    /// exits; its supervisor restarts it, and it serves the restored data
    /// after that (see docs/api.md). A file: pass the `tokio::fs::File`.
    pub async fn restore(
        &self,
        snapshot: impl Into<reqwest::Body>,
    ) -> Result<kvapi::RestoreResponse, ClientError> {
        let token = self.token(None).await?;
        let endpoint = self
            .endpoints()
            .first()
            .cloned()
            .ok_or(ClientError::NoEndpoints)?;
        let transport = |source| ClientError::Transport {
            endpoint: endpoint.clone(),
            source,
        };
        let resp = self
            .request(
                &endpoint,
                Method::POST,
                "/v1/cluster/restore",
                &[],
                token.header(),
            )
            .timeout(STREAM_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, kvapi::snapshot::CONTENT_TYPE)
            .body(snapshot.into())
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(error_answer(&endpoint, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            endpoint: endpoint.clone(),
            status: status.as_u16(),
            body: format!("undecodable JSON: {e}"),
        })
    }
}
