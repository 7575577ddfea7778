//! Talking to kvnode from the machine that runs the tests.
//!
//! Default (`RAFTKV_E2E_ACCESS` unset or `proxy`): through the API server's
//! proxy, `/api/v1/namespaces/NS/services/https:NAME:7379/proxy/...` for the
//! client Service and `.../pods/https:POD:7379/proxy/...` for one pod (no
//! `https:` for a cluster with TLS off). It needs nothing but the kubeconfig,
//! so the suite runs unchanged on kind or any other cluster. The API server
//! does not verify the node's certificate there, and it drops
//! `Authorization` after authenticating the caller, so with auth on requests
//! carry root's token in `x-raftkv-token` (password from Secret `NAME-root`),
//! re-authenticating when a token is refused.
//!
//! `RAFTKV_E2E_ACCESS=pod-ip`: straight to the pod IPs with `kvclient` (the
//! host must route to pods, as it does with tests/local-k8s.sh). A Service
//! target then means "the ready endpoints of that Service". With TLS the
//! request goes to the pod's name under the peer Service (which its
//! certificate carries) pinned to the pod IP, trusting the cluster CA and
//! presenting the operator's client certificate (CN `root`, which is root
//! once auth is on), from Secret `NAME-operator-client`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, StatusCode};
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::Api;
use kvclient::{
    AuthenticateRequest, AuthenticateResponse, ClusterStatus, Consistency, ErrorBody, ErrorCode,
    NodeId, ROOT, RangeResponse,
};

use crate::creds::{self, Creds, Registry};

/// kvnode's client port (docs/api.md).
pub const CLIENT_PORT: u16 = 7379;
/// Bound on one request, including the API server's proxying.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The API server's service and pod proxy (portable).
    ApiProxy,
    /// Pod IPs, straight from the host (local environment only).
    PodIp,
}

impl Access {
    pub fn from_env() -> anyhow::Result<Access> {
        match std::env::var("RAFTKV_E2E_ACCESS").as_deref() {
            Err(_) | Ok("") | Ok("proxy") => Ok(Access::ApiProxy),
            Ok("pod-ip") => Ok(Access::PodIp),
            Ok(other) => anyhow::bail!("RAFTKV_E2E_ACCESS={other:?}: expected proxy or pod-ip"),
        }
    }
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Service in front of the nodes (any ready node answers).
    Service(String),
    /// One pod.
    Pod(String),
}

impl Target {
    pub fn service(name: &str) -> Target {
        Target::Service(name.to_owned())
    }
    pub fn pod(name: &str) -> Target {
        Target::Pod(name.to_owned())
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Service(s) => write!(f, "service/{s}"),
            Target::Pod(p) => write!(f, "pod/{p}"),
        }
    }
}

/// A failed request: what answered (kvnode's error code, or the API server /
/// transport when `code` is `None`) and whether retrying makes sense.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{target}: {message}")]
pub struct KvError {
    pub target: String,
    pub status: Option<u16>,
    pub code: Option<ErrorCode>,
    pub message: String,
    pub retryable: bool,
}

impl KvError {
    fn new(target: &Target, message: impl Into<String>) -> KvError {
        KvError {
            target: target.to_string(),
            status: None,
            code: None,
            message: message.into(),
            retryable: true,
        }
    }

    fn from_client(target: &Target, e: kvclient::ClientError) -> KvError {
        let status = match &e {
            kvclient::ClientError::Api { status, .. }
            | kvclient::ClientError::Unexpected { status, .. } => Some(*status),
            _ => None,
        };
        KvError {
            target: target.to_string(),
            status,
            code: e.code(),
            retryable: e.retryable(),
            message: e.to_string(),
        }
    }
}

/// Whose credentials a request carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// root: its token through the proxy (fetched when a node asks for
    /// one), the operator's client certificate on pod IPs.
    Root,
    /// Nothing: no token, no client certificate.
    Anonymous,
    /// This token, no client certificate.
    Token(String),
}

/// Header kvnode takes a token from when `Authorization` cannot get through
/// (the API server's proxy removes it).
pub const TOKEN_HEADER: &str = "x-raftkv-token";

/// Access to the kvnodes of one namespace.
#[derive(Clone)]
pub struct Kv {
    client: kube::Client,
    namespace: String,
    access: Access,
    creds: Registry,
}

