//! The server side of raft RPC on the peer port. Each request is checked
//! against this node's identity (target id, cluster id) before raft sees it.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;

use crate::node::Node;
use crate::raft::network::{
    HDR_CLUSTER, HDR_FROM, HDR_TARGET, PATH_APPEND, PATH_PRE_VOTE, PATH_PROPOSE_BATCH,
    PATH_READ_INDEX, PATH_SNAPSHOT, PATH_TRANSFER, PATH_VOTE, SnapshotHeader,
};
use crate::raft::types::Command;
use crate::store::SnapshotFile;

/// Append batches are bounded by max_payload_entries x the value limit.
const PEER_BODY_LIMIT: usize = 512 << 20;

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_PRE_VOTE, post(pre_vote))
        .route(PATH_TRANSFER, post(transfer))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_READ_INDEX, post(read_index))
        .route(PATH_PROPOSE_BATCH, post(propose_batch))
        .layer(DefaultBodyLimit::max(PEER_BODY_LIMIT))
        // Outermost: runs before any handler reads a byte of the body.
        .layer(axum::middleware::from_fn_with_state(node.clone(), gate))
        .with_state(node)
}

/// Admits a peer RPC on its headers alone: addressed to this node, of this
/// cluster, from a member. Anything else is answered before the body (up
/// to 512 MiB for an append) is read or decoded.
async fn gate(
    State(node): State<Arc<Node>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Err(r) = admit(&node, req.headers()) {
        return r;
    }
    let from = req
        .headers()
        .get(HDR_FROM)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if !node.may_send_raft_rpcs(from) {
        tracing::warn!(from = ?from, path = %req.uri().path(), "refused peer rpc from a non-member");
        return reject(
            StatusCode::FORBIDDEN,
            "rpc from a node that is not a member",
        );
    }
    next.run(req).await
}

fn reject(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, msg.into()).into_response()
}

fn admit(node: &Node, headers: &HeaderMap) -> Result<(), Response> {
    let target = headers
        .get(HDR_TARGET)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let cluster = headers.get(HDR_CLUSTER).and_then(|v| v.to_str().ok());
    node.identity.admit(target, cluster).map_err(|e| {
        tracing::warn!(error = %e, "refused peer rpc");
        reject(StatusCode::CONFLICT, e.to_string())
    })
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    rmp_serde::from_slice(body)
        .map_err(|e| reject(StatusCode::BAD_REQUEST, format!("undecodable rpc: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Response {
    match rmp_serde::to_vec_named(v) {
        Ok(b) => (StatusCode::OK, b).into_response(),
        Err(e) => reject(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Raft-level failures (the node is shutting down or hit a storage error)
/// are 503 so the caller backs off.
fn raft_failed(e: impl std::fmt::Display) -> Response {
    reject(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

macro_rules! rpc_handler {
    ($name:ident, $method:ident) => {
        async fn $name(State(node): State<Arc<Node>>, body: Bytes) -> Response {
            let req = match decode(&body) {
                Ok(r) => r,
                Err(r) => return r,
            };
            match node.raft.$method(req).await {
                Ok(resp) => encode(&resp),
                Err(e) => raft_failed(e),
            }
        }
    };
}

rpc_handler!(append, append_entries);
rpc_handler!(vote, vote);
rpc_handler!(pre_vote, pre_vote);
rpc_handler!(transfer, handle_transfer_leader);

/// A follower's request for a read index: answered only by the leader,
/// after it has confirmed its leadership with a quorum.
async fn read_index(State(node): State<Arc<Node>>) -> Response {
    match node.leader_read_index().await {
        Ok(index) => encode(&index),
        Err(e) => raft_failed(e),
    }
}

/// A follower's batch of client writes it has already authorized (the peer
/// gate admits members only; with TLS they are authenticated by their
/// certificates). Proposed here only if this node leads, all at once, so
/// they can share a log append; one reply per command, in order.
async fn propose_batch(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    let cmds: Vec<Command> = match decode(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let replies =
        futures::future::join_all(cmds.into_iter().map(|c| node.propose_as_leader(c))).await;
    encode(&replies)
}

/// Receives a streamed snapshot: spools it to a file in the data dir, then
/// hands it to raft, which installs it through the state machine.
async fn snapshot(State(node): State<Arc<Node>>, body: Body) -> Response {
    let path = node
        .config
        .data_dir
        .join("snapshots")
        .join(format!("incoming-{:016x}.tmp", rand::random::<u64>()));
    let result = receive_snapshot(&path, body).await;
    let (header, file) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            return reject(StatusCode::BAD_REQUEST, format!("snapshot transfer: {e}"));
        }
    };
    let snapshot = openraft::storage::Snapshot {
        meta: header.meta,
        snapshot: file,
    };
    let resp = node.raft.install_full_snapshot(header.vote, snapshot).await;
    // Installed snapshots are renamed into place; anything left is stale.
    let _ = tokio::fs::remove_file(&path).await;
    match resp {
        Ok(r) => encode(&r),
        Err(e) => raft_failed(e),
    }
}

async fn receive_snapshot(
    path: &std::path::Path,
    body: Body,
) -> Result<(SnapshotHeader, SnapshotFile), String> {
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| e.to_string())?;
    let mut header: Option<SnapshotHeader> = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if header.is_some() {
            file.write_all(&chunk).await.map_err(|e| e.to_string())?;
            continue;
        }
        buf.extend_from_slice(&chunk);
        if buf.len() < 4 {
            continue;
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > 16 << 20 {
            return Err("snapshot header too large".into());
        }
        if buf.len() < 4 + len {
            continue;
        }
        header = Some(rmp_serde::from_slice(&buf[4..4 + len]).map_err(|e| e.to_string())?);
        file.write_all(&buf[4 + len..])
            .await
            .map_err(|e| e.to_string())?;
        buf = Vec::new();
    }
    let header = header.ok_or("snapshot stream ended before its header")?;
    file.sync_all().await.map_err(|e| e.to_string())?;
    drop(file);
    let file = SnapshotFile::open(path.to_path_buf()).map_err(|e| e.to_string())?;
    Ok((header, file))
}
