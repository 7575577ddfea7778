//! Who is calling, and may they: the `identify` middleware resolves the
//! caller once per request and applies the per-route rule (open, any user,
//! root); key routes then ask `allow` for the keys they touch.
//!
//! With auth disabled (the state every cluster starts in, as etcd) nothing
//! is checked. With it enabled the identity is, in this order:
//! 1. a token: `Authorization: Bearer <token>`, or `x-raftkv-token: <token>`
//!    for proxies that consume `Authorization` themselves (the Kubernetes
//!    API server's service proxy does);
//! 2. the CN of a verified client certificate, as etcd.
//!
//! A bad or expired token is 401 even where a certificate would also have
//! identified the caller: a client that sends a token wants to be that user.

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kvapi::ErrorCode;

use super::App;
use super::error::{ApiError, Outcome};
use crate::auth::token::{self, TokenError};
use crate::auth::{Access, AuthState, KeySpan};
use crate::listener::ClientCertName;
use crate::raft::types::{Command, CommandResult};

pub const TOKEN_HEADER: &str = "x-raftkv-token";

/// The caller of a request, as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Auth is disabled: everyone may do everything.
    AuthOff,
    /// No credentials (only open routes get this far).
    Anonymous,
    /// `token`: the token it authenticated with (forwarded as is); `None`
    /// when a client certificate identified it.
    User { name: String, token: Option<String> },
}

/// The auth revision `identify` resolved the caller against (a request
/// extension, with auth enabled).
#[derive(Debug, Clone, Copy)]
struct ResolvedAt(u64);

/// The rule of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Open,
    /// Any authenticated user; key routes check keys in the handler.
    User,
    Root,
}

fn rule(app: &App, method: &Method, path: &str) -> Rule {
    match path {
        "/healthz" | "/readyz" | "/version" | "/v1/auth/authenticate" | "/v1/auth/status" => {
            Rule::Open
        }
        "/metrics" if !app.node.config.metrics_auth => Rule::Open,
        "/metrics" | "/v1/cluster/status" | "/v1/cluster/health" | "/v1/auth/whoami" => Rule::User,
        // The console's static files: it asks for credentials itself.
        p if p == "/ui" || p.starts_with("/ui/") => Rule::Open,
        // Reading one's own account needs no root.
        p if method == Method::GET && p.strip_prefix("/v1/auth/users/").is_some() => Rule::User,
        // A snapshot holds every key and the users' password hashes.
        "/v1/snapshot" => Rule::Root,
        p if p.starts_with("/v1/cluster/") || p.starts_with("/v1/auth/") => Rule::Root,
        _ => Rule::User,
    }
}

fn unauthenticated(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, msg)
}

pub fn denied(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::PermissionDenied, msg)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        return Some(
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or(v)
                .trim(),
        );
    }
    headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The caller of a request under an enabled `auth`.
fn resolve(auth: &AuthState, headers: &HeaderMap, cert: Option<&str>) -> Result<Caller, ApiError> {
    if let Some(t) = bearer(headers) {
        let claims = token::verify(&auth.signing_key, t).map_err(|e| match e {
            TokenError::Expired => unauthenticated("token expired; authenticate again"),
            _ => unauthenticated("invalid token; authenticate again"),
        })?;
        return match auth.users.get(&claims.sub) {
            None => Err(unauthenticated(format!(
                "user {:?} of this token no longer exists",
                claims.sub
            ))),
            Some(u) if u.generation != claims.generation => Err(unauthenticated(
                "token retired by a password change; authenticate again",
            )),
            Some(_) => Ok(Caller::User {
                name: claims.sub,
                token: Some(t.to_owned()),
            }),
        };
    }
    if let Some(cn) = cert {
        if !auth.users.contains_key(cn) {
            return Err(unauthenticated(format!(
                "client certificate CN {cn:?} is not a user"
            )));
        }
        return Ok(Caller::User {
            name: cn.to_owned(),
            token: None,
        });
    }
    Ok(Caller::Anonymous)
}

