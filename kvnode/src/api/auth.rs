//! `/v1/auth/*`: authenticate, the auth switch, users and roles (etcd's
//! auth API over HTTP). Changes are raft commands, so every node holds the
//! same users and roles; reads are served from the local copy after a
//! read barrier, so a change is visible everywhere once acknowledged.
//! Who may call what is decided in `authz`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::response::Response;
use kvapi::{
    AuthChanged, AuthStatus, AuthenticateRequest, AuthenticateResponse, ErrorCode, PasswordRequest,
    Permission, PermissionKind, RoleAddRequest, RoleInfo, RoleList, UserAddRequest, UserInfo,
    UserList, WhoAmI,
};

use super::authz::{self, Caller};
use super::cluster::{admin, parse};
use super::error::ApiError;
use super::error::Outcome;
use super::kv::MAX_KEY_BYTES;
use super::{App, query_map};
use crate::auth::perm::GrantKind;
use crate::auth::{AuthError, AuthOp, AuthState, Grant, GrantEnd, password, token};
use crate::raft::types::{Command, Op, OpResult};

/// Longest accepted password: hashing cost grows with it.
const MAX_PASSWORD_BYTES: usize = 1024;
const MAX_NAME_BYTES: usize = 256;

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let code = match &e {
            AuthError::UserExists(_) | AuthError::RoleExists(_) => ErrorCode::AlreadyExists,
            AuthError::UserNotFound(_)
            | AuthError::RoleNotFound(_)
            | AuthError::RoleNotGranted { .. }
            | AuthError::PermissionNotGranted { .. } => ErrorCode::NotFound,
            AuthError::RootUserMissing | AuthError::RootNeeded => ErrorCode::PreconditionFailed,
            AuthError::RootRoleFixed => ErrorCode::BadRequest,
        };
        ApiError::new(code, e.to_string())
    }
}

fn validate_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{what} name must be 1 to {MAX_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

fn validate_password(p: &str) -> Result<(), ApiError> {
    if p.is_empty() || p.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::bad_request(format!(
            "password must be 1 to {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Hashes off the async threads, at most two at a time: argon2 is costly
/// by design, and a flood of logins must not starve raft of CPU.
async fn hash_password(app: &App, p: String) -> Result<String, ApiError> {
    let _slot = app
        .kdf_slots
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("shutting down"))?;
    tokio::task::spawn_blocking(move || password::hash(&p))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// Proposes one auth change as a caller that still holds root when it
/// applies; its refusal (decided at apply) is the error.
async fn change(app: &App, parts: &Parts, op: AuthOp) -> Outcome<AuthChanged> {
    let cmd = Command {
        success: vec![Op::Auth(op)],
        ..Command::default()
    };
    let res = authz::write(app, |auth| authz::allow_root(parts, auth), || cmd.clone()).await?;
    match res.results.into_iter().next() {
        Some(OpResult::Auth { error: None }) => Ok(AuthChanged {
            revision: app.node.db.auth().revision,
        }),
        Some(OpResult::Auth { error: Some(e) }) => Err(ApiError::from(e).into()),
        other => Err(
            ApiError::internal(format!("unexpected result of an auth change: {other:?}")).into(),
        ),
    }
}

/// The applied auth state after a read barrier (linearizable).
async fn read_state(app: &App) -> Outcome<Arc<AuthState>> {
    app.node.read_barrier().await?;
    Ok(app.node.db.auth())
}

fn status_of(a: &AuthState) -> AuthStatus {
    AuthStatus {
        enabled: a.enabled,
        revision: a.revision,
    }
}

/// A path segment counted from the end, percent-decoded.
fn segment(parts: &Parts, index_from_end: usize) -> Result<String, ApiError> {
    let raw = parts
        .uri
        .path()
        .rsplit('/')
        .nth(index_from_end)
        .unwrap_or("");
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request("name is not valid UTF-8"))
}

pub async fn authenticate(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, _, body| async move {
        let r: AuthenticateRequest = parse(&body, "authenticate request")?;
        let auth = read_state(&app).await?;
        if !auth.enabled {
            return Err(ApiError::new(
                ErrorCode::PreconditionFailed,
                "auth is not enabled: requests need no credentials",
            )
            .into());
        }
        let user = auth.users.get(&r.name);
        // An unknown user costs a hash too, so timing does not tell which
        // names exist.
        let phc = match user.and_then(|u| u.password_hash.clone()) {
            Some(h) => h,
            None => dummy_hash().await?,
        };
        let _slot = app
            .kdf_slots
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable("shutting down"))?;
        let password = r.password;
        let ok = tokio::task::spawn_blocking(move || password::verify(&phc, &password))
            .await
            .map_err(ApiError::internal)?;
        let Some(user) = user.filter(|u| ok && u.password_hash.is_some()) else {
            tracing::info!(user = %r.name, "authentication failed");
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "authentication failed: invalid user name or password",
            )
            .into());
        };
        let ttl = Duration::from_secs(app.node.config.auth_token_ttl);
        let token = token::mint(&auth.signing_key, &r.name, user.generation, ttl)
            .map_err(ApiError::internal)?;
        Ok(AuthenticateResponse {
            token,
            expires_in: ttl.as_secs(),
        })
    })
    .await
}

