//! `POST /v1/cluster/restore`: a node that was never initialized receives a
//! snapshot (as `GET /v1/snapshot` streams it) and becomes the only voter
//! of a new cluster holding it. The body streams through a bounded channel
//! to a blocking task that checks it with the snapshot decoder and writes
//! it to `offline::RESTORE_UPLOAD` as it arrives, so memory stays flat
//! whatever its size. Once whole and checked, the file is fsynced and
//! renamed to `offline::RESTORE_PENDING`, the node answers 202 and exits;
//! restarted (by its supervisor), it seeds its data dir from the file
//! before it serves (`offline::pending_restore`). It cannot seed while it
//! runs: RocksDB is open and raft holds the state the seed replaces.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use kvapi::RestoreResponse;
use kvapi::snapshot::Decoder;
use tokio::sync::mpsc;

use super::App;
use super::authz::denied;
use super::error::ApiError;
use crate::listener::ClientCertName;
use crate::offline::{self, RESTORE_PENDING, RESTORE_UPLOAD};

/// How long the body may stay silent before the upload counts as cut.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Chunks waiting for the writer: with hyper's chunks of at most a few
/// hundred KiB, a few MiB per upload at most.
const CHUNKS_QUEUED: usize = 8;

pub async fn restore(State(app): State<App>, req: Request) -> Response {
    match receive(app, req).await {
        Ok(r) => (StatusCode::ACCEPTED, Json(r)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// What the writer found in a whole, checked snapshot.
struct Received {
    revision: u64,
    keys: u64,
    bytes: u64,
}

async fn receive(app: App, req: Request) -> Result<RestoreResponse, ApiError> {
    let node = app.node.clone();
    // A restore chooses the new cluster's data and its users, and a node
    // that was never initialized has no users to check a token against.
    // Where the client port verifies certificates, only a certificate
    // naming root may choose (the operator's does); elsewhere the client
    // port must be guarded as for `init` (network policy, loopback).
    if node.config.trusted_ca_file.is_some() {
        let cn = req
            .extensions()
            .get::<ClientCertName>()
            .and_then(|c| c.0.as_deref());
        if cn != Some(kvapi::ROOT) {
            drain(&mut req.into_body().into_data_stream()).await;
            return Err(denied(
                "a restore needs a client certificate naming root on a node that verifies \
                 client certificates (--trusted-ca-file)",
            ));
        }
    }
    let guard = match node.begin_restore() {
        Ok(g) => g,
        Err(e) => {
            // Read (and drop) the body first, or a client still sending it
            // sees a reset connection instead of this answer.
            drain(&mut req.into_body().into_data_stream()).await;
            return Err(e.into());
        }
    };
    let dir = node.config.data_dir.clone();
    let part = dir.join(RESTORE_UPLOAD);
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<Msg>(CHUNKS_QUEUED);
    let writer = {
        let part = part.clone();
        tokio::task::spawn_blocking(move || write_checked(&part, rx))
    };
    let mut body = req.into_body().into_data_stream();
    // Why the body ended early, if it did.
    let mut cut = None;
    loop {
        let msg = match tokio::time::timeout(IDLE_TIMEOUT, body.next()).await {
            Err(_) => {
                cut = Some(format!(
                    "the request body sent nothing for {IDLE_TIMEOUT:?}"
                ));
                break;
            }
            Ok(Some(Err(e))) => {
                cut = Some(format!("the request body was cut ({e})"));
                break;
            }
            Ok(None) => Msg::End,
            Ok(Some(Ok(chunk))) => Msg::Chunk(chunk),
        };
        let end = matches!(msg, Msg::End);
        // A send fails when the writer gave up (not a snapshot): its
        // error says why, once the rest of the body is read and dropped.
        // An answer sent while the client still sends is lost to most
        // clients (they see the connection reset, not the 400).
        let refused = tx.send(msg).await.is_err();
        if refused && !end {
            drain(&mut body).await;
        }
        if refused || end {
            break;
        }
    }
    drop(tx);
    let written = match writer.await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(WriteError::Unfinished(bytes))) => Err(ApiError::bad_request(format!(
            "snapshot is truncated: {} after {bytes} bytes",
            cut.as_deref().unwrap_or("the request body ended")
        ))),
        Ok(Err(e)) => Err(e.into_api()),
        Err(e) => Err(ApiError::internal(format!("restore writer: {e}"))),
    };
    let received = match written {
        Ok(r) => r,
        Err(e) => {
            remove_quietly(&part);
            tracing::warn!(error = %e.message, "restore refused");
            return Err(e);
        }
    };
    // A leader may have added this node as a learner meanwhile.
    if let Some(e) = node.restore_refusal() {
        remove_quietly(&part);
        return Err(e.into());
    }
    let pending = dir.join(RESTORE_PENDING);
    let renamed = std::fs::rename(&part, &pending).and_then(|()| offline::sync_dir(&dir));
    if let Err(e) = renamed {
        remove_quietly(&part);
        return Err(ApiError::internal(format!(
            "moving the snapshot to {}: {e}",
            pending.display()
        )));
    }
    tracing::warn!(
        node_id = node.id(),
        keys = received.keys,
        revision = received.revision,
        bytes = received.bytes,
        elapsed_ms = start.elapsed().as_millis() as u64,
        "restore received: exiting; the node seeds its data dir from it at the next start"
    );
    node.finish_restore(guard);
    Ok(RestoreResponse {
        node_id: node.id(),
        revision: received.revision,
        keys: received.keys,
        bytes: received.bytes,
        restarting: true,
        message: format!(
            "received {} keys at revision {} ({} bytes); node {} exits now and, restarted, is \
             the only voter of a new cluster holding them",
            received.keys,
            received.revision,
            received.bytes,
            node.id()
        ),
    })
}

/// What the body sends the writer.
enum Msg {
    Chunk(Bytes),
    /// The body ended here; without it the channel closing means it was cut.
    End,
}

/// Why the writer stopped.
enum WriteError {
    /// The bytes are not a snapshot, or not a whole one.
    Snapshot(kvapi::snapshot::DecodeError),
    /// The body was cut (or stalled) after this many bytes.
    Unfinished(u64),
    Io(PathBuf, std::io::Error),
}

impl WriteError {
    fn into_api(self) -> ApiError {
        match self {
            WriteError::Snapshot(e) => ApiError::bad_request(e.to_string()),
            WriteError::Unfinished(bytes) => ApiError::bad_request(format!(
                "snapshot is truncated: the request body ended after {bytes} bytes"
            )),
            WriteError::Io(path, e) => {
                ApiError::internal(format!("writing {}: {e}", path.display()))
            }
        }
    }
}

/// Feeds every chunk to the decoder and writes it to `part`; at the end
/// of the body, checks the snapshot is whole and makes the file durable.
fn write_checked(part: &Path, mut rx: mpsc::Receiver<Msg>) -> Result<Received, WriteError> {
    let io = |e| WriteError::Io(part.to_path_buf(), e);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(part).map_err(io)?);
    let mut dec = Decoder::new();
    loop {
        match rx.blocking_recv() {
            None => return Err(WriteError::Unfinished(dec.bytes())),
            Some(Msg::Chunk(chunk)) => {
                dec.feed(&chunk, |_, _, _| {})
                    .map_err(WriteError::Snapshot)?;
                out.write_all(&chunk).map_err(io)?;
            }
            Some(Msg::End) => break,
        }
    }
    let (header, trailer) = dec.finish().map_err(WriteError::Snapshot)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(Received {
        // A version-1 snapshot carries none (see `store::snapshot`).
        revision: header.store_revision.unwrap_or(0),
        keys: trailer.records,
        bytes: trailer.bytes,
    })
}

/// Reads what is left of a refused body, keeping nothing, until it ends,
/// breaks or stalls for `IDLE_TIMEOUT`.
async fn drain<S>(body: &mut S)
where
    S: futures::Stream + Unpin,
{
    while let Ok(Some(_)) = tokio::time::timeout(IDLE_TIMEOUT, body.next()).await {}
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "removing a refused upload");
    }
}
