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

pub use kvapi::snapshot::{DecodeError, Decoder, Header, Trailer};

use crate::client::{Client, ClientError, open_stream};
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
}
