//! Wire types of the authentication and authorization API (`/v1/auth/*`),
//! modelled on etcd's: users with passwords, roles holding key-range
//! permissions, a built-in `root` role for cluster administration.

use serde::{Deserialize, Serialize};

/// The user name and role name with every right; `auth enable` needs a
/// user called `root` that holds the role `root`.
pub const ROOT: &str = "root";

/// `POST /v1/auth/authenticate`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticateRequest {
    pub name: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticateResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// `GET /v1/auth/status`, and the answer of enable/disable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStatus {
    pub enabled: bool,
    /// Advances by one with every change to users, roles or the switch.
    pub revision: u64,
}

/// `POST /v1/auth/users`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAddRequest {
    pub name: String,
    /// `None`: the user can only authenticate with a client certificate
    /// whose CN is its name (etcd's `--no-password`).
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `PUT /v1/auth/users/{name}/password`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordRequest {
    pub password: Option<String>,
}

/// `GET /v1/auth/users/{name}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub roles: Vec<String>,
    pub has_password: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserList {
    pub users: Vec<String>,
}

/// `POST /v1/auth/roles`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleAddRequest {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleList {
    pub roles: Vec<String>,
}

/// `GET /v1/auth/roles/{name}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleInfo {
    pub name: String,
    pub permissions: Vec<Permission>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PermissionKind {
    Read,
    Write,
    Readwrite,
}

impl PermissionKind {
    pub fn allows_read(self) -> bool {
        matches!(self, PermissionKind::Read | PermissionKind::Readwrite)
    }

    pub fn allows_write(self) -> bool {
        matches!(self, PermissionKind::Write | PermissionKind::Readwrite)
    }
}

/// A right on one key (`key`), a prefix (`key` + `prefix: true`; `""` is
/// every key) or a range (`key` up to, not including, `range_end`).
/// `POST /v1/auth/roles/{name}/permissions` takes one; revoking names the
/// same keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Permission {
    pub permission: PermissionKind,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prefix: bool,
}

/// The keys of a permission to revoke (query of
/// `DELETE /v1/auth/roles/{name}/permissions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionKeys {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prefix: bool,
}

/// `GET /v1/auth/whoami`: the caller and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// Whether auth is enabled; when it is not, everyone may do everything.
    pub enabled: bool,
    /// The user (absent with auth disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub roles: Vec<String>,
    /// Holds the root role (or auth is disabled).
    pub root: bool,
    /// The grants of all its roles (root: readwrite on every key).
    pub permissions: Vec<Permission>,
}

/// The answer of an auth change that returns nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthChanged {
    /// The auth revision after the change.
    pub revision: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_read_in_their_three_forms() {
        let p: Permission =
            serde_json::from_str(r#"{"permission":"read","key":"app/","prefix":true}"#)
                .expect("prefix");
        assert!(p.prefix && p.range_end.is_none());
        let p: Permission =
            serde_json::from_str(r#"{"permission":"readwrite","key":"a","range_end":"c"}"#)
                .expect("range");
        assert_eq!(p.range_end.as_deref(), Some("c"));
        let p: Permission =
            serde_json::from_str(r#"{"permission":"write","key":"k"}"#).expect("key");
        assert_eq!(
            serde_json::to_string(&p).expect("ser"),
            r#"{"permission":"write","key":"k"}"#
        );
        assert!(serde_json::from_str::<Permission>(r#"{"permission":"admin","key":"k"}"#).is_err());
    }
}