/// A hash of a random password nobody knows, made once per process.
async fn dummy_hash() -> Result<String, ApiError> {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_try_init(|| async {
            let p = format!("{:032x}", rand::random::<u128>());
            tokio::task::spawn_blocking(move || password::hash(&p))
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)
        })
        .await
        .cloned()
}

pub async fn status(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, _, _| async move {
        let a = read_state(&app).await?;
        Ok(status_of(&a))
    })
    .await
}

/// `GET /v1/auth/whoami`: the caller, its roles and the grants they add up
/// to, so that a client (the web console) can say what the user may read
/// instead of only answering 403. Any authenticated user, about itself.
pub async fn whoami(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let a = app.node.db.auth();
    super::json_response(&whoami_of(&a, authz::caller(&parts)))
}

fn whoami_of(a: &AuthState, caller: &Caller) -> WhoAmI {
    let everything = || Permission {
        permission: PermissionKind::Readwrite,
        key: String::new(),
        range_end: None,
        prefix: true,
    };
    let Caller::User { name, .. } = caller else {
        return WhoAmI {
            enabled: a.enabled,
            name: None,
            roles: Vec::new(),
            root: !a.enabled,
            permissions: if a.enabled {
                Vec::new()
            } else {
                vec![everything()]
            },
        };
    };
    let roles: Vec<String> = a
        .users
        .get(name)
        .map(|u| u.roles.iter().cloned().collect())
        .unwrap_or_default();
    let root = a.is_root(name);
    let permissions = if root {
        vec![everything()]
    } else {
        roles
            .iter()
            .filter_map(|r| a.roles.get(r))
            .flat_map(|r| r.grants.iter().map(wire_permission))
            .collect()
    };
    WhoAmI {
        enabled: a.enabled,
        name: Some(name.clone()),
        roles,
        root,
        permissions,
    }
}

pub async fn enable(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, parts, _| async move {
        let signing_key: [u8; 32] = rand::random();
        change(
            &app,
            &parts,
            AuthOp::Enable {
                signing_key: signing_key.to_vec(),
            },
        )
        .await?;
        tracing::info!("auth enabled");
        Ok(status_of(&app.node.db.auth()))
    })
    .await
}

pub async fn disable(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, parts, _| async move {
        change(&app, &parts, AuthOp::Disable).await?;
        tracing::info!("auth disabled");
        Ok(status_of(&app.node.db.auth()))
    })
    .await
}

pub async fn user_list(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, _, _| async move {
        let a = read_state(&app).await?;
        Ok(UserList {
            users: a.users.keys().cloned().collect(),
        })
    })
    .await
}

