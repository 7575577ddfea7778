//! A typed HTTP client for one raftkv cluster. It tries each endpoint in turn
//! and retries retryable failures (transport errors, `no_leader`,
//! `unavailable`) with capped exponential backoff. With credentials it
//! authenticates on first use and sends the token as a bearer token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use kvapi::*;

/// Everything except unreserved characters is escaped in a key path segment.
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How a client reaches TLS endpoints (etcdctl's `--cacert`, `--cert`,
/// `--key`, `--insecure-skip-tls-verify`). The defaults trust no one: an
/// `https://` endpoint needs `ca` or `insecure_skip_verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA bundle (PEM) that servers are verified against.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM), presented when the server asks.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    /// Accept any server certificate. For trying things out only.
    pub insecure_skip_verify: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an API error.
    #[error("{endpoint}: {} ({}): {}", .error.code.as_str(), .status, .error.message)]
    Api {
        endpoint: String,
        status: u16,
        error: ApiError,
    },
    #[error("{endpoint}: {source}")]
    Transport {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{endpoint}: unexpected response {status}: {body}")]
    Unexpected {
        endpoint: String,
        status: u16,
        body: String,
    },
    #[error("no endpoints configured")]
    NoEndpoints,
    #[error("invalid endpoint URL {0:?}")]
    BadEndpoint(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// Authenticating as `user` with the client's credentials failed: a
    /// wrong name or password, or no server answered. Names the user, never
    /// the password.
    // `cause` is part of the message rather than a `#[source]`, so that a
    // printed error chain does not say it twice.
    #[error("authenticating as {user:?}: {}", .cause.auth_detail())]
    Authentication {
        user: String,
        cause: Box<ClientError>,
    },
    /// A watch needs revisions from `revision` on, and the node no longer
    /// keeps them (a `410 compacted` answer, or a `canceled` line with code
    /// `compacted`). `oldest_revision` is where the node's history starts,
    /// when it said (a `canceled` line does not). Read the current state
    /// and watch again from there.
    #[error("{endpoint}: revision {revision} is compacted{}", oldest_suffix(*.oldest_revision))]
    Compacted {
        endpoint: String,
        revision: u64,
        oldest_revision: Option<u64>,
    },
    /// The node ended a watch with a `canceled` line. A watch stream
    /// resumes by itself after `shutting_down` and `lagging`, so as its
    /// error this is `permission_denied`, or one of those when resuming
    /// ran out of attempts.
    #[error("{endpoint}: watch canceled ({}): {reason}", cancel_code(*.code))]
    WatchCanceled {
        endpoint: String,
        code: WatchCancel,
        reason: String,
        resume_revision: u64,
    },
    /// A watch stream broke off without a `canceled` line: the connection
    /// closed, or nothing came for longer than the watch's idle timeout, or
    /// the watch request had no answer in time. A watch stream resumes by
    /// itself after this; it is its error only when resuming ran out of
    /// attempts.
    #[error("{endpoint}: {detail}")]
    Interrupted { endpoint: String, detail: String },
}

fn oldest_suffix(oldest: Option<u64>) -> String {
    oldest
        .map(|o| format!("; the oldest available is {o}"))
        .unwrap_or_default()
}

fn cancel_code(code: WatchCancel) -> &'static str {
    match code {
        WatchCancel::ShuttingDown => "shutting_down",
        WatchCancel::Lagging => "lagging",
        WatchCancel::Compacted => "compacted",
        WatchCancel::PermissionDenied => "permission_denied",
    }
}

/// The reqwest client for `opts`, with these timeouts.
fn http_client(
    opts: &TlsOptions,
    connect: Duration,
    total: Duration,
) -> Result<reqwest::Client, ClientError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| ClientError::Tls(format!("reading {}: {e}", p.display())))
    };
    let mut b = reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(total)
        .pool_max_idle_per_host(256)
        // Below kvnode's idle timeout (--header-timeout-ms, 15 s by
        // default): a pooled connection is never one the node is closing.
        .pool_idle_timeout(Duration::from_secs(5))
        .tls_built_in_root_certs(false);
    if let Some(ca) = &opts.ca {
        let pem = read(ca)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ClientError::Tls(format!("{}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(ClientError::Tls(format!(
                "{}: no certificate",
                ca.display()
            )));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                ClientError::Tls(format!("{} / {}: {e}", cert.display(), key.display()))
            })?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => {
            return Err(ClientError::Tls(
                "a client certificate needs both the certificate and the key".into(),
            ));
        }
    }
    if opts.insecure_skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| ClientError::Tls(e.to_string()))
}

impl ClientError {
    pub fn retryable(&self) -> bool {
        match self {
            ClientError::Api { error, .. } => error.code.retryable(),
            ClientError::Transport { .. } => true,
            ClientError::Unexpected { status, .. } => *status >= 500,
            ClientError::NoEndpoints | ClientError::BadEndpoint(_) | ClientError::Tls(_) => false,
            ClientError::Authentication { cause, .. } => cause.retryable(),
            ClientError::Compacted { .. } => false,
            ClientError::WatchCanceled { code, .. } => {
                matches!(code, WatchCancel::ShuttingDown | WatchCancel::Lagging)
            }
            ClientError::Interrupted { .. } => true,
        }
    }

    /// Why authenticating failed: the server's own words when it
    /// answered ("authentication failed: invalid user name or password"),
    /// else the whole error.
    fn auth_detail(&self) -> String {
        match self {
            ClientError::Api { error, .. } => error.message.clone(),
            e => e.to_string(),
        }
    }

    /// The API error code, if the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { error, .. } => Some(error.code),
            ClientError::Authentication { cause, .. } => cause.code(),
            ClientError::Compacted { .. } => Some(ErrorCode::Compacted),
            ClientError::WatchCanceled {
                code: WatchCancel::PermissionDenied,
                ..
            } => Some(ErrorCode::PermissionDenied),
            _ => None,
        }
    }
}

/// A value read with `get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResponse {
    pub value: Bytes,
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    #[default]
    Linearizable,
    Serializable,
}

/// The keys a range delete removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// Every key starting with the prefix; `""` is every key.
    Prefix(String),
    /// Every key in `[start, end)`, as etcd's `del key range_end`.
    Between { start: String, end: String },
}

