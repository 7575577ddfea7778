//! HTTP: the client router (kv, txn, cluster admin, auth, health, metrics) and the
//! peer router (raft RPC). They listen on different ports so that the peer
//! port never needs to be exposed to clients.

pub mod auth;
pub mod authz;
pub mod cluster;
pub mod error;
pub mod forward;
pub mod health;
pub mod kv;
pub mod lease;
pub mod peer;
pub mod restore;
pub mod snapshot;
pub mod ui;
pub mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::metrics::{Metrics, RequestLabels, RouteLabels, method_label};
use crate::node::Node;
use error::ApiError;

/// Shared state of the client router. One `Arc`: axum clones the state
/// for every middleware and handler of every request.
#[derive(Clone)]
pub struct App(Arc<AppState>);

impl std::ops::Deref for App {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.0
    }
}

pub struct AppState {
    pub node: Arc<Node>,
    pub metrics: Arc<Metrics>,
    /// Pooled client for forwarding requests to the leader.
    pub http: reqwest::Client,
    /// One permit per client request being served (--max-concurrent-requests).
    inflight: Arc<tokio::sync::Semaphore>,
    /// Password hashes computed at once (see `auth::hash_password`).
    kdf_slots: Arc<tokio::sync::Semaphore>,
    /// One permit per open watch (--max-watchers).
    watchers: Arc<tokio::sync::Semaphore>,
    /// Snapshot streams served at once: each holds a RocksDB snapshot
    /// (old versions kept from compaction) and a blocking thread.
    snapshots: Arc<tokio::sync::Semaphore>,
}

impl App {
    /// `forward_tls`: set when the client port runs TLS (see
    /// `server::forwarding_tls`).
    pub fn new(
        node: Arc<Node>,
        metrics: Arc<Metrics>,
        forward_tls: Option<&Arc<crate::tls::Material>>,
    ) -> Result<Self, crate::node::StartError> {
        let mut b = reqwest::Client::builder();
        if let Some(m) = forward_tls {
            b = b.use_preconfigured_tls(m.client_config()?);
        }
        let http = b
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(512)
            // Well inside the leader's idle timeout (--header-timeout-ms,
            // the same on every node), so a pooled connection is never one
            // the leader is closing.
            .pool_idle_timeout(Duration::from_millis(node.config.header_timeout_ms / 2))
            .tcp_nodelay(true)
            // Node-to-node traffic leaves from the peer address, as the raft
            // connections do: one address per node for firewalls to match.
            .local_address(node.identity.peer_bind_ip())
            .build()?;
        let inflight = Arc::new(tokio::sync::Semaphore::new(
            node.config.max_concurrent_requests,
        ));
        let node_watchers = node.config.max_watchers;
        Ok(App(Arc::new(AppState {
            node,
            metrics,
            http,
            inflight,
            kdf_slots: Arc::new(tokio::sync::Semaphore::new(2)),
            watchers: Arc::new(tokio::sync::Semaphore::new(node_watchers)),
            snapshots: Arc::new(tokio::sync::Semaphore::new(1)),
        })))
    }

    /// Largest request body a client route accepts: a value plus slack
    /// for a JSON transaction carrying several of them.
    pub fn body_limit(&self) -> usize {
        self.node.config.max_value_bytes * 4 + (1 << 20)
    }
}

