//! `GET /v1/watch`: opens a watch (see `crate::watch`) and streams it as
//! NDJSON. Everything that can be refused is refused here, before the
//! stream starts, with the usual JSON error; afterwards the stream itself
//! says why it ends (`canceled`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kvapi::ErrorCode;

use super::authz::{self, Caller, Need};
use super::error::{ApiError, Rejection};
use super::kv::MAX_KEY_BYTES;
use super::{App, parse_bool, parse_u64, query_map};
use crate::auth::{Access, KeySpan};
use crate::store::EventKind;
use crate::watch::{self, Filter, Spec};

const DEFAULT_PROGRESS: Duration = Duration::from_secs(5);
/// Chunks buffered between a watch task and its connection.
const STREAM_BUFFER: usize = 4;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// The keys and events asked for; `what` names them in errors.
fn filter(q: &HashMap<String, String>) -> Result<(Filter, String), ApiError> {
    let long = |k: &str| k.len() > MAX_KEY_BYTES;
    let (span, what) = match (q.get("key"), q.get("prefix"), q.get("start"), q.get("end")) {
        (Some(k), None, None, None) if !k.is_empty() && !long(k) => {
            (KeySpan::key(k), format!("key {k:?}"))
        }
        (None, Some(p), None, None) if !long(p) => {
            (KeySpan::prefix(p), format!("keys with prefix {p:?}"))
        }
        (None, None, Some(a), Some(b)) if a < b && !long(a) && !long(b) => {
            (KeySpan::range(a, b), format!("keys from {a:?} to {b:?}"))
        }
        _ => {
            return Err(bad(format!(
                "a watch takes exactly one of key=K (not empty), prefix=P (\"\" = every key) \
                 or start=A&end=B with A < B; keys up to {MAX_KEY_BYTES} bytes"
            )));
        }
    };
    let only = match q.get("filter").map(String::as_str) {
        None => None,
        Some("put") => Some(EventKind::Put),
        Some("delete") => Some(EventKind::Delete),
        Some(other) => {
            return Err(bad(format!(
                "filter={other:?}: expected put (only puts) or delete (only deletes)"
            )));
        }
    };
    let prev_value = parse_bool(q, "prev_value")?;
    Ok((
        Filter {
            span,
            only,
            prev_value,
        },
        what,
    ))
}

fn progress_interval(q: &HashMap<String, String>) -> Result<Duration, ApiError> {
    match parse_u64(q, "progress_interval_ms")? {
        None => Ok(DEFAULT_PROGRESS),
        Some(ms) if (100..=600_000).contains(&ms) => Ok(Duration::from_millis(ms)),
        Some(ms) => Err(bad(format!(
            "progress_interval_ms={ms}: expected 100 to 600000"
        ))),
    }
}

/// A watch is served where it was asked for, never relayed: a node that
/// would forward says so instead.
fn here(r: impl Into<Rejection>) -> ApiError {
    match r.into() {
        Rejection::Error(e) => e,
        Rejection::Forward(leader) => ApiError::unavailable(
            "this node cannot confirm the current revision now (no leader reachable); \
             retry, or give start_revision",
        )
        .with_leader(leader),
    }
}

async fn open(app: &App, req: Request) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    let q = query_map(&parts.uri)?;
    let (filter, what) = filter(&q)?;
    let progress = progress_interval(&q)?;
    let from = parse_u64(&q, "start_revision")?.filter(|r| *r > 0);
    let node = &app.node;
    node.check_initialized().map_err(here)?;
    let start = match from {
        Some(r) => r,
        // "Now" is a linearizable point: after every write acknowledged
        // anywhere before the watch was asked for.
        None => {
            node.read_barrier().await.map_err(here)?;
            node.db.revision() + 1
        }
    };
    authz::allow(
        &parts,
        &node.db.auth(),
        &[Need {
            access: Access::Read,
            span: filter.span.clone(),
            what,
        }],
    )?;
    let oldest = node.db.history_floor();
    if start < oldest {
        let mut e = ApiError::new(
            ErrorCode::Compacted,
            format!(
                "revision {start} is compacted; this node's history starts at {oldest} \
                 (read the keys, then watch from the revision of that read + 1)"
            ),
        );
        e.oldest_revision = Some(oldest);
        return Err(e);
    }
    let Ok(permit) = app.watchers.clone().try_acquire_owned() else {
        return Err(ApiError::unavailable(format!(
            "more than {} watches open on this node (--max-watchers); retry elsewhere",
            node.config.max_watchers
        )));
    };
    let user = match authz::caller(&parts) {
        Caller::User { name, .. } => Some(name.clone()),
        _ => None,
    };
    let spec = Spec {
        filter,
        start,
        progress_interval: progress,
        user,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    let metrics = app.metrics.clone();
    let node = node.clone();
    tokio::spawn(async move {
        metrics.watchers.inc();
        watch::run(node, spec, tx).await;
        metrics.watchers.dec();
        drop(permit);
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

pub async fn watch(State(app): State<App>, req: Request) -> Response {
    match open(&app, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> HashMap<String, String> {
        super::super::serde_urlencoded_map(s).expect("query")
    }

    #[test]
    fn exactly_one_key_form_and_known_filters() {
        assert!(filter(&q("key=a")).is_ok());
        assert!(filter(&q("prefix=")).is_ok());
        assert!(filter(&q("start=a&end=b")).is_ok());
        for bad in [
            "",
            "key=",
            "key=a&prefix=b",
            "start=b&end=a",
            "start=a",
            "key=a&filter=x",
        ] {
            assert!(filter(&q(bad)).is_err(), "{bad:?} accepted");
        }
        let (f, _) = filter(&q("prefix=p&filter=delete&prev_value=true")).expect("ok");
        assert_eq!(f.only, Some(EventKind::Delete));
        assert!(f.prev_value);
        assert!(progress_interval(&q("progress_interval_ms=50")).is_err());
        assert_eq!(
            progress_interval(&q("progress_interval_ms=250")).expect("ok"),
            Duration::from_millis(250)
        );
    }
}