impl KeyRange {
    /// The query of `DELETE /v1/kv`. An empty prefix is still sent
    /// (`prefix=`): the server refuses a range delete without one.
    fn query(&self) -> Vec<(&'static str, String)> {
        match self {
            KeyRange::Prefix(p) => vec![("prefix", p.clone())],
            KeyRange::Between { start, end } => {
                vec![("start", start.clone()), ("end", end.clone())]
            }
        }
    }
}

/// Options of a range scan.
#[derive(Debug, Clone, Default)]
pub struct RangeOptions {
    pub prefix: Option<String>,
    pub start: Option<String>,
    pub limit: Option<usize>,
    pub keys_only: bool,
    pub consistency: Consistency,
}

/// A user name and password to authenticate with.
#[derive(Clone)]
struct Credentials {
    user: String,
    password: String,
}

/// How a client proves who it is: nothing, a fixed token, or credentials
/// that it trades for a token when it first needs one and again when the
/// token has expired.
#[derive(Clone, Default)]
struct Auth {
    credentials: Option<Credentials>,
    /// Shared by clones, so that every clone (bench's workers, say) rides
    /// on one authentication; the lock is held while authenticating so that
    /// concurrent first requests wait for that one.
    token: Arc<tokio::sync::Mutex<Token>>,
}

#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) enum Token {
    /// Not asked for yet.
    #[default]
    Unknown,
    /// The cluster has auth disabled: requests go without a token (as
    /// etcd's client does) until one is refused.
    NotNeeded,
    Bearer(String),
}

impl Token {
    /// What a request carries in this state.
    pub(crate) fn header(&self) -> Option<&str> {
        match self {
            Token::Bearer(t) => Some(t),
            Token::Unknown | Token::NotNeeded => None,
        }
    }
}

impl fmt::Debug for Auth {
    // Hand-written so that neither the password nor the token is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = match self.token.try_lock().as_deref() {
            Ok(Token::Unknown) => "none",
            Ok(Token::NotNeeded) => "not needed",
            _ => "<redacted>",
        };
        f.debug_struct("Auth")
            .field("user", &self.credentials.as_ref().map(|c| &c.user))
            .field("token", &token)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    tls: TlsOptions,
    endpoints: Vec<String>,
    /// How many full passes over the endpoints a retryable call makes.
    attempts: u32,
    backoff: Duration,
    auth: Auth,
}

impl Client {
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<Self, ClientError> {
        Self::with_tls(endpoints, &TlsOptions::default())
    }