pub fn client_router(app: App) -> Router {
    Router::new()
        .route("/v1/kv", get(kv::range).delete(kv::delete_range))
        .route(
            "/v1/kv/{*key}",
            get(kv::get_key).put(kv::put_key).delete(kv::delete_key),
        )
        .route("/v1/txn", post(kv::txn))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/leases", get(lease::list).post(lease::grant))
        .route(
            "/v1/leases/{id}",
            get(lease::time_to_live).delete(lease::revoke),
        )
        .route("/v1/leases/{id}/keepalive", post(lease::keep_alive))
        .route("/v1/snapshot", get(snapshot::snapshot))
        .route("/v1/cluster/status", get(cluster::status))
        .route("/v1/cluster/health", get(cluster::health))
        .route("/v1/cluster/init", post(cluster::init))
        .route(
            "/v1/cluster/force-new-cluster",
            post(cluster::force_new_cluster),
        )
        .route("/v1/cluster/restore", post(restore::restore))
        .route("/v1/cluster/learners", post(cluster::add_learner))
        .route("/v1/cluster/voters", put(cluster::set_voters))
        .route(
            "/v1/cluster/members/{id}",
            axum::routing::delete(cluster::remove_member),
        )
        .route(
            "/v1/cluster/transfer-leader",
            post(cluster::transfer_leader),
        )
        .route("/v1/auth/authenticate", post(auth::authenticate))
        .route("/v1/auth/status", get(auth::status))
        .route("/v1/auth/whoami", get(auth::whoami))
        .route("/v1/auth/enable", post(auth::enable))
        .route("/v1/auth/disable", post(auth::disable))
        .route("/v1/auth/users", get(auth::user_list).post(auth::user_add))
        .route(
            "/v1/auth/users/{name}",
            get(auth::user_get).delete(auth::user_delete),
        )
        .route("/v1/auth/users/{name}/password", put(auth::user_password))
        .route(
            "/v1/auth/users/{name}/roles/{role}",
            put(auth::user_grant_role).delete(auth::user_revoke_role),
        )
        .route("/v1/auth/roles", get(auth::role_list).post(auth::role_add))
        .route(
            "/v1/auth/roles/{name}",
            get(auth::role_get).delete(auth::role_delete),
        )
        .route(
            "/v1/auth/roles/{name}/permissions",
            post(auth::role_grant).delete(auth::role_revoke),
        )
        .route("/ui", get(ui::to_index))
        .route("/ui/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .route("/version", get(health::version))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(app.clone(), authz::identify))
        .layer(middleware::from_fn_with_state(app.clone(), admit))
        .layer(middleware::from_fn_with_state(app.clone(), record))
        .with_state(app)
}

pub fn peer_router(node: Arc<Node>) -> Router {
    peer::router(node)
}

async fn fallback(method: Method) -> ApiError {
    ApiError::not_found(format!("no route for this path and method ({method})"))
}

/// The route whose body has no size limit: a whole snapshot, streamed to
/// disk (see `restore`).
const UNLIMITED_BODY: &str = "/v1/cluster/restore";

/// Limits that apply before a handler runs: a declared body over the
/// largest any route accepts is 413 before a byte of it is read (a restore
/// excepted), and past --max-concurrent-requests a request is 503 at once
/// (probes and metrics excepted: they must answer under load).
async fn admit(State(app): State<App>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = app.body_limit();
    let unlimited = req.method() == Method::POST && req.uri().path() == UNLIMITED_BODY;
    if !unlimited && declared.is_some_and(|n| n > limit as u64) {
        return ApiError::new(
            kvapi::ErrorCode::TooLarge,
            format!("request body larger than {limit} bytes"),
        )
        .into_response();
    }
    if matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics") {
        return next.run(req).await;
    }
    let Ok(_permit) = app.inflight.clone().try_acquire_owned() else {
        return ApiError::unavailable(format!(
            "more than {} requests in flight; retry shortly",
            app.node.config.max_concurrent_requests
        ))
        .into_response();
    };
    next.run(req).await
}

/// Counts and times every request by its route template (not the raw
/// path, which would explode the label space with user keys).
async fn record(State(app): State<App>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| app.metrics.routes.intern(p.as_str()));
    let method = method_label(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    app.metrics
        .latency
        .get_or_create(&RouteLabels { route, method })
        .observe(start.elapsed().as_secs_f64());
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            code: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// How long a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a request body, refusing more than `limit` bytes with 413 and one
/// that takes longer than `BODY_TIMEOUT` with 400.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let Ok(read) = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await
    else {
        return Err(ApiError::new(
            kvapi::ErrorCode::BadRequest,
            format!("request body not received within {BODY_TIMEOUT:?}"),
        ));
    };
    match read {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::new(
            kvapi::ErrorCode::TooLarge,
            format!("request body larger than {limit} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(format!("reading request body: {e}"))),
    }
}

/// Query string as a map; a malformed one is a 400.
pub fn query_map(uri: &axum::http::Uri) -> Result<HashMap<String, String>, ApiError> {
    match uri.query() {
        None => Ok(HashMap::new()),
        Some(q) => serde_urlencoded_map(q),
    }
}

pub(crate) fn serde_urlencoded_map(q: &str) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| ApiError::bad_request("query string is not valid UTF-8"))
        };
        out.insert(dec(k)?, dec(v)?);
    }
    Ok(out)
}

pub fn parse_bool(q: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name}={other:?}: expected true or false"
        ))),
    }
}

pub fn parse_u64(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    q.get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("{name}={v:?}: expected a non-negative integer"))
            })
        })
        .transpose()
}

pub fn json_response<T: serde::Serialize>(v: &T) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}
