//! A typed HTTP client for one raftkv cluster. It tries each endpoint in turn
//! and retries retryable failures (transport errors, `no_leader`,
//! `unavailable`) with capped exponential backoff.

use std::time::Duration;

use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::*;

/// Everything except unreserved characters is escaped in a key path segment.
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an API error.
    #[error("{endpoint}: {} ({}): {}", .error.code_str(), .status, .error.message)]
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
}

impl ApiError {
    fn code_str(&self) -> String {
        serde_json::to_value(self.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

impl ClientError {
    pub fn retryable(&self) -> bool {
        match self {
            ClientError::Api { error, .. } => error.code.retryable(),
            ClientError::Transport { .. } => true,
            ClientError::Unexpected { status, .. } => *status >= 500,
            ClientError::NoEndpoints | ClientError::BadEndpoint(_) => false,
        }
    }

    /// The API error code, if the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { error, .. } => Some(error.code),
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

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// How many full passes over the endpoints a retryable call makes.
    attempts: u32,
    backoff: Duration,
}

impl Client {
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<Self, ClientError> {
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
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|source| ClientError::Transport {
                endpoint: endpoints[0].clone(),
                source,
            })?;
        Ok(Client {
            http,
            endpoints,
            attempts: 5,
            backoff: Duration::from_millis(100),
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
        self.http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|source| ClientError::Transport {
                endpoint: self.endpoints[0].clone(),
                source,
            })?;
        Ok(self)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
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

    async fn put_with(
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

    /// `/healthz` of the first endpoint that answers.
    pub async fn health(&self) -> Result<(), ClientError> {
        self.call(Method::GET, "/healthz", &[], Body::None)
            .await
            .map(|_| ())
    }

    /// `/readyz`: `Ok(Err(reason))` when the node answers 503.
    pub async fn ready(&self) -> Result<Result<(), String>, ClientError> {
        match self.call(Method::GET, "/readyz", &[], Body::None).await {
            Ok(_) => Ok(Ok(())),
            Err(ClientError::Api {
                error, status: 503, ..
            }) => Ok(Err(error.message)),
            Err(e) => Err(e),
        }
    }

    /// `GET /version`: the node's crate and API version.
    pub async fn version(&self) -> Result<VersionResponse, ClientError> {
        self.call_json(Method::GET, "/version", &[], Body::None)
            .await
    }

    pub async fn metrics(&self) -> Result<String, ClientError> {
        let (_, body) = self.call(Method::GET, "/metrics", &[], Body::None).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body,
    ) -> Result<T, ClientError> {
        let (_, bytes) = self.call(method, path, query, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            endpoint: self.endpoints[0].clone(),
            status: 200,
            body: format!("undecodable JSON: {e}"),
        })
    }

    /// Runs the request against each endpoint in turn until one succeeds or
    /// a non-retryable error comes back.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body,
    ) -> Result<(reqwest::header::HeaderMap, Bytes), ClientError> {
        let mut last = ClientError::NoEndpoints;
        let mut delay = self.backoff;
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            for endpoint in &self.endpoints {
                match self
                    .call_once(endpoint, method.clone(), path, query, &body)
                    .await
                {
                    Ok(ok) => return Ok(ok),
                    Err(e) if e.retryable() => last = e,
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
    ) -> Result<(reqwest::header::HeaderMap, Bytes), ClientError> {
        let transport = |source| ClientError::Transport {
            endpoint: endpoint.to_owned(),
            source,
        };
        let mut req = self
            .http
            .request(method, format!("{endpoint}{path}"))
            .query(query);
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
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody { error }) => Err(ClientError::Api {
                endpoint: endpoint.to_owned(),
                status: status.as_u16(),
                error,
            }),
            Err(_) => Err(ClientError::Unexpected {
                endpoint: endpoint.to_owned(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            }),
        }
    }
}

enum Body {
    None,
    Raw(Bytes),
    Json(Bytes),
}

fn json_body<T: Serialize>(v: &T) -> Body {
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