    /// A client for TLS endpoints (plain `http://` ones work too).
    pub fn with_tls<S: AsRef<str>>(endpoints: &[S], tls: &TlsOptions) -> Result<Self, ClientError> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.as_ref().trim().trim_end_matches('/').to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        for e in &endpoints {
            let ok = url::Url::parse(e)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(ClientError::BadEndpoint(e.clone()));
            }
        }
        let http = http_client(tls, Duration::from_secs(2), Duration::from_secs(15))?;
        Ok(Client {
            http,
            tls: tls.clone(),
            endpoints,
            attempts: 5,
            backoff: Duration::from_millis(100),
            auth: Auth::default(),
        })
    }

    /// Like `new`, with a caller-built HTTP client (TLS roots and identity,
    /// timeouts).
    pub fn with_http<S: AsRef<str>>(
        endpoints: &[S],
        http: reqwest::Client,
    ) -> Result<Self, ClientError> {
        Ok(Client {
            http,
            ..Client::new(endpoints)?
        })
    }

    /// A client that never retries (one attempt at the first endpoint).
    /// Used by callers that must observe one node, such as the operator.
    pub fn single_shot(mut self) -> Self {
        self.attempts = 1;
        self.endpoints.truncate(1);
        self
    }

    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, ClientError> {
        self.http = http_client(&self.tls, timeout.min(Duration::from_secs(2)), timeout)?;
        Ok(self)
    }

    /// Authenticate as `user` (`POST /v1/auth/authenticate`) before the
    /// first request, send the token with every request, and when a request
    /// is refused as `unauthenticated` (the token expired) authenticate
    /// again and retry it once. Clones share the token.
    pub fn with_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.auth = Auth {
            credentials: Some(Credentials {
                user: user.into(),
                password: password.into(),
            }),
            token: Default::default(),
        };
        self
    }

    /// Send this token (from `authenticate`) with every request. Nothing
    /// renews it: once it expires, requests fail with `unauthenticated`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.auth = Auth {
            credentials: None,
            token: Arc::new(tokio::sync::Mutex::new(Token::Bearer(token.into()))),
        };
        self
    }

    /// A client for other endpoints (of the same cluster) with the same TLS
    /// options, credentials and token: tokens are valid on every node, so
    /// bench's per-endpoint workers and `status`'s per-endpoint calls
    /// authenticate once between them.
    pub fn for_endpoints<S: AsRef<str>>(&self, endpoints: &[S]) -> Result<Self, ClientError> {
        let mut c = Self::with_tls(endpoints, &self.tls)?;
        c.auth = self.auth.clone();
        Ok(c)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// A clone that makes one attempt at endpoint `i` only (same HTTP
    /// client, TLS options and token): for callers that rotate over the
    /// endpoints themselves, such as a lease's keep-alive task.
    pub(crate) fn pinned(&self, i: usize) -> Client {
        let mut c = self.clone();
        if let Some(e) = self.endpoints.get(i) {
            c.endpoints = vec![e.clone()];
        }
        c.endpoints.truncate(1);
        c.attempts = 1;
        c
    }

    /// Whether the client can authenticate again when its token is refused.
    pub(crate) fn has_credentials(&self) -> bool {
        self.auth.credentials.is_some()
    }

    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<u64, ClientError> {
        self.put_with(key, value.into(), &[]).await
    }

    pub async fn put_if_absent(
        &self,
        key: &str,
        value: impl Into<Bytes>,
    ) -> Result<u64, ClientError> {
        self.put_with(key, value.into(), &[("if_absent", "true".into())])
            .await
    }

    pub async fn put_if_revision(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        revision: u64,
    ) -> Result<u64, ClientError> {
        self.put_with(key, value.into(), &[("if_revision", revision.to_string())])
            .await
    }

    pub(crate) async fn put_with(
        &self,
        key: &str,
        value: Bytes,
        query: &[(&str, String)],
    ) -> Result<u64, ClientError> {
        let path = key_path(key);
        let resp: PutResponse = self
            .call_json(Method::PUT, &path, query, Body::Raw(value))
            .await?;
        Ok(resp.revision)
    }

    /// `Ok(None)` when the key does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<GetResponse>, ClientError> {
        self.get_with(key, Consistency::Linearizable).await
    }

    pub async fn get_with(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<GetResponse>, ClientError> {
        let query = consistency_query(consistency);
        match self
            .call(Method::GET, &key_path(key), &query, Body::None)
            .await
        {
            Ok((headers, body)) => {
                let revision = headers
                    .get("x-raftkv-revision")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                Ok(Some(GetResponse {
                    value: body,
                    revision,
                }))
            }
            Err(ClientError::Api { error, .. }) if error.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<DeleteResponse, ClientError> {
        self.call_json(Method::DELETE, &key_path(key), &[], Body::None)
            .await
    }

    pub async fn delete_if_revision(
        &self,
        key: &str,
        revision: u64,
    ) -> Result<DeleteResponse, ClientError> {
        self.call_json(
            Method::DELETE,
            &key_path(key),
            &[("if_revision", revision.to_string())],
            Body::None,
        )
        .await
    }

    /// `DELETE /v1/kv?prefix=P` or `?start=A&end=B`: one atomic delete of
    /// every key in the range.
    pub async fn delete_range(&self, range: &KeyRange) -> Result<DeleteRangeResponse, ClientError> {
        self.call_json(Method::DELETE, "/v1/kv", &range.query(), Body::None)
            .await
    }

    pub async fn range(&self, opts: &RangeOptions) -> Result<RangeResponse, ClientError> {
        let mut query = consistency_query(opts.consistency);
        if let Some(p) = &opts.prefix {
            query.push(("prefix", p.clone()));
        }
        if let Some(s) = &opts.start {
            query.push(("start", s.clone()));
        }
        if let Some(l) = opts.limit {
            query.push(("limit", l.to_string()));
        }
        if opts.keys_only {
            query.push(("keys_only", "true".into()));
        }
        self.call_json(Method::GET, "/v1/kv", &query, Body::None)
            .await
    }

    /// How many keys start with `prefix` (from `start` on), and with a
    /// `delimiter` how they group below it (`GET /v1/kv?count_only=true`).
    pub async fn count(
        &self,
        prefix: &str,
        start: Option<&str>,
        delimiter: Option<&str>,
    ) -> Result<CountResponse, ClientError> {
        let mut query = vec![("prefix", prefix.to_owned()), ("count_only", "true".into())];
        if let Some(s) = start {
            query.push(("start", s.to_owned()));
        }
        if let Some(d) = delimiter {
            query.push(("delimiter", d.to_owned()));
        }
        self.call_json(Method::GET, "/v1/kv", &query, Body::None)
            .await
    }

    pub async fn txn(&self, txn: &TxnRequest) -> Result<TxnResponse, ClientError> {
        self.call_json(Method::POST, "/v1/txn", &[], json_body(txn))
            .await
    }

    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        self.call_json(Method::GET, "/v1/cluster/status", &[], Body::None)
            .await
    }

    pub async fn init(&self, req: &InitRequest) -> Result<MembershipResponse, ClientError> {
        self.call_json(Method::POST, "/v1/cluster/init", &[], json_body(req))
            .await
    }

    pub async fn add_learner(
        &self,
        req: &AddLearnerRequest,
    ) -> Result<MembershipResponse, ClientError> {
        self.call_json(Method::POST, "/v1/cluster/learners", &[], json_body(req))
            .await
    }

    pub async fn set_voters(&self, voters: &[NodeId]) -> Result<MembershipResponse, ClientError> {
        let req = SetVotersRequest {
            voters: voters.to_vec(),
        };
        self.call_json(Method::PUT, "/v1/cluster/voters", &[], json_body(&req))
            .await
    }

    pub async fn remove_member(&self, id: NodeId) -> Result<MembershipResponse, ClientError> {
        let path = format!("/v1/cluster/members/{id}");
        self.call_json(Method::DELETE, &path, &[], Body::None).await
    }

    pub async fn transfer_leader(&self, to: NodeId) -> Result<serde_json::Value, ClientError> {
        let req = TransferLeaderRequest { to };
        self.call_json(
            Method::POST,
            "/v1/cluster/transfer-leader",
            &[],
            json_body(&req),
        )
        .await
    }

    /// Disaster recovery on the node of the first endpoint (see docs/api.md):
    /// it exits and, restarted, is the only voter of `cluster_id`. Never
    /// tried on another endpoint: it is that node's data that survives.
    pub async fn force_new_cluster(
        &self,
        cluster_id: &str,
    ) -> Result<kvapi::ForceNewClusterResponse, ClientError> {
        let req = kvapi::ForceNewClusterRequest {
            cluster_id: cluster_id.to_owned(),
        };
        let first = self.pinned(0);
        first
            .call_json(
                Method::POST,
                "/v1/cluster/force-new-cluster",
                &[],
                json_body(&req),
            )
            .await
    }

    /// `/healthz` of the first endpoint that answers.
    pub async fn health(&self) -> Result<(), ClientError> {
        self.call_public("/healthz").await.map(|_| ())
    }

    /// `/readyz`: `Ok(Err(reason))` when the node answers 503.
    pub async fn ready(&self) -> Result<Result<(), String>, ClientError> {
        match self.call_public("/readyz").await {
            Ok(_) => Ok(Ok(())),
            Err(ClientError::Api {
                error, status: 503, ..
            }) => Ok(Err(error.message)),
            Err(e) => Err(e),
        }
    }

    /// `GET /version`: the node's crate and API version.
    pub async fn version(&self) -> Result<VersionResponse, ClientError> {
        let (_, bytes) = self.call_public("/version").await?;
        self.decode(&bytes)
    }

    pub async fn metrics(&self) -> Result<String, ClientError> {
        let (_, body) = self.call(Method::GET, "/metrics", &[], Body::None).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `POST /v1/auth/authenticate`: a token for these credentials. This
    /// does not change the client; `with_token` or `with_credentials` do.
    pub async fn authenticate(
        &self,
        req: &AuthenticateRequest,
    ) -> Result<AuthenticateResponse, ClientError> {
        let (_, bytes) = self
            .call_endpoints(
                &Method::POST,
                "/v1/auth/authenticate",
                &[],
                &json_body(req),
                None,
            )
            .await?;
        self.decode(&bytes)
    }

    pub async fn auth_status(&self) -> Result<AuthStatus, ClientError> {
        self.call_json(Method::GET, "/v1/auth/status", &[], Body::None)
            .await
    }

    pub async fn auth_enable(&self) -> Result<AuthStatus, ClientError> {
        self.call_json(Method::POST, "/v1/auth/enable", &[], Body::None)
            .await
    }

    pub async fn auth_disable(&self) -> Result<AuthStatus, ClientError> {
        self.call_json(Method::POST, "/v1/auth/disable", &[], Body::None)
            .await
    }

    pub async fn user_list(&self) -> Result<UserList, ClientError> {
        self.call_json(Method::GET, "/v1/auth/users", &[], Body::None)
            .await
    }

    pub async fn user_add(&self, req: &UserAddRequest) -> Result<AuthChanged, ClientError> {
        self.call_json(Method::POST, "/v1/auth/users", &[], json_body(req))
            .await
    }

    pub async fn user_get(&self, name: &str) -> Result<UserInfo, ClientError> {
        self.call_json(Method::GET, &user_path(name), &[], Body::None)
            .await
    }

    pub async fn user_delete(&self, name: &str) -> Result<AuthChanged, ClientError> {
        self.call_json(Method::DELETE, &user_path(name), &[], Body::None)
            .await
    }

    /// Sets (`Some`) or removes (`None`) the user's password.
    pub async fn user_change_password(
        &self,
        name: &str,
        req: &PasswordRequest,
    ) -> Result<AuthChanged, ClientError> {
        let path = format!("{}/password", user_path(name));
        self.call_json(Method::PUT, &path, &[], json_body(req))
            .await
    }

    pub async fn user_grant_role(
        &self,
        name: &str,
        role: &str,
    ) -> Result<AuthChanged, ClientError> {
        self.call_json(Method::PUT, &user_role_path(name, role), &[], Body::None)
            .await
    }

    pub async fn user_revoke_role(
        &self,
        name: &str,
        role: &str,
    ) -> Result<AuthChanged, ClientError> {
        self.call_json(Method::DELETE, &user_role_path(name, role), &[], Body::None)
            .await
    }

    pub async fn role_list(&self) -> Result<RoleList, ClientError> {
        self.call_json(Method::GET, "/v1/auth/roles", &[], Body::None)
            .await
    }

    pub async fn role_add(&self, req: &RoleAddRequest) -> Result<AuthChanged, ClientError> {
        self.call_json(Method::POST, "/v1/auth/roles", &[], json_body(req))
            .await
    }

    pub async fn role_get(&self, name: &str) -> Result<RoleInfo, ClientError> {
        self.call_json(Method::GET, &role_path(name), &[], Body::None)
            .await
    }

    pub async fn role_delete(&self, name: &str) -> Result<AuthChanged, ClientError> {
        self.call_json(Method::DELETE, &role_path(name), &[], Body::None)
            .await
    }

    pub async fn role_grant_permission(
        &self,
        name: &str,
        perm: &Permission,
    ) -> Result<AuthChanged, ClientError> {
        let path = format!("{}/permissions", role_path(name));
        self.call_json(Method::POST, &path, &[], json_body(perm))
            .await
    }

    /// Revokes the permission on exactly these keys (as granted: the same
    /// key, and the same range end or prefix flag).
    pub async fn role_revoke_permission(
        &self,
        name: &str,
        keys: &PermissionKeys,
    ) -> Result<AuthChanged, ClientError> {
        let path = format!("{}/permissions", role_path(name));
        let mut query = vec![("key", keys.key.clone())];
        if let Some(end) = &keys.range_end {
            query.push(("range_end", end.clone()));
        }
        if keys.prefix {
            query.push(("prefix", "true".into()));
        }
        self.call_json(Method::DELETE, &path, &query, Body::None)
            .await
    }

    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body,
    ) -> Result<T, ClientError> {
        let (_, bytes) = self.call(method, path, query, body).await?;
        self.decode(&bytes)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(bytes).map_err(|e| ClientError::Unexpected {
            endpoint: self.endpoints[0].clone(),
            status: 200,
            body: format!("undecodable JSON: {e}"),
        })
    }

    /// Runs the request with this client's token, if it has or can get one.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body,
    ) -> Result<(reqwest::header::HeaderMap, Bytes), ClientError> {
        let sent = self.token(None).await?;
        let first = self
            .call_endpoints(&method, path, query, &body, sent.header())
            .await;
        match first {
            // The token expired (or auth was enabled since it was found
            // off). A 401 is given before anything runs, so retrying even a
            // write is safe; once only, so that it cannot loop.
            Err(e)
                if e.code() == Some(ErrorCode::Unauthenticated)
                    && self.auth.credentials.is_some() =>
            {
                let token = self.token(Some(&sent)).await?;
                self.call_endpoints(&method, path, query, &body, token.header())
                    .await
            }
            r => r,
        }
    }

    /// A `GET` of a probe that needs no credentials (as etcd's health and
    /// version): it neither authenticates nor sends a token, so `kvctl
    /// health` works with a wrong password or none.
    async fn call_public(
        &self,
        path: &str,
    ) -> Result<(reqwest::header::HeaderMap, Bytes), ClientError> {
        self.call_endpoints(&Method::GET, path, &[], &Body::None, None)
            .await
    }

    /// What to send: the current state, or with credentials a new one when
    /// there is none yet or what was sent (`refused`) was refused.
    pub(crate) async fn token(&self, refused: Option<&Token>) -> Result<Token, ClientError> {
        let mut token = self.auth.token.lock().await;
        let Some(creds) = &self.auth.credentials else {
            return Ok(token.clone());
        };
        let current = *token != Token::Unknown && Some(&*token) != refused;
        if current {
            // Fresh, or another request has renewed it meanwhile.
            return Ok(token.clone());
        }
        let req = AuthenticateRequest {
            name: creds.user.clone(),
            password: creds.password.clone(),
        };
        *token = match self.authenticate(&req).await {
            Ok(resp) => Token::Bearer(resp.token),
            // The server's answer while auth is disabled.
            Err(e) if e.code() == Some(ErrorCode::PreconditionFailed) => Token::NotNeeded,
            Err(e) => {
                return Err(ClientError::Authentication {
                    user: creds.user.clone(),
                    cause: Box::new(e),
                });
            }
        };
        Ok(token.clone())
    }

    /// Runs the request against each endpoint in turn until one succeeds or
    /// a non-retryable error comes back.
    async fn call_endpoints(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: &Body,
        token: Option<&str>,
    ) -> Result<(reqwest::header::HeaderMap, Bytes), ClientError> {
        let mut last = ClientError::NoEndpoints;
        let mut delay = self.backoff;
        let write = is_write(method, path);
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            for endpoint in &self.endpoints {
                match self
                    .call_once(endpoint, method.clone(), path, query, body, token)
                    .await
                {
                    Ok(ok) => return Ok(ok),
                    Err(e) if may_send_again(&e, write) => last = e,
                    Err(e) => return Err(e),
                }
            }
        }
        Err(last)
    }

    async fn call_once(
        &self,
        endpoint: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: &Body,
        token: Option<&str>,
    ) -> Result<(reqwest::header::HeaderMap, Bytes), ClientError> {
        let transport = |source| ClientError::Transport {
            endpoint: endpoint.to_owned(),
            source,
        };
        let mut req = self.request(endpoint, method, path, query, token);
        req = match body {
            Body::None => req,
            Body::Raw(b) => req.body(b.clone()),
            Body::Json(b) => req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.clone()),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(transport)?;
        if status == StatusCode::OK {
            return Ok((headers, bytes));
        }
        Err(error_answer(endpoint, status, &bytes))
    }

    /// A request to `endpoint` through this client's HTTP client (its TLS
    /// options and timeouts), with `token` as a bearer token.
    pub(crate) fn request(
        &self,
        endpoint: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{endpoint}{path}"))
            .query(query);
        if let Some(t) = token {
            // reqwest marks the header sensitive: it is kept out of its logs.
            req = req.bearer_auth(t);
        }
        req
    }
}