/// Resolves the caller and applies the route's rule.
pub async fn identify(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let auth = app.node.db.auth();
    let caller = if auth.enabled {
        let cert = req
            .extensions()
            .get::<ClientCertName>()
            .and_then(|c| c.0.as_deref());
        let route_rule = rule(&app, req.method(), req.uri().path());
        match (resolve(&auth, req.headers(), cert), route_rule) {
            (Ok(c), Rule::Open) => c,
            (Err(_), Rule::Open) => Caller::Anonymous,
            (Err(e), _) => return e.into_response(),
            (Ok(Caller::Anonymous | Caller::AuthOff), _) => {
                return unauthenticated(
                    "authentication required: send a token (POST /v1/auth/authenticate) \
                     or a client certificate",
                )
                .into_response();
            }
            (Ok(Caller::User { name, .. }), Rule::Root) if !auth.is_root(&name) => {
                return denied(format!("user {name:?} does not have the root role"))
                    .into_response();
            }
            (Ok(c), _) => c,
        }
    } else {
        Caller::AuthOff
    };
    if auth.enabled {
        req.extensions_mut().insert(ResolvedAt(auth.revision));
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

pub fn caller(parts: &Parts) -> &Caller {
    static ANONYMOUS: Caller = Caller::Anonymous;
    parts.extensions.get::<Caller>().unwrap_or(&ANONYMOUS)
}

/// What a request touches.
#[derive(Debug, Clone)]
pub struct Need {
    pub access: Access,
    pub span: KeySpan,
    /// For the error message: the key or range as the client named it.
    pub what: String,
}

impl Need {
    pub fn key(access: Access, key: &str) -> Self {
        Need {
            access,
            span: KeySpan::key(key),
            what: format!("key {key:?}"),
        }
    }
}

/// The user a request acts as under `auth`, resolved from its credentials
/// again rather than taken from `identify`: `auth` may be newer than the
/// state `identify` saw (after a read barrier, or on a retry after the auth
/// state moved), and a token retired or a user deleted since must count.
/// `None` when auth is disabled in `auth`.
fn acting_user(parts: &Parts, auth: &AuthState) -> Result<Option<String>, ApiError> {
    if !auth.enabled {
        return Ok(None);
    }
    let cert = parts
        .extensions
        .get::<ClientCertName>()
        .and_then(|c| c.0.as_deref());
    // `identify` resolved the caller against this very state: reuse that
    // rather than verify the token a second time on every write.
    if parts
        .extensions
        .get::<ResolvedAt>()
        .is_some_and(|r| r.0 == auth.revision)
        && let Caller::User { name, .. } = caller(parts)
    {
        return Ok(Some(name.clone()));
    }
    match resolve(auth, &parts.headers, cert)? {
        Caller::User { name, .. } => Ok(Some(name)),
        Caller::AuthOff | Caller::Anonymous => Err(unauthenticated("authentication required")),
    }
}

/// Refuses (401/403) unless the caller may do all of `needs` as `auth`
/// stands: a request that touches one forbidden key is refused whole.
pub fn allow(parts: &Parts, auth: &AuthState, needs: &[Need]) -> Result<(), ApiError> {
    let Some(name) = acting_user(parts, auth)? else {
        return Ok(());
    };
    for n in needs {
        if !auth.allows(&name, n.access, &n.span) {
            let verb = match n.access {
                Access::Read => "read",
                Access::Write => "write",
            };
            return Err(denied(format!("user {name:?} may not {verb} {}", n.what)));
        }
    }
    Ok(())
}

/// Refuses (401/403) unless the caller holds the root role as `auth`
/// stands (anyone may while auth is disabled).
pub fn allow_root(parts: &Parts, auth: &AuthState) -> Result<(), ApiError> {
    match acting_user(parts, auth)? {
        Some(name) if !auth.is_root(&name) => {
            Err(denied(format!("user {name:?} does not have the root role")))
        }
        _ => Ok(()),
    }
}

/// How often a write is judged again because the auth state moved between
/// the check and the apply; more in a row means auth is being changed
/// faster than writes can land, and the client is told to retry.
const AUTH_ATTEMPTS: usize = 5;

/// Proposes the command `build` makes once `check` allows it against this
/// node's applied auth state, stamped with that state's revision. If the
/// auth state has moved on by the time the command applies (this node was
/// behind, or a change committed in between), the state machine refuses
/// it unexecuted; by then this node has applied the newer state, so the
/// request is simply judged again. No write is ever admitted by rules
/// older than the ones it applies under.
pub async fn write<C, B>(app: &App, check: C, build: B) -> Outcome<CommandResult>
where
    C: Fn(&AuthState) -> Result<(), ApiError>,
    B: Fn() -> Command,
{
    for _ in 0..AUTH_ATTEMPTS {
        let auth = app.node.db.auth();
        check(&auth)?;
        let mut cmd = build();
        cmd.auth_revision = Some(auth.revision);
        let res = app.node.write(cmd).await?;
        if !res.auth_stale {
            return Ok(res);
        }
        tracing::debug!(
            checked = auth.revision,
            "auth changed before the write applied; judging it again"
        );
    }
    Err(
        ApiError::unavailable("the auth state kept changing while this write was proposed; retry")
            .into(),
    )
}

/// The credentials a forwarded request carries: the caller's own token, or
/// for a caller identified by certificate (which the leader cannot see) a
/// short-lived token minted for it here.
pub fn forward_token(parts: &Parts, auth: &AuthState) -> Option<String> {
    match caller(parts) {
        Caller::User { token: Some(t), .. } => Some(t.clone()),
        Caller::User { name, token: None } => {
            let generation = auth.users.get(name)?.generation;
            token::mint(
                &auth.signing_key,
                name,
                generation,
                std::time::Duration::from_secs(60),
            )
            .ok()
        }
        Caller::AuthOff | Caller::Anonymous => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthOp;

    fn state() -> AuthState {
        let mut s = AuthState::default();
        for name in ["root", "alice"] {
            s.apply(AuthOp::UserAdd {
                name: name.into(),
                password_hash: None,
                roles: if name == "root" {
                    vec!["root".into()]
                } else {
                    vec![]
                },
            })
            .expect("user");
        }
        s.apply(AuthOp::Enable {
            signing_key: vec![9; 32],
        })
        .expect("enable");
        s
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn tokens_come_before_certificates_and_bad_ones_are_refused() {
        let s = state();
        let gen_alice = s.users["alice"].generation;
        let t = token::mint(
            &s.signing_key,
            "alice",
            gen_alice,
            std::time::Duration::from_secs(60),
        )
        .expect("mint");
        let by_token = resolve(
            &s,
            &headers(&[("authorization", &format!("Bearer {t}"))]),
            Some("root"),
        )
        .expect("token");
        assert_eq!(
            by_token,
            Caller::User {
                name: "alice".into(),
                token: Some(t.clone())
            }
        );
        let by_header = resolve(&s, &headers(&[(TOKEN_HEADER, &t)]), None).expect("x-raftkv-token");
        assert!(matches!(by_header, Caller::User { name, .. } if name == "alice"));
        let bad = resolve(
            &s,
            &headers(&[("authorization", "Bearer nope")]),
            Some("root"),
        );
        assert_eq!(bad.expect_err("bad token").code, ErrorCode::Unauthenticated);
        let cert = resolve(&s, &HeaderMap::new(), Some("root")).expect("cert");
        assert_eq!(
            cert,
            Caller::User {
                name: "root".into(),
                token: None
            }
        );
        let stranger = resolve(&s, &HeaderMap::new(), Some("kv-0"));
        assert_eq!(
            stranger.expect_err("unknown CN").code,
            ErrorCode::Unauthenticated
        );
        assert_eq!(
            resolve(&s, &HeaderMap::new(), None).expect("none"),
            Caller::Anonymous
        );
    }

    #[test]
    fn a_password_change_retires_older_tokens() {
        let mut s = state();
        let old = token::mint(
            &s.signing_key,
            "alice",
            s.users["alice"].generation,
            std::time::Duration::from_secs(60),
        )
        .expect("mint");
        s.apply(AuthOp::UserPassword {
            name: "alice".into(),
            password_hash: Some("x".into()),
        })
        .expect("passwd");
        let r = resolve(&s, &headers(&[(TOKEN_HEADER, &old)]), None);
        assert_eq!(r.expect_err("retired").code, ErrorCode::Unauthenticated);
    }
}
