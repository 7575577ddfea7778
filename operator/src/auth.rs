//! Operator-managed authentication: root's password (generated once, kept
//! in Secret `NAME-root`), what a node says about auth, and the calls that
//! turn it on. Whether to turn it on is the planner's decision
//! (`Step::EnableAuth`); this is the I/O.
//!
//! The operator itself never uses the password: its client certificate has
//! CN `root`, which the nodes take as the user root once auth is on.

use std::fmt;

use kvclient::{AuthStatus, ClientError, ErrorCode, ROOT, UserAddRequest};
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
/// auth on, through `node` (a client for the leader; followers forward).
/// Each call is idempotent, so a repeat after a crash or a lost answer is
/// harmless.
pub async fn enable_root(node: &kvclient::Client, password: &Password) -> Result<(), ClientError> {
    if node.auth_status().await?.enabled {
        return Ok(());
    }
    let user = UserAddRequest {
        name: ROOT.into(),
        password: Some(password.expose().to_owned()),
        roles: vec![ROOT.into()],
    };
    match node.user_add(&user).await {
        // Made by an earlier attempt (or by hand): enabling checks that
        // root holds the role root.
        Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => {}
        other => {
            other?;
        }
    }
    node.auth_enable().await.map(drop)
}

/// What `GET /v1/auth/status` answered, in the planner's terms.
pub async fn node_auth(node: &kvclient::Client) -> NodeAuth {
    match node.auth_status().await {
        Ok(status) => NodeAuth::Known(status),
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
