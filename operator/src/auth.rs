//! Operator-managed authentication: root's password (generated once, kept
//! in Secret `NAME-root`), what a node says about auth, and the calls that
//! turn it on. Whether to turn it on is the planner's decision
//! (`Step::EnableAuth`); this is the I/O.
//!
//! The operator itself never uses the password: its client certificate has
//! CN `root`, which the nodes take as the user root once auth is on.

use std::fmt;

use kvclient::{AuthStatus, ClientError, ErrorBody, ErrorCode, ROOT, UserAddRequest};
use rand::Rng as _;

/// Characters of a generated password: letters and digits, so it survives
/// shells, URLs and YAML unquoted.
const PASSWORD_LEN: usize = 32;

/// A password. `Debug` prints nothing of it, so a plan, a step or an error
/// can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: String) -> Password {
        Password(password)
    }

    /// 32 random letters and digits (about 190 bits).
    pub fn generate() -> Password {
        Password(
            rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .take(PASSWORD_LEN)
                .map(char::from)
                .collect(),
        )
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// `GET /v1/auth/status` of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeAuth {
    /// Not asked (auth not wanted) or no answer.
    Unknown,
    /// 404: a kvnode without the auth API.
    Unsupported,
    Known(AuthStatus),
}

/// Makes the user root (holding the role root) with `password` and turns
/// auth on, through `endpoint` (the leader; followers forward). Each call
/// is idempotent, so a repeat after a crash or a lost answer is harmless.
pub async fn enable_root(
    http: &reqwest::Client,
    endpoint: &str,
    password: &Password,
) -> Result<(), ClientError> {
    let status: AuthStatus = call(
        http,
        endpoint,
        reqwest::Method::GET,
        "/v1/auth/status",
        None,
    )
    .await
    .and_then(|body| decode(endpoint, &body))?;
    if status.enabled {
        return Ok(());
    }
    let user = UserAddRequest {
        name: ROOT.into(),
        password: Some(password.expose().to_owned()),
        roles: vec![ROOT.into()],
    };
    let body = serde_json::to_value(&user).unwrap_or_default();
    match call(
        http,
        endpoint,
        reqwest::Method::POST,
        "/v1/auth/users",
        Some(body),
    )
    .await
    {
        // Made by an earlier attempt (or by hand): enabling checks that
        // root holds the role root.
        Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => {}
        other => drop(other?),
    }
    call(
        http,
        endpoint,
        reqwest::Method::POST,
        "/v1/auth/enable",
        Some(serde_json::json!({})),
    )
    .await
    .map(drop)
}

/// One request; the body of a 2xx, kvnode's error otherwise.
async fn call(
    http: &reqwest::Client,
    endpoint: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<bytes::Bytes, ClientError> {
    let transport = |source| ClientError::Transport {
        endpoint: endpoint.to_owned(),
        source,
    };
    let mut request = http.request(method, format!("{endpoint}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(transport)?;
    if (200..300).contains(&status) {
        return Ok(bytes);
    }
    Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(ErrorBody { error }) => ClientError::Api {
            endpoint: endpoint.to_owned(),
            status,
            error,
        },
        Err(_) => ClientError::Unexpected {
            endpoint: endpoint.to_owned(),
            status,
            body: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        },
    })
}

fn decode<T: serde::de::DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Unexpected {
        endpoint: endpoint.to_owned(),
        status: 200,
        body: format!("undecodable ({e}): {}", String::from_utf8_lossy(body)),
    })
}

/// What `GET /v1/auth/status` answered, in the planner's terms.
pub async fn node_auth(http: &reqwest::Client, endpoint: &str) -> NodeAuth {
    match call(
        http,
        endpoint,
        reqwest::Method::GET,
        "/v1/auth/status",
        None,
    )
    .await
    {
        Ok(body) => decode(endpoint, &body).map_or(NodeAuth::Unknown, NodeAuth::Known),
        Err(ClientError::Api { status: 404, .. } | ClientError::Unexpected { status: 404, .. }) => {
            NodeAuth::Unsupported
        }
        Err(_) => NodeAuth::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_32_alphanumerics_and_differ() {
        let (a, b) = (Password::generate(), Password::generate());
        assert_eq!(a.expose().len(), 32);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_password_never_prints() {
        let p = Password::new("hunter2hunter2".into());
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
