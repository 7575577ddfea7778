//! `/v1/leases`: grant, keep alive, inspect, list and revoke leases (see
//! `crate::lease`). Grants and revokes are raft commands and run from any
//! node; keep-alives and the time left are the leader's business (its
//! clock decides expiry), so a follower forwards them.

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kvapi::{ErrorCode, LeaseGrant, LeaseGrantRequest, LeaseInfo, LeaseList, LeaseRevoked};
use tokio::time::Instant;

use super::authz::Need;
use super::cluster::parse;
use super::error::{ApiError, Outcome, Rejection};
use super::kv::{run, write};
use super::{App, json_response, parse_bool, query_map, read_body};
use crate::auth::Access;
use crate::lease::{LeaseOp, MAX_ID, MAX_TTL_SECS, min_ttl_secs};
use crate::raft::types::{Command, Op, OpResult};

const BODY_LIMIT: usize = 4096;

/// The `{id}` path segment.
fn lease_id(parts: &Parts) -> Result<u64, ApiError> {
    let seg = parts
        .uri
        .path()
        .strip_prefix("/v1/leases/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    match seg.parse::<u64>() {
        Ok(id) if (1..=MAX_ID).contains(&id) => Ok(id),
        _ => Err(ApiError::bad_request(format!(
            "lease id {seg:?}: expected a number from 1 to {MAX_ID}"
        ))),
    }
}

fn not_found(id: u64) -> ApiError {
    ApiError::not_found(format!("lease {id} not found (expired or revoked)"))
}

/// Only the leader knows when leases run out.
fn leader_only(app: &App) -> Outcome<()> {
    if app.node.leading_term().is_some() {
        Ok(())
    } else {
        Err(Rejection::Forward(app.node.leader()))
    }
}

pub async fn grant(State(app): State<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match read_body(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    run(&app, &parts, body.clone(), async {
        let r: LeaseGrantRequest = parse(&body, "lease grant")?;
        if !(1..=MAX_TTL_SECS).contains(&r.ttl) {
            return Err(ApiError::bad_request(format!(
                "ttl {}: expected 1 to {MAX_TTL_SECS} seconds",
                r.ttl
            ))
            .into());
        }
        let id = match r.id {
            Some(id) if (1..=MAX_ID).contains(&id) => id,
            Some(id) => {
                return Err(ApiError::bad_request(format!(
                    "id {id}: expected 1 to {MAX_ID} (0 or absent: generated)"
                ))
                .into());
            }
            None => rand::random_range(1..=MAX_ID),
        };
        let ttl = r.ttl.max(min_ttl_secs(app.node.config.election_timeout_ms));
        let cmd = Command {
            success: vec![Op::Lease(LeaseOp::Grant { id, ttl })],
            ..Command::default()
        };
        // Any authenticated user may hold leases (as etcd).
        let res = write(&app, &parts, &[], cmd).await?;
        match res.results.first() {
            Some(OpResult::LeaseGrant { granted: true }) => {
                // From now, not from when the leader's loop first sees it.
                let node = &app.node;
                node.lease_clock
                    .keep_alive(id, ttl, node.leading_term(), Instant::now());
                Ok(json_response(&LeaseGrant { id, ttl }))
            }
            Some(OpResult::LeaseGrant { granted: false }) => Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("lease {id} exists already"),
            )
            .into()),
            other => Err(ApiError::internal(format!("unexpected grant result {other:?}")).into()),
        }
    })
    .await
}

pub async fn keep_alive(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    run(&app, &parts, Bytes::new(), async {
        let id = lease_id(&parts)?;
        leader_only(&app)?;
        let ttl = app
            .node
            .db
            .leases()
            .get(id)
            .map(|l| l.ttl)
            .ok_or_else(|| not_found(id))?;
        let node = &app.node;
        if !node
            .lease_clock
            .keep_alive(id, ttl, node.leading_term(), Instant::now())
        {
            return Err(Rejection::Forward(app.node.leader()));
        }
        Ok(json_response(&LeaseGrant { id, ttl }))
    })
    .await
}

pub async fn time_to_live(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    run(&app, &parts, Bytes::new(), async {
        let id = lease_id(&parts)?;
        let q = query_map(&parts.uri)?;
        let with_keys = parse_bool(&q, "keys")?;
        leader_only(&app)?;
        // The table as of now: after every grant acknowledged before.
        app.node.read_barrier().await?;
        let info = {
            let table = app.node.db.leases();
            let l = table.get(id).ok_or_else(|| not_found(id))?;
            let remaining = app
                .node
                .lease_clock
                .remaining(id, Instant::now())
                .map_or(l.ttl as f64, |d| d.as_secs_f64());
            LeaseInfo {
                id,
                ttl: l.ttl,
                remaining,
                keys: with_keys.then(|| l.keys.iter().cloned().collect()),
            }
        };
        if let Some(keys) = &info.keys {
            let needs: Vec<Need> = keys.iter().map(|k| Need::key(Access::Read, k)).collect();
            super::authz::allow(&parts, &app.node.db.auth(), &needs)?;
        }
        Ok(json_response(&info))
    })
    .await
}

pub async fn list(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    run(&app, &parts, Bytes::new(), async {
        app.node.read_barrier().await?;
        let leases = app
            .node
            .db
            .leases()
            .iter()
            .map(|(id, l)| LeaseGrant { id, ttl: l.ttl })
            .collect();
        Ok(json_response(&LeaseList { leases }))
    })
    .await
}

pub async fn revoke(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    run(&app, &parts, Bytes::new(), async {
        let id = lease_id(&parts)?;
        // Revoking deletes the lease's keys: the caller needs write on
        // every one of them (as etcd), as the table stands here.
        let needs: Vec<Need> = match app.node.db.leases().get(id) {
            Some(l) => l.keys.iter().map(|k| Need::key(Access::Write, k)).collect(),
            None => Vec::new(),
        };
        let cmd = Command {
            success: vec![Op::Lease(LeaseOp::Revoke { id })],
            ..Command::default()
        };
        let res = write(&app, &parts, &needs, cmd).await?;
        match res.results.first() {
            Some(OpResult::LeaseRevoke {
                found: true,
                deleted,
            }) => Ok(json_response(&LeaseRevoked {
                revision: res.revision,
                deleted: *deleted,
            })),
            Some(OpResult::LeaseRevoke { found: false, .. }) => Err(not_found(id).into()),
            other => Err(ApiError::internal(format!("unexpected revoke result {other:?}")).into()),
        }
    })
    .await
}
