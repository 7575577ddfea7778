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

pub async fn healthz() -> Response {
    json_response(&serde_json::json!({ "status": "ok" }))
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
