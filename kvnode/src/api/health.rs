//! Liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{App, json_response};

/// `GET /version`: what `kvctl version` shows next to its own.
pub async fn version() -> Response {
    json_response(&kvapi::VersionResponse {
        version: crate::VERSION.to_owned(),
        api: "v1".to_owned(),
    })
}

/// Live unless raft has stopped on a storage error (a full disk): then
/// only a restart helps, which is what a failing liveness probe gets.
pub async fn healthz(State(app): State<App>) -> Response {
    match app.node.stopped() {
        None => json_response(&serde_json::json!({ "status": "ok" })),
        Some(why) => ApiError::unavailable(why).into_response(),
    }
}

pub async fn readyz(State(app): State<App>) -> Response {
    match app.node.readiness() {
        Ok(()) => json_response(&serde_json::json!({ "status": "ready" })),
        Err(reason) => ApiError::unavailable(reason).into_response(),
    }
}

pub async fn metrics(State(app): State<App>) -> Response {
    let body = app.metrics.render(&app.node);
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