/// Sends `req` and waits for its status line: the response, its body not
/// yet read, when it is 200; the error the answer stands for otherwise.
/// For the streamed routes (watch, snapshot).
pub(crate) async fn open_stream(
    endpoint: &str,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ClientError> {
    let transport = |source| ClientError::Transport {
        endpoint: endpoint.to_owned(),
        source,
    };
    let resp = req.send().await.map_err(transport)?;
    let status = resp.status();
    if status == StatusCode::OK {
        return Ok(resp);
    }
    let bytes = resp.bytes().await.map_err(transport)?;
    Err(error_answer(endpoint, status, &bytes))
}

/// The error a non-200 answer stands for: its `ErrorBody`, or the start of
/// whatever else it was.
pub(crate) fn error_answer(endpoint: &str, status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(ErrorBody { error }) => ClientError::Api {
            endpoint: endpoint.to_owned(),
            status: status.as_u16(),
            error,
        },
        Err(_) => ClientError::Unexpected {
            endpoint: endpoint.to_owned(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(bytes).chars().take(200).collect(),
        },
    }
}

pub(crate) enum Body {
    None,
    Raw(Bytes),
    Json(Bytes),
}

pub(crate) fn json_body<T: Serialize>(v: &T) -> Body {
    // Serialising our own plain structs cannot fail.
    Body::Json(serde_json::to_vec(v).unwrap_or_default().into())
}

fn consistency_query(c: Consistency) -> Vec<(&'static str, String)> {
    match c {
        Consistency::Linearizable => vec![],
        Consistency::Serializable => vec![("consistency", "serializable".into())],
    }
}

/// `/v1/kv/<percent-encoded key>`
pub fn key_path(key: &str) -> String {
    format!("/v1/kv/{}", utf8_percent_encode(key, KEY_SET))
}

/// `/v1/auth/users/<percent-encoded name>`
fn user_path(name: &str) -> String {
    format!("/v1/auth/users/{}", utf8_percent_encode(name, KEY_SET))
}

fn user_role_path(name: &str, role: &str) -> String {
    format!(
        "{}/roles/{}",
        user_path(name),
        utf8_percent_encode(role, KEY_SET)
    )
}

/// Requests that change data and are not idempotent: sent twice, a put
/// bumps the revision again and a compare-and-swap that took effect fails.
fn is_write(method: &Method, path: &str) -> bool {
    *method != Method::GET
        && (path.starts_with("/v1/kv") || path == "/v1/txn" || path == "/v1/leases")
}

/// Whether a failed attempt may be sent again, here or to another
/// endpoint. A write is sent again only when the error proves it was not
/// applied: `no_leader` and `not_initialized` (refused before proposing) or
/// a connection that could not be opened. A write that failed with
/// `unavailable` (leader changed mid-write) or whose answer was lost may
/// have been applied: the caller decides (re-read, or `if_revision`).
fn may_send_again(e: &ClientError, write: bool) -> bool {
    if !e.retryable() {
        return false;
    }
    if !write {
        return true;
    }
    match e {
        ClientError::Api { error, .. } => {
            matches!(error.code, ErrorCode::NoLeader | ErrorCode::NotInitialized)
        }
        ClientError::Transport { source, .. } => source.is_connect(),
        _ => false,
    }
}

/// `/v1/auth/roles/<percent-encoded name>`
fn role_path(name: &str) -> String {
    format!("/v1/auth/roles/{}", utf8_percent_encode(name, KEY_SET))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Answers one request with `200` and `body`, and yields the request
    /// line it received (method, path and query as sent on the wire).
    async fn answer_once(body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            // These requests have no body: the head is all there is to read.
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        });
        (url, task)
    }

    #[tokio::test]
    async fn delete_range_sends_prefix_even_when_empty() {
        let (url, req) = answer_once(r#"{"deleted": 3, "revision": 9}"#).await;
        let c = Client::new(&[url]).expect("url").single_shot();
        let resp = c
            .delete_range(&KeyRange::Prefix(String::new()))
            .await
            .expect("delete_range");
        assert_eq!(
            resp,
            DeleteRangeResponse {
                deleted: 3,
                revision: 9
            }
        );
        assert_eq!(req.await.expect("server"), "DELETE /v1/kv?prefix= HTTP/1.1");
    }

    #[tokio::test]
    async fn delete_range_between_sends_start_and_end() {
        let (url, req) = answer_once(r#"{"deleted": 0, "revision": 1}"#).await;
        let c = Client::new(&[url]).expect("url").single_shot();
        let range = KeyRange::Between {
            start: "a/b".into(),
            end: "a c".into(),
        };
        c.delete_range(&range).await.expect("delete_range");
        assert_eq!(
            req.await.expect("server"),
            "DELETE /v1/kv?start=a%2Fb&end=a+c HTTP/1.1"
        );
    }

    #[tokio::test]
    async fn version_reads_get_version() {
        let (url, req) = answer_once(r#"{"version": "0.1.0", "api": "v1"}"#).await;
        let c = Client::new(&[url]).expect("url").single_shot();
        let v = c.version().await.expect("version");
        assert_eq!((v.version.as_str(), v.api.as_str()), ("0.1.0", "v1"));
        assert_eq!(req.await.expect("server"), "GET /version HTTP/1.1");
    }

    /// A request as the mock server saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        /// `METHOD /path?query`, without the HTTP version.
        line: String,
        authorization: Option<String>,
        body: String,
    }

    type Log = std::sync::Arc<std::sync::Mutex<Vec<Seen>>>;

    /// A server that answers every request (connections served
    /// concurrently) with `handler`'s status and JSON body, and logs them.
    async fn mock<H>(handler: H) -> (String, Log)
    where
        H: Fn(&Seen) -> (u16, String) + Send + Sync + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let log = Log::default();
        let handler = std::sync::Arc::new(handler);
        let seen = log.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (handler, seen) = (handler.clone(), seen.clone());
                tokio::spawn(async move { serve_one(sock, &*handler, &seen).await });
            }
        });
        (url, log)
    }

    async fn serve_one<H>(mut sock: tokio::net::TcpStream, handler: &H, log: &Log)
    where
        H: Fn(&Seen) -> (u16, String),
    {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while data.len() < head_end + len {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
        let line = head.lines().next().unwrap_or_default();
        let seen = Seen {
            line: line.trim_end_matches(" HTTP/1.1").to_owned(),
            authorization: header("authorization"),
            body: String::from_utf8_lossy(&data[head_end..head_end + len]).into_owned(),
        };
        let (status, body) = handler(&seen);
        log.lock().expect("log").push(seen);
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
    }

    fn unauthenticated(message: &str) -> (u16, String) {
        let body = serde_json::json!({"error": {"code": "unauthenticated", "message": message}});
        (401, body.to_string())
    }

    fn api_error(status: u16, code: &str) -> (u16, String) {
        let body = serde_json::json!({"error": {"code": code, "message": code}});
        (status, body.to_string())
    }

    /// A write that failed with `unavailable` may have been applied: it is
    /// not sent again (a second put would bump the revision, a second CAS
    /// would fail after the first took effect). `no_leader` proves nothing
    /// was applied and is retried; reads retry both.
    #[tokio::test]
    async fn ambiguous_write_failures_are_not_sent_again() {
        let (url, log) = mock(|_: &Seen| api_error(503, "unavailable")).await;
        let c = Client::new(&[url.as_str(), url.as_str()])
            .expect("url")
            .with_attempts(2);
        let err = c.put("k", "v").await.expect_err("unavailable");
        assert_eq!(err.code(), Some(ErrorCode::Unavailable));
        assert_eq!(
            log.lock().expect("log").len(),
            1,
            "a put that may have been applied went out again"
        );
        let err = c
            .put_if_revision("k", "v", 3)
            .await
            .expect_err("unavailable");
        assert_eq!(err.code(), Some(ErrorCode::Unavailable));
        assert_eq!(log.lock().expect("log").len(), 2);
        c.get("k").await.expect_err("unavailable");
        let reads = log.lock().expect("log").len() - 2;
        assert!(
            reads > 2,
            "a read is retried on every endpoint: {reads} attempts"
        );

        let (url, log) = mock(|_: &Seen| api_error(503, "no_leader")).await;
        let c = Client::new(&[url.as_str()]).expect("url").with_attempts(2);
        c.put("k", "v").await.expect_err("no leader");
        assert!(
            log.lock().expect("log").len() > 1,
            "no_leader proves nothing was applied: retried"
        );
    }

    #[test]
    fn only_data_changes_count_as_writes() {
        assert!(is_write(&Method::PUT, "/v1/kv/a"));
        assert!(is_write(&Method::DELETE, "/v1/kv"));
        assert!(is_write(&Method::POST, "/v1/txn"));
        assert!(is_write(&Method::POST, "/v1/leases"));
        assert!(!is_write(&Method::GET, "/v1/kv/a"));
        assert!(!is_write(&Method::POST, "/v1/leases/7/keepalive"));
        assert!(!is_write(&Method::POST, "/v1/auth/authenticate"));
        assert!(!is_write(&Method::PUT, "/v1/cluster/voters"));
    }

    fn is_authenticate(s: &Seen) -> bool {
        s.line == "POST /v1/auth/authenticate"
    }

    /// Authenticate answers `t<n>` for the n-th call; other requests
    /// succeed only with a token in `valid`.
    fn token_server(valid: &'static [&'static str]) -> impl Fn(&Seen) -> (u16, String) {
        let issued = std::sync::atomic::AtomicU32::new(0);
        move |s| {
            if is_authenticate(s) {
                let n = issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                return (200, format!(r#"{{"token":"t{n}","expires_in":300}}"#));
            }
            let ok = valid
                .iter()
                .any(|t| s.authorization.as_deref() == Some(&format!("Bearer {t}")));
            if ok {
                (200, r#"{"enabled":true,"revision":4}"#.into())
            } else {
                unauthenticated("token expired")
            }
        }
    }

    fn count(log: &Log, f: impl Fn(&Seen) -> bool) -> usize {
        log.lock().expect("log").iter().filter(|s| f(s)).count()
    }

    #[tokio::test]
    async fn credentials_authenticate_once_for_all_clones() {
        let (url, log) = mock(token_server(&["t1"])).await;
        let c = Client::new(&[url])
            .expect("url")
            .with_credentials("root", "pw");
        assert!(c.auth_status().await.expect("first").enabled);
        c.auth_status().await.expect("second");
        // Clones made before and after the token was obtained, in parallel.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.auth_status().await })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("clone");
        }
        let seen = log.lock().expect("log").clone();
        assert_eq!(seen.len(), 11, "{seen:#?}");
        assert!(is_authenticate(&seen[0]), "{seen:#?}");
        let body: serde_json::Value = serde_json::from_str(&seen[0].body).expect("json body");
        assert_eq!(body, serde_json::json!({"name": "root", "password": "pw"}));
        assert_eq!(seen[0].authorization, None);
        for s in &seen[1..] {
            assert_eq!(s.line, "GET /v1/auth/status");
            assert_eq!(s.authorization.as_deref(), Some("Bearer t1"));
        }
    }

    #[tokio::test]
    async fn concurrent_first_requests_share_one_authentication() {
        let (url, log) = mock(token_server(&["t1"])).await;
        let c = Client::new(&[url]).expect("url").with_credentials("u", "p");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.auth_status().await })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("status");
        }
        assert_eq!(count(&log, is_authenticate), 1);
    }

    #[tokio::test]
    async fn an_expired_token_is_renewed_and_the_request_retried_once() {
        // t1 has "expired"; t2, issued on renewal, works.
        let (url, log) = mock(token_server(&["t2"])).await;
        let c = Client::new(&[url]).expect("url").with_credentials("u", "p");
        c.auth_enable().await.expect("retried with a new token");
        let lines: Vec<(String, Option<String>)> = log
            .lock()
            .expect("log")
            .iter()
            .map(|s| (s.line.clone(), s.authorization.clone()))
            .collect();
        let auth = ("POST /v1/auth/authenticate".to_string(), None);
        let enable = |t: &str| {
            (
                "POST /v1/auth/enable".to_string(),
                Some(format!("Bearer {t}")),
            )
        };
        assert_eq!(lines, [auth.clone(), enable("t1"), auth, enable("t2")]);
        // The renewed token is kept.
        c.auth_enable().await.expect("again");
        assert_eq!(count(&log, is_authenticate), 2);
    }

    #[tokio::test]
    async fn a_token_refused_after_renewal_is_an_error_not_a_loop() {
        let (url, log) = mock(token_server(&[])).await;
        let c = Client::new(&[url]).expect("url").with_credentials("u", "p");
        let err = c.user_list().await.expect_err("always refused");
        assert_eq!(err.code(), Some(ErrorCode::Unauthenticated));
        assert!(
            matches!(err, ClientError::Api { status: 401, .. }),
            "{err:?}"
        );
        assert_eq!(count(&log, is_authenticate), 2);
        assert_eq!(count(&log, |s| s.line == "GET /v1/auth/users"), 2);
    }

    #[tokio::test]
    async fn a_wrong_password_names_the_user_and_hides_the_password() {
        let (url, log) = mock(|s| {
            if is_authenticate(s) {
                unauthenticated("invalid user name or password")
            } else {
                (200, r#"{"users":[]}"#.into())
            }
        })
        .await;
        let c = Client::new(&[url])
            .expect("url")
            .with_credentials("alice", "s3cret-pw");
        let err = c.user_list().await.expect_err("wrong password");
        assert!(matches!(err, ClientError::Authentication { .. }), "{err:?}");
        assert_eq!(err.code(), Some(ErrorCode::Unauthenticated));
        assert!(!err.retryable());
        let msg = err.to_string();
        // The server's words, not a stack of prefixes.
        assert_eq!(
            msg,
            "authenticating as \"alice\": invalid user name or password"
        );
        for shown in [msg, format!("{err:?}"), format!("{c:?}")] {
            assert!(!shown.contains("s3cret-pw"), "{shown}");
        }
        // Neither the request nor a second authentication was sent.
        let seen = log.lock().expect("log").clone();
        assert_eq!(seen.len(), 1, "{seen:#?}");
    }

    #[tokio::test]
    async fn with_auth_disabled_requests_go_without_a_token_until_refused() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let enabled = std::sync::Arc::new(AtomicBool::new(false));
        let on = enabled.clone();
        let (url, log) = mock(move |s| {
            let enabled = on.load(Ordering::SeqCst);
            match (is_authenticate(s), enabled) {
                (true, false) => {
                    let e = r#"{"error":{"code":"precondition_failed","message":"auth is not enabled"}}"#;
                    (412, e.into())
                }
                (true, true) => (200, r#"{"token":"t1","expires_in":300}"#.into()),
                (false, true) if s.authorization.as_deref() != Some("Bearer t1") => {
                    unauthenticated("no credentials")
                }
                (false, _) => (200, r#"{"roles":[]}"#.into()),
            }
        })
        .await;
        let c = Client::new(&[url]).expect("url").with_credentials("u", "p");
        c.role_list().await.expect("auth disabled: no token needed");
        c.role_list().await.expect("again");
        // Asked once, not once per request.
        assert_eq!(count(&log, is_authenticate), 1);
        assert_eq!(count(&log, |s| s.authorization.is_some()), 0);
        // Once auth is enabled, the refused request authenticates and is
        // retried with the token.
        enabled.store(true, Ordering::SeqCst);
        c.role_list().await.expect("after enable");
        assert_eq!(count(&log, is_authenticate), 2);
        let last = log.lock().expect("log").last().cloned().expect("a request");
        assert_eq!(last.authorization.as_deref(), Some("Bearer t1"));
    }

    #[tokio::test]
    async fn debug_output_hides_the_token() {
        let (url, _log) = mock(|s| {
            if is_authenticate(s) {
                (200, r#"{"token":"tok-7f3a9","expires_in":300}"#.into())
            } else {
                (200, r#"{"roles":["root"]}"#.into())
            }
        })
        .await;
        let c = Client::new(&[url]).expect("url").with_credentials("u", "p");
        c.role_list().await.expect("roles");
        let shown = format!("{c:?}");
        assert!(!shown.contains("tok-7f3a9"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let fixed = Client::new(&["http://127.0.0.1:1"])
            .expect("url")
            .with_token("tok-7f3a9");
        assert!(!format!("{fixed:?}").contains("tok-7f3a9"));
    }

    #[tokio::test]
    async fn a_given_token_is_sent_and_never_renewed() {
        let (url, log) = mock(token_server(&["given"])).await;
        let c = Client::new(&[url]).expect("url").with_token("given");
        c.auth_status().await.expect("with the given token");
        let expired = c.clone().with_token("old");
        let err = expired.auth_status().await.expect_err("expired");
        assert_eq!(err.code(), Some(ErrorCode::Unauthenticated));
        assert_eq!(count(&log, is_authenticate), 0);
        assert_eq!(count(&log, |_| true), 2);
    }

    #[tokio::test]
    async fn probes_neither_authenticate_nor_send_a_token() {
        let (url, log) = mock(|s| match s.line.as_str() {
            "GET /version" => (200, r#"{"version":"0.1.0","api":"v1"}"#.into()),
            "GET /healthz" | "GET /readyz" => (200, r#"{"status":"ok"}"#.into()),
            _ => unauthenticated("no"),
        })
        .await;
        let c = Client::new(&[url])
            .expect("url")
            .with_credentials("u", "wrong");
        c.health().await.expect("health");
        assert_eq!(c.ready().await.expect("ready"), Ok(()));
        c.version().await.expect("version");
        let seen = log.lock().expect("log").clone();
        assert_eq!(seen.len(), 3, "{seen:#?}");
        assert!(seen.iter().all(|s| s.authorization.is_none()), "{seen:#?}");
    }

    #[tokio::test]
    async fn for_endpoints_shares_the_credentials_and_the_token() {
        let (url, log) = mock(token_server(&["t1"])).await;
        let c = Client::new(std::slice::from_ref(&url))
            .expect("url")
            .with_credentials("u", "p");
        // Made before the first authentication, as bench makes its workers.
        let one = c.for_endpoints(&[url]).expect("url").single_shot();
        one.auth_status().await.expect("authenticates");
        c.auth_status().await.expect("same token");
        assert_eq!(count(&log, is_authenticate), 1);
        assert!(format!("{one:?}").contains("\"u\""));
    }

    #[tokio::test]
    async fn auth_calls_use_their_paths_and_bodies() {
        let (url, log) = mock(|s| {
            let body = match s.line.as_str() {
                l if l.starts_with("GET /v1/auth/users/") => {
                    r#"{"name":"a/b c","roles":["r"],"has_password":true}"#
                }
                l if l.starts_with("GET /v1/auth/roles/") => r#"{"name":"r","permissions":[]}"#,
                "GET /v1/auth/users" => r#"{"users":["a"]}"#,
                "GET /v1/auth/roles" => r#"{"roles":["r"]}"#,
                "POST /v1/auth/authenticate" => r#"{"token":"t","expires_in":1}"#,
                l if l.contains("/v1/auth/status") || l.contains("able") => {
                    r#"{"enabled":false,"revision":1}"#
                }
                _ => r#"{"revision":2}"#,
            };
            (200, body.into())
        })
        .await;
        let c = Client::new(&[url]).expect("url").single_shot();
        let name = "a/b c";
        let req = AuthenticateRequest {
            name: "n".into(),
            password: "p".into(),
        };
        assert_eq!(c.authenticate(&req).await.expect("authenticate").token, "t");
        c.auth_status().await.expect("status");
        c.auth_enable().await.expect("enable");
        c.auth_disable().await.expect("disable");
        assert_eq!(c.user_list().await.expect("users").users, ["a"]);
        let add = UserAddRequest {
            name: name.into(),
            password: None,
            roles: vec![],
        };
        assert_eq!(c.user_add(&add).await.expect("add").revision, 2);
        assert!(c.user_get(name).await.expect("get").has_password);
        c.user_delete(name).await.expect("delete");
        let pw = PasswordRequest {
            password: Some("x".into()),
        };
        c.user_change_password(name, &pw).await.expect("passwd");
        c.user_grant_role(name, "r/1").await.expect("grant");
        c.user_revoke_role(name, "r/1").await.expect("revoke");
        assert_eq!(c.role_list().await.expect("roles").roles, ["r"]);
        c.role_add(&RoleAddRequest { name: "r".into() })
            .await
            .expect("role add");
        c.role_get("r x").await.expect("role get");
        c.role_delete("r x").await.expect("role delete");
        let perm = Permission {
            permission: PermissionKind::Readwrite,
            key: "app/".into(),
            range_end: None,
            prefix: true,
        };
        c.role_grant_permission("r", &perm)
            .await
            .expect("grant perm");
        for keys in [
            PermissionKeys {
                key: "app/".into(),
                range_end: None,
                prefix: true,
            },
            PermissionKeys {
                key: "a".into(),
                range_end: Some("c d".into()),
                prefix: false,
            },
        ] {
            c.role_revoke_permission("r", &keys)
                .await
                .expect("revoke perm");
        }
        let seen = log.lock().expect("log").clone();
        let lines: Vec<&str> = seen.iter().map(|s| s.line.as_str()).collect();
        assert_eq!(
            lines,
            [
                "POST /v1/auth/authenticate",
                "GET /v1/auth/status",
                "POST /v1/auth/enable",
                "POST /v1/auth/disable",
                "GET /v1/auth/users",
                "POST /v1/auth/users",
                "GET /v1/auth/users/a%2Fb%20c",
                "DELETE /v1/auth/users/a%2Fb%20c",
                "PUT /v1/auth/users/a%2Fb%20c/password",
                "PUT /v1/auth/users/a%2Fb%20c/roles/r%2F1",
                "DELETE /v1/auth/users/a%2Fb%20c/roles/r%2F1",
                "GET /v1/auth/roles",
                "POST /v1/auth/roles",
                "GET /v1/auth/roles/r%20x",
                "DELETE /v1/auth/roles/r%20x",
                "POST /v1/auth/roles/r/permissions",
                "DELETE /v1/auth/roles/r/permissions?key=app%2F&prefix=true",
                "DELETE /v1/auth/roles/r/permissions?key=a&range_end=c+d",
            ]
        );
        let json = |i: usize| -> serde_json::Value {
            serde_json::from_str(&seen[i].body).expect("json body")
        };
        assert_eq!(
            json(5),
            serde_json::json!({"name": "a/b c", "password": null, "roles": []})
        );
        assert_eq!(json(8), serde_json::json!({"password": "x"}));
        assert_eq!(json(12), serde_json::json!({"name": "r"}));
        assert_eq!(
            json(15),
            serde_json::json!({"permission": "readwrite", "key": "app/", "prefix": true})
        );
        // Nothing here had credentials, so nothing carried a token.
        assert!(seen.iter().all(|s| s.authorization.is_none()));
    }

    #[test]
    fn keys_are_percent_encoded_as_one_segment() {
        assert_eq!(key_path("a/b c"), "/v1/kv/a%2Fb%20c");
        assert_eq!(key_path("ключ"), "/v1/kv/%D0%BA%D0%BB%D1%8E%D1%87");
    }

    #[test]
    fn endpoints_are_validated() {
        assert!(matches!(
            Client::new::<&str>(&[]),
            Err(ClientError::NoEndpoints)
        ));
        assert!(matches!(
            Client::new(&["localhost:7379"]),
            Err(ClientError::BadEndpoint(_))
        ));
        assert!(Client::new(&["http://127.0.0.1:7379/"]).is_ok());
    }
}