impl Kv {
    pub fn new(client: kube::Client, namespace: &str, access: Access) -> Kv {
        Kv {
            creds: Registry::new(client.clone(), namespace),
            client,
            namespace: namespace.to_owned(),
            access,
        }
    }

    /// The Secrets and TLS mode of the namespace's clusters.
    pub fn creds(&self) -> &Registry {
        &self.creds
    }

    pub fn access(&self) -> Access {
        self.access
    }

    // ------------------------------------------------------------ operations

    /// `PUT /v1/kv/{key}`: the revision.
    pub async fn put(&self, target: &Target, key: &str, value: &[u8]) -> Result<u64, KvError> {
        match self.access {
            Access::ApiProxy => {
                let body = self
                    .proxy(
                        target,
                        Method::PUT,
                        &kvclient::client::key_path(key),
                        value.to_vec(),
                    )
                    .await?;
                let resp: kvclient::PutResponse = decode(target, &body)?;
                Ok(resp.revision)
            }
            Access::PodIp => {
                let client = self.direct(target).await?;
                client
                    .put(key, Bytes::copy_from_slice(value))
                    .await
                    .map_err(|e| KvError::from_client(target, e))
            }
        }
    }

    /// `GET /v1/kv/{key}`; `None` when the key does not exist.
    pub async fn get(
        &self,
        target: &Target,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<Bytes>, KvError> {
        match self.access {
            Access::ApiProxy => {
                let mut path = kvclient::client::key_path(key);
                if consistency == Consistency::Serializable {
                    path.push_str("?consistency=serializable");
                }
                match self.proxy(target, Method::GET, &path, Vec::new()).await {
                    Ok(body) => Ok(Some(body)),
                    Err(e) if e.code == Some(ErrorCode::NotFound) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Access::PodIp => {
                let client = self.direct(target).await?;
                client
                    .get_with(key, consistency)
                    .await
                    .map(|r| r.map(|r| r.value))
                    .map_err(|e| KvError::from_client(target, e))
            }
        }
    }

    /// `GET /v1/cluster/status` of whichever node answers.
    pub async fn status(&self, target: &Target) -> Result<ClusterStatus, KvError> {
        match self.access {
            Access::ApiProxy => {
                let body = self
                    .proxy(target, Method::GET, "/v1/cluster/status", Vec::new())
                    .await?;
                decode(target, &body)
            }
            Access::PodIp => {
                let client = self.direct(target).await?;
                client
                    .status()
                    .await
                    .map_err(|e| KvError::from_client(target, e))
            }
        }
    }

    /// `POST /v1/cluster/transfer-leader`.
    pub async fn transfer_leader(&self, target: &Target, to: NodeId) -> Result<(), KvError> {
        match self.access {
            Access::ApiProxy => {
                let body = serde_json::json!({ "to": to }).to_string().into_bytes();
                self.proxy(target, Method::POST, "/v1/cluster/transfer-leader", body)
                    .await
                    .map(drop)
            }
            Access::PodIp => {
                let client = self.direct(target).await?;
                client
                    .transfer_leader(to)
                    .await
                    .map(drop)
                    .map_err(|e| KvError::from_client(target, e))
            }
        }
    }

    /// All keys under `prefix` (paged range scan, keys only).
    pub async fn keys(
        &self,
        target: &Target,
        prefix: &str,
        consistency: Consistency,
    ) -> Result<Vec<String>, KvError> {
        let mut keys = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let page = self
                .range_page(target, prefix, start.as_deref(), consistency)
                .await?;
            keys.extend(page.items.into_iter().map(|i| i.key));
            match page.next {
                Some(next) => start = Some(next),
                None => return Ok(keys),
            }
        }
    }

    async fn range_page(
        &self,
        target: &Target,
        prefix: &str,
        start: Option<&str>,
        consistency: Consistency,
    ) -> Result<RangeResponse, KvError> {
        const PAGE: usize = 500;
        match self.access {
            Access::ApiProxy => {
                let mut query = url_query(&[("prefix", prefix), ("keys_only", "true")]);
                query.push_str(&format!("&limit={PAGE}"));
                if let Some(start) = start {
                    query.push('&');
                    query.push_str(&url_query(&[("start", start)]));
                }
                if consistency == Consistency::Serializable {
                    query.push_str("&consistency=serializable");
                }
                let body = self
                    .proxy(target, Method::GET, &format!("/v1/kv?{query}"), Vec::new())
                    .await?;
                decode(target, &body)
            }
            Access::PodIp => {
                let client = self.direct(target).await?;
                let opts = kvclient::RangeOptions {
                    prefix: Some(prefix.to_owned()),
                    start: start.map(str::to_owned),
                    limit: Some(PAGE),
                    keys_only: true,
                    consistency,
                };
                client
                    .range(&opts)
                    .await
                    .map_err(|e| KvError::from_client(target, e))
            }
        }
    }

    // ------------------------------------------------------------ transports

    /// One request as root (see [`Auth::Root`]); the body of a 200.
    async fn proxy(
        &self,
        target: &Target,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<Bytes, KvError> {
        self.call(target, method, path_and_query, body, Auth::Root)
            .await
    }

    /// One request with the given credentials, by the suite's access path;
    /// the body of a 200. Through the proxy, `Auth::Root` authenticates when
    /// a node answers `unauthenticated` and tries once more.
    pub async fn call(
        &self,
        target: &Target,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
        auth: Auth,
    ) -> Result<Bytes, KvError> {
        let cluster = creds::cluster_of(target);
        let creds = self
            .creds
            .get(&cluster)
            .await
            .map_err(|m| KvError::new(target, m))?;
        if self.access == Access::PodIp {
            return self
                .direct_call(target, method, path_and_query, body, &auth)
                .await;
        }
        let token = match &auth {
            Auth::Root => creds.token(),
            Auth::Anonymous => None,
            Auth::Token(t) => Some(t.clone()),
        };
        let first = self
            .proxy_once(
                target,
                &creds,
                method.clone(),
                path_and_query,
                body.clone(),
                token.as_deref(),
            )
            .await;
        match first {
            Err(e) if auth == Auth::Root && e.code == Some(ErrorCode::Unauthenticated) => {
                let password = self
                    .creds
                    .root_password(&cluster)
                    .await
                    .map_err(|m| KvError::new(target, format!("{m}; the node said: {e}")))?;
                let token = self.authenticate(target, ROOT, &password).await?;
                creds.set_token(Some(token.clone()));
                self.proxy_once(target, &creds, method, path_and_query, body, Some(&token))
                    .await
            }
            other => other,
        }
    }

    /// `POST /v1/auth/authenticate`: a token for `name`.
    pub async fn authenticate(
        &self,
        target: &Target,
        name: &str,
        password: &str,
    ) -> Result<String, KvError> {
        let request = serde_json::to_vec(&AuthenticateRequest {
            name: name.to_owned(),
            password: password.to_owned(),
        })
        .map_err(|e| KvError::new(target, e.to_string()))?;
        let (method, path) = (Method::POST, "/v1/auth/authenticate");
        let body = match self.access {
            Access::PodIp => {
                self.direct_call(target, method, path, request, &Auth::Anonymous)
                    .await?
            }
            Access::ApiProxy => {
                let creds = self
                    .creds
                    .get(&creds::cluster_of(target))
                    .await
                    .map_err(|m| KvError::new(target, m))?;
                self.proxy_once(target, &creds, method, path, request, None)
                    .await?
            }
        };
        let response: AuthenticateResponse = decode(target, &body)?;
        Ok(response.token)
    }

    /// One request through the API server's proxy.
    async fn proxy_once(
        &self,
        target: &Target,
        creds: &Creds,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
        token: Option<&str>,
    ) -> Result<Bytes, KvError> {
        // The API server's proxy speaks TLS to the backend only when told.
        let scheme = if creds.tls { "https:" } else { "" };
        let base = match target {
            Target::Service(name) => format!(
                "/api/v1/namespaces/{}/services/{scheme}{name}:{CLIENT_PORT}/proxy",
                self.namespace
            ),
            Target::Pod(name) => format!(
                "/api/v1/namespaces/{}/pods/{scheme}{name}:{CLIENT_PORT}/proxy",
                self.namespace
            ),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{base}{path_and_query}"));
        if (path_and_query.starts_with("/v1/cluster/") || path_and_query.starts_with("/v1/auth/"))
            && !body.is_empty()
        {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = token {
            request = request.header(TOKEN_HEADER, token);
        }
        let request = request
            .body(kube::client::Body::from(body))
            .map_err(|e| KvError::new(target, format!("building the request: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .send(request)
                .await
                .map_err(|e| KvError::new(target, format!("API server: {e}")))?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect_bytes()
                .await
                .map_err(|e| KvError::new(target, format!("reading the response: {e}")))?;
            Ok::<_, KvError>((parts.status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| KvError::new(target, format!("no answer within {REQUEST_TIMEOUT:?}")))??;
        answer(target, status, bytes, "the API server proxy")
    }

    /// The pods behind `target` with their IPs: the pod itself, or the ready
    /// endpoints of the Service (in a random order, as a Service spreads).
    async fn pod_addresses(&self, target: &Target) -> Result<Vec<(String, IpAddr)>, KvError> {
        let parse = |ip: &str| {
            ip.parse::<IpAddr>()
                .map_err(|_| KvError::new(target, format!("bad pod IP {ip:?}")))
        };
        match target {
            Target::Pod(name) => {
                let pod = Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
                    .get(name)
                    .await
                    .map_err(|e| KvError::new(target, format!("reading the pod: {e}")))?;
                let ip = pod
                    .status
                    .and_then(|s| s.pod_ip)
                    .ok_or_else(|| KvError::new(target, "the pod has no IP"))?;
                Ok(vec![(name.clone(), parse(&ip)?)])
            }
            Target::Service(name) => {
                let endpoints = Api::<Endpoints>::namespaced(self.client.clone(), &self.namespace)
                    .get(name)
                    .await
                    .map_err(|e| KvError::new(target, format!("reading the endpoints: {e}")))?;
                let mut pods = Vec::new();
                for address in endpoints
                    .subsets
                    .iter()
                    .flatten()
                    .flat_map(|s| s.addresses.iter().flatten())
                {
                    let pod = address
                        .target_ref
                        .as_ref()
                        .and_then(|r| r.name.clone())
                        .unwrap_or_default();
                    pods.push((pod, parse(&address.ip)?));
                }
                if pods.is_empty() {
                    return Err(KvError::new(target, "the Service has no ready endpoints"));
                }
                let first = rand::random_range(0..pods.len());
                pods.rotate_left(first);
                Ok(pods)
            }
        }
    }

    /// An HTTP client for the pods behind `target` and their endpoint URLs.
    /// With TLS each pod is addressed by `POD.NAME-peer`, a name its
    /// certificate carries, resolved to its IP; `identity` presents root's
    /// client certificate.
    pub async fn direct_http(
        &self,
        target: &Target,
        identity: bool,
    ) -> Result<(reqwest::Client, Vec<String>), KvError> {
        self.direct_http_port(target, identity, CLIENT_PORT).await
    }

    /// [`Kv::direct_http`] for another port of the pods (the raft port).
    pub async fn direct_http_port(
        &self,
        target: &Target,
        identity: bool,
        port: u16,
    ) -> Result<(reqwest::Client, Vec<String>), KvError> {
        let cluster = creds::cluster_of(target);
        let tls = self
            .creds
            .get(&cluster)
            .await
            .map_err(|m| KvError::new(target, m))?
            .tls;
        let pods = self.pod_addresses(target).await?;
        let transport = |e: reqwest::Error| KvError::new(target, format!("HTTP client: {e}"));
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(REQUEST_TIMEOUT)
            .tls_info(true);
        let mut endpoints = Vec::new();
        if tls {
            let pem = self
                .creds
                .client_pem(&cluster)
                .await
                .map_err(|m| KvError::new(target, m))?;
            builder = builder.https_only(true).add_root_certificate(
                reqwest::Certificate::from_pem(pem.ca.as_bytes()).map_err(transport)?,
            );
            if identity {
                let both = format!("{}\n{}", pem.cert.trim_end(), pem.key);
                builder = builder
                    .identity(reqwest::Identity::from_pem(both.as_bytes()).map_err(transport)?);
            }
            for (pod, ip) in &pods {
                let host = format!("{pod}.{cluster}-peer");
                builder = builder.resolve(&host, SocketAddr::new(*ip, port));
                endpoints.push(format!("https://{host}:{port}"));
            }
        } else {
            endpoints.extend(
                pods.iter()
                    .map(|(_, ip)| format!("http://{}", SocketAddr::new(*ip, port))),
            );
        }
        Ok((builder.build().map_err(transport)?, endpoints))
    }

    /// A kvclient for the pod IP(s) behind `target` (one attempt per
    /// endpoint), as root.
    async fn direct(&self, target: &Target) -> Result<kvclient::Client, KvError> {
        let (http, endpoints) = self.direct_http(target, true).await?;
        kvclient::Client::with_http(&endpoints, http)
            .map(|c| c.with_attempts(1))
            .map_err(|e| KvError::from_client(target, e))
    }

    /// One raw request to the first pod behind `target`.
    async fn direct_call(
        &self,
        target: &Target,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
        auth: &Auth,
    ) -> Result<Bytes, KvError> {
        let (http, endpoints) = self.direct_http(target, *auth == Auth::Root).await?;
        let endpoint = endpoints
            .first()
            .ok_or_else(|| KvError::new(target, "no endpoint"))?;
        let method = reqwest::Method::from_bytes(method.as_str().as_bytes())
            .map_err(|e| KvError::new(target, e.to_string()))?;
        let mut request = http
            .request(method, format!("{endpoint}{path_and_query}"))
            .body(body);
        if path_and_query.starts_with("/v1/cluster/") || path_and_query.starts_with("/v1/auth/") {
            request = request.header("content-type", "application/json");
        }
        if let Auth::Token(token) = auth {
            request = request.header(TOKEN_HEADER, token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| KvError::new(target, format!("{endpoint}: {e}")))?;
        let status = StatusCode::from_u16(response.status().as_u16())
            .map_err(|e| KvError::new(target, e.to_string()))?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| KvError::new(target, format!("reading the response: {e}")))?;
        answer(target, status, bytes, endpoint)
    }
}

/// The body of a 200, or the error: kvnode's own (passed through by the
/// proxy), or something in between (`via`).
fn answer(target: &Target, status: StatusCode, bytes: Bytes, via: &str) -> Result<Bytes, KvError> {
    if status == StatusCode::OK {
        return Ok(bytes);
    }
    Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(ErrorBody { error }) => KvError {
            target: target.to_string(),
            status: Some(status.as_u16()),
            code: Some(error.code),
            retryable: error.code.retryable(),
            message: format!("{} {:?}: {}", status.as_u16(), error.code, error.message),
        },
        // The API server's (no endpoints, pod gone, backend unreachable):
        // the kind of failure a retry elsewhere or later may fix.
        Err(_) => KvError {
            target: target.to_string(),
            status: Some(status.as_u16()),
            code: None,
            retryable: true,
            message: format!(
                "{} from {via}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ),
        },
    })
}

fn decode<T: serde::de::DeserializeOwned>(target: &Target, body: &[u8]) -> Result<T, KvError> {
    serde_json::from_slice(body).map_err(|e| KvError {
        target: target.to_string(),
        status: Some(200),
        code: None,
        retryable: false,
        message: format!(
            "undecodable response ({e}): {}",
            String::from_utf8_lossy(body)
                .chars()
                .take(200)
                .collect::<String>()
        ),
    })
}

/// `a=b&c=d` with the values percent-encoded.
fn url_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

// ---------------------------------------------------------------- bulk helpers

/// The value the suite writes for `key`, so a read can be checked on its own.
pub fn value_for(key: &str) -> Vec<u8> {
    format!("value of {key}").into_bytes()
}

impl Kv {
    /// Writes `value_for(key)` until a node acknowledges it, retrying
    /// retryable errors until `deadline`.
    pub async fn put_acked(
        &self,
        target: &Target,
        key: &str,
        deadline: Instant,
    ) -> Result<u64, KvError> {
        let value = value_for(key);
        loop {
            match self.put(target, key, &value).await {
                Ok(revision) => return Ok(revision),
                Err(e) if e.retryable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `keys` with `value_for`, `concurrency` at a time.
    pub async fn write_all(
        &self,
        target: &Target,
        keys: &[String],
        concurrency: usize,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let mut results = futures::stream::iter(keys.iter())
            .map(|key| async move { (key, self.put_acked(target, key, deadline).await) })
            .buffer_unordered(concurrency);
        while let Some((key, result)) = results.next().await {
            if let Err(e) = result {
                anyhow::bail!("writing {key}: {e}");
            }
        }
        Ok(())
    }

    /// Reads every key back from `target` and compares it with `value_for`.
    /// Ok(list of problems), empty when all keys hold their value.
    pub async fn check_all(
        &self,
        target: &Target,
        keys: &[String],
        consistency: Consistency,
        concurrency: usize,
    ) -> Result<Vec<String>, KvError> {
        let mut results = futures::stream::iter(keys.iter())
            .map(|key| async move {
                let mut attempts = 0;
                loop {
                    match self.get(target, key, consistency).await {
                        Err(e) if e.retryable && attempts < 20 => {
                            attempts += 1;
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        other => return (key, other),
                    }
                }
            })
            .buffer_unordered(concurrency);
        let mut problems = Vec::new();
        while let Some((key, result)) = results.next().await {
            match result? {
                Some(v) if v.as_ref() == value_for(key).as_slice() => {}
                Some(v) => problems.push(format!(
                    "{key}: wrong value {:?}",
                    String::from_utf8_lossy(&v)
                )),
                None => problems.push(format!("{key}: missing")),
            }
        }
        problems.sort();
        Ok(problems)
    }
}

/// `prefix-000000` … — sortable keys without `/` or `%`: the API server's
/// proxy decodes the path before forwarding it, so an encoded `/` in a key
/// would reach kvnode as a path separator.
pub fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:06}")).collect()
}

// ---------------------------------------------------------------- write streams

/// Writers that keep putting fresh keys through a target until stopped,
/// recording which writes were acknowledged and when.
pub struct WriteStream {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    writers: Vec<tokio::task::JoinHandle<WriterLog>>,
    started: Instant,
}

#[derive(Default)]
struct WriterLog {
    acked: Vec<(String, Instant)>,
    failed_attempts: usize,
    last_error: Option<String>,
}

/// What a stopped [`WriteStream`] did.
pub struct StreamReport {
    /// Every acknowledged key (its value is `value_for(key)`).
    pub acked: Vec<String>,
    /// Ack times, sorted.
    pub ack_times: Vec<Instant>,
    pub failed_attempts: usize,
    pub last_error: Option<String>,
    pub started: Instant,
}

impl StreamReport {
    /// Writes acknowledged after `t`.
    pub fn acked_after(&self, t: Instant) -> usize {
        self.ack_times.iter().filter(|a| **a > t).count()
    }

    /// Longest time without any acknowledgement, between the first and the
    /// last one.
    pub fn longest_pause(&self) -> Duration {
        self.ack_times
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .max()
            .unwrap_or_default()
    }
}

impl WriteStream {
    /// `writers` tasks, each writing `prefix-<writer>-<seq>` one at a time.
    /// A write that fails is retried with the same key and value until it is
    /// acknowledged (or the stream stops, leaving it unacknowledged).
    pub fn start(kv: &Kv, target: &Target, prefix: &str, writers: usize) -> WriteStream {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let writers = (0..writers)
            .map(|w| {
                let (kv, target, stop) = (kv.clone(), target.clone(), stop.clone());
                let counter = acked.clone();
                let prefix = format!("{prefix}-{w}");
                tokio::spawn(async move {
                    let mut log = WriterLog::default();
                    let mut seq = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("{prefix}-{seq:06}");
                        match kv.put(&target, &key, &value_for(&key)).await {
                            Ok(_) => {
                                log.acked.push((key, Instant::now()));
                                counter.fetch_add(1, Ordering::Relaxed);
                                seq += 1;
                            }
                            Err(e) => {
                                log.failed_attempts += 1;
                                log.last_error = Some(e.to_string());
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                    log
                })
            })
            .collect();
        WriteStream {
            stop,
            acked,
            writers,
            started: Instant::now(),
        }
    }

    /// Writes acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    pub async fn stop(self) -> anyhow::Result<StreamReport> {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = StreamReport {
            acked: Vec::new(),
            ack_times: Vec::new(),
            failed_attempts: 0,
            last_error: None,
            started: self.started,
        };
        for writer in self.writers {
            let log = writer
                .await
                .map_err(|e| anyhow::anyhow!("writer task: {e}"))?;
            report.failed_attempts += log.failed_attempts;
            report.last_error = report.last_error.or(log.last_error);
            for (key, at) in log.acked {
                report.acked.push(key);
                report.ack_times.push(at);
            }
        }
        report.ack_times.sort();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            url_query(&[("prefix", "a/b c"), ("keys_only", "true")]),
            "prefix=a%2Fb%20c&keys_only=true"
        );
    }

    #[test]
    fn keys_sort_in_write_order() {
        let k = keys("p", 1001);
        let mut sorted = k.clone();
        sorted.sort();
        assert_eq!(k, sorted);
        assert_eq!(k[1000], "p-001000");
    }
}