pub async fn user_add(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, parts, body| async move {
        let r: UserAddRequest = parse(&body, "user")?;
        validate_name("user", &r.name)?;
        for role in &r.roles {
            validate_name("role", role)?;
        }
        let password_hash = match r.password {
            Some(p) => {
                validate_password(&p)?;
                Some(hash_password(&app, p).await?)
            }
            None => None,
        };
        tracing::info!(user = %r.name, "adding user");
        change(
            &app,
            &parts,
            AuthOp::UserAdd {
                name: r.name,
                password_hash,
                roles: r.roles,
            },
        )
        .await
    })
    .await
}

pub async fn user_get(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, parts, _| async move {
        let name = segment(&parts, 0)?;
        let a = read_state(&app).await?;
        // Users may read their own account; other accounts need root.
        if let Caller::User { name: me, .. } = authz::caller(&parts)
            && *me != name
            && !a.is_root(me)
        {
            return Err(authz::denied(format!("user {me:?} may only read its own account")).into());
        }
        let u = a
            .users
            .get(&name)
            .ok_or(AuthError::UserNotFound(name.clone()))
            .map_err(ApiError::from)?;
        Ok(UserInfo {
            name,
            roles: u.roles.iter().cloned().collect(),
            has_password: u.password_hash.is_some(),
        })
    })
    .await
}

pub async fn user_delete(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, parts, _| async move {
        let name = segment(&parts, 0)?;
        tracing::info!(user = %name, "deleting user");
        change(&app, &parts, AuthOp::UserDelete { name }).await
    })
    .await
}

pub async fn user_password(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, parts, body| async move {
        let name = segment(&parts, 1)?;
        let r: PasswordRequest = parse(&body, "password request")?;
        let password_hash = match r.password {
            Some(p) => {
                validate_password(&p)?;
                Some(hash_password(&app, p).await?)
            }
            None => None,
        };
        tracing::info!(user = %name, "changing password");
        change(
            &app,
            &parts,
            AuthOp::UserPassword {
                name,
                password_hash,
            },
        )
        .await
    })
    .await
}

pub async fn user_grant_role(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, parts, _| async move {
        let role = segment(&parts, 0)?;
        let name = segment(&parts, 2)?;
        tracing::info!(user = %name, role = %role, "granting role");
        change(&app, &parts, AuthOp::UserGrantRole { name, role }).await
    })
    .await
}

pub async fn user_revoke_role(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, parts, _| async move {
        let role = segment(&parts, 0)?;
        let name = segment(&parts, 2)?;
        tracing::info!(user = %name, role = %role, "revoking role");
        change(&app, &parts, AuthOp::UserRevokeRole { name, role }).await
    })
    .await
}

pub async fn role_list(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, _, _| async move {
        let a = read_state(&app).await?;
        Ok(RoleList {
            roles: a.role_names(),
        })
    })
    .await
}

pub async fn role_add(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, parts, body| async move {
        let r: RoleAddRequest = parse(&body, "role")?;
        validate_name("role", &r.name)?;
        tracing::info!(role = %r.name, "adding role");
        change(&app, &parts, AuthOp::RoleAdd { name: r.name }).await
    })
    .await
}

pub async fn role_get(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, parts, _| async move {
        let name = segment(&parts, 0)?;
        let a = read_state(&app).await?;
        let permissions = if name == kvapi::ROOT {
            vec![Permission {
                permission: PermissionKind::Readwrite,
                key: String::new(),
                range_end: None,
                prefix: true,
            }]
        } else {
            a.roles
                .get(&name)
                .ok_or(AuthError::RoleNotFound(name.clone()))
                .map_err(ApiError::from)?
                .grants
                .iter()
                .map(wire_permission)
                .collect()
        };
        Ok(RoleInfo { name, permissions })
    })
    .await
}

pub async fn role_delete(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, parts, _| async move {
        let name = segment(&parts, 0)?;
        tracing::info!(role = %name, "deleting role");
        change(&app, &parts, AuthOp::RoleDelete { name }).await
    })
    .await
}

