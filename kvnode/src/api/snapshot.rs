//! `GET /v1/snapshot`: the whole store as one snapshot stream (root only
//! when auth is on; see `authz::rule`). A blocking task dumps a RocksDB
//! snapshot into a bounded channel that the response body drains, so the
//! node holds a few chunks whatever the store's size, and a client that
//! goes away stops the dump.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::App;
use super::error::ApiError;
use crate::node::{NodeError, Reject};
use crate::store::backup;

/// Size of the chunks sent, and how many may wait in the channel: 2 MiB
/// per stream at most.
const CHUNK: usize = 256 << 10;
const CHUNKS_QUEUED: usize = 8;

type Chunk = Result<Bytes, std::io::Error>;

pub async fn snapshot(State(app): State<App>, req: axum::extract::Request) -> Response {
    match serve(app, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn serve(app: App, req: axum::extract::Request) -> Result<Response, ApiError> {
    let q = super::query_map(req.uri())?;
    let ready = match q.get("consistency").map(String::as_str) {
        // The state a linearizable read would see at least: everything
        // acknowledged before the request is in the snapshot.
        None | Some("linearizable") => app.node.read_barrier().await,
        Some("serializable") => app.node.check_initialized(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "consistency={other:?}: expected linearizable or serializable"
            )));
        }
    };
    match ready {
        Ok(()) => {}
        Err(Reject::Failed(e)) => return Err(e.into()),
        // Not forwarded: the leader's answer would be buffered by the
        // forwarding path, and this node's own state is the one asked for.
        Err(Reject::Forward(leader)) => {
            return Err(NodeError::Unavailable {
                message: "this node could not confirm it is up to date; retry, or ask the \
                          leader (or use consistency=serializable)"
                    .into(),
                leader,
            }
            .into());
        }
    }
    let Ok(permit) = app.snapshots.clone().try_acquire_owned() else {
        return Err(ApiError::unavailable(
            "another snapshot is being streamed from this node; retry when it is done",
        ));
    };
    let (tx, rx) = mpsc::channel::<Chunk>(CHUNKS_QUEUED);
    let (rev_tx, rev_rx) = oneshot::channel();
    let db = app.node.db.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let start = std::time::Instant::now();
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        match backup::stream(
            &db,
            |rev| {
                let _ = rev_tx.send(rev);
            },
            out,
        ) {
            Ok(t) => tracing::info!(
                keys = t.records,
                bytes = t.bytes,
                elapsed_ms = start.elapsed().as_millis() as u64,
                "snapshot streamed"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "snapshot stream ended early");
                // Ends the body with an error: the client sees a cut
                // stream, which its decoder refuses.
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    // No revision: the dump failed before its first byte.
    let revision = rev_rx
        .await
        .map_err(|_| ApiError::unavailable("the snapshot could not be started; retry shortly"))?;
    let chunks =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let body = Body::from_stream(chunks);
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kvapi::snapshot::CONTENT_TYPE),
    );
    h.insert(
        kvapi::snapshot::REVISION_HEADER,
        HeaderValue::from(revision),
    );
    Ok(resp)
}

/// A `Write` that sends what it is given down the channel in `CHUNK`s.
struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
