//! Follower forwarding: a request only the leader can serve is replayed
//! against the leader's client URL and its answer relayed unchanged, so
//! clients can talk to any node or to a Service in front of all of them.
//! The replay carries the caller's credentials (`authz::forward_token`).

use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kvapi::{ErrorCode, Member};

use super::App;
use super::error::{ApiError, Rejection};

/// Marks a forwarded request; a node never forwards one again, which
/// rules out loops while leadership moves.
pub const FORWARDED: &str = "x-raftkv-forwarded-by";

/// Turns a `Rejection` into a response, forwarding to the leader if needed.
pub async fn resolve(app: &App, reject: Rejection, parts: &Parts, body: Bytes) -> Response {
    match reject {
        Rejection::Error(e) => e.into_response(),
        Rejection::Forward(leader) => forward(app, leader, parts, body).await,
    }
}

async fn forward(app: &App, leader: Option<Member>, parts: &Parts, body: Bytes) -> Response {
    let me = app.node.id();
    let Some(leader) = leader.filter(|l| l.id != me) else {
        return ApiError::new(ErrorCode::NoLeader, "no leader known; retry shortly")
            .into_response();
    };
    if parts.headers.contains_key(FORWARDED) {
        return ApiError::new(
            ErrorCode::NoLeader,
            "forwarded request reached a node that is not the leader; retry",
        )
        .with_leader(Some(leader))
        .into_response();
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{}", leader.info.client_url.trim_end_matches('/'), path);
    let mut req = app
        .http
        .request(parts.method.clone(), url)
        .header(FORWARDED, me.to_string())
        .body(body);
    if let Some(ct) = parts.headers.get(axum::http::header::CONTENT_TYPE) {
        req = req.header(axum::http::header::CONTENT_TYPE, ct.clone());
    }
    // The leader judges the caller, not this node.
    if let Some(token) = super::authz::forward_token(parts, &app.node.db.auth()) {
        req = req.bearer_auth(token);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        // No connection to the leader: nothing reached it, so the answer
        // is a definite "not applied" (`no_leader`, retry), not the
        // "may or may not have been applied" of `unavailable` below.
        Err(e) if e.is_connect() => {
            return ApiError::new(
                ErrorCode::NoLeader,
                format!(
                    "leader {} cannot be reached ({e}); nothing was sent; retry shortly",
                    leader.id
                ),
            )
            .with_leader(Some(leader))
            .into_response();
        }
        Err(e) => {
            return ApiError::unavailable(format!(
                "forwarding to leader {} failed: {e}",
                leader.id
            ))
            .with_leader(Some(leader))
            .into_response();
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = axum::http::HeaderMap::new();
    for name in ["content-type", "x-raftkv-revision"] {
        if let Some(v) = resp.headers().get(name)
            && let Ok(v) = HeaderValue::from_bytes(v.as_bytes())
        {
            headers.insert(name, v);
        }
    }
    match resp.bytes().await {
        Ok(b) => (status, headers, b).into_response(),
        Err(e) => ApiError::unavailable(format!("reading leader {} response: {e}", leader.id))
            .into_response(),
    }
}