pub async fn role_grant(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, parts, body| async move {
        let name = segment(&parts, 1)?;
        let p: Permission = parse(&body, "permission")?;
        let grant = Grant {
            kind: match p.permission {
                PermissionKind::Read => GrantKind::Read,
                PermissionKind::Write => GrantKind::Write,
                PermissionKind::Readwrite => GrantKind::Readwrite,
            },
            end: grant_end(&p.key, p.range_end.as_deref(), p.prefix)?,
            key: p.key,
        };
        tracing::info!(role = %name, key = %grant.key, "granting permission");
        change(&app, &parts, AuthOp::RoleGrant { name, grant }).await
    })
    .await
}

pub async fn role_revoke(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, parts, _| async move {
        let name = segment(&parts, 1)?;
        let q = query_map(&parts.uri)?;
        let key = q
            .get("key")
            .cloned()
            .ok_or_else(|| ApiError::bad_request("revoking a permission takes key=K"))?;
        let prefix = super::parse_bool(&q, "prefix")?;
        let end = grant_end(&key, q.get("range_end").map(String::as_str), prefix)?;
        tracing::info!(role = %name, key = %key, "revoking permission");
        change(&app, &parts, AuthOp::RoleRevoke { name, key, end }).await
    })
    .await
}

/// The end of a permission's keys from its wire form, validated.
fn grant_end(key: &str, range_end: Option<&str>, prefix: bool) -> Result<GrantEnd, ApiError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("key is {} bytes; the limit is {MAX_KEY_BYTES}", key.len()),
        ));
    }
    match (range_end, prefix) {
        (Some(_), true) => Err(ApiError::bad_request(
            "a permission takes range_end or prefix, not both",
        )),
        (None, true) => Ok(GrantEnd::Prefix),
        (None, false) if key.is_empty() => Err(ApiError::bad_request(
            "a permission on one key needs a key; for every key use prefix with key \"\"",
        )),
        (None, false) => Ok(GrantEnd::Key),
        (Some(end), false) if end <= key => Err(ApiError::bad_request(format!(
            "empty range: key {key:?} is not below range_end {end:?}"
        ))),
        (Some(end), false) => Ok(GrantEnd::Range(end.to_owned())),
    }
}

fn wire_permission(g: &Grant) -> Permission {
    Permission {
        permission: match g.kind {
            GrantKind::Read => PermissionKind::Read,
            GrantKind::Write => PermissionKind::Write,
            GrantKind::Readwrite => PermissionKind::Readwrite,
        },
        key: g.key.clone(),
        range_end: match &g.end {
            GrantEnd::Range(e) => Some(e.clone()),
            _ => None,
        },
        prefix: g.end == GrantEnd::Prefix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_keys_read_as_key_prefix_or_range() {
        assert_eq!(grant_end("k", None, false).expect("key"), GrantEnd::Key);
        assert_eq!(grant_end("", None, true).expect("all"), GrantEnd::Prefix);
        assert_eq!(
            grant_end("a", Some("c"), false).expect("range"),
            GrantEnd::Range("c".into())
        );
        for (key, end, prefix) in [
            ("", None, false),
            ("a", Some("c"), true),
            ("c", Some("a"), false),
            ("a", Some("a"), false),
        ] {
            let e = grant_end(key, end, prefix).expect_err("invalid permission keys");
            assert_eq!(e.code, ErrorCode::BadRequest, "{key:?} {end:?} {prefix}");
        }
    }

    #[test]
    fn wire_form_round_trips() {
        let g = Grant {
            kind: GrantKind::Read,
            key: "app/".into(),
            end: GrantEnd::Prefix,
        };
        let p = wire_permission(&g);
        assert!(p.prefix && p.range_end.is_none());
        assert_eq!(
            grant_end(&p.key, p.range_end.as_deref(), p.prefix).expect("end"),
            g.end
        );
    }
}
