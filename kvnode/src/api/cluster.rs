//! Cluster admin routes. Membership changes run on the leader (a follower
//! forwards them); `init` runs on the node it is sent to.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::time::{Duration, Instant};

use kvapi::{
    AddLearnerRequest, ClusterHealth, ClusterStatus, ForceNewClusterRequest,
    ForceNewClusterResponse, InitRequest, Member, MemberHealth, SetVotersRequest,
    TransferLeaderRequest,
};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::error::Rejection;
use super::{App, forward, json_response, read_body};
use crate::raft::types::MemberInfo;

const ADMIN_BODY_LIMIT: usize = 64 * 1024;

pub(super) fn parse<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid {what}: {e}")))
}

/// Reads the body, runs `f` on it and relays or forwards its outcome.
pub(super) async fn admin<F, Fut, T>(app: App, req: Request, f: F) -> Response
where
    F: FnOnce(App, axum::http::request::Parts, Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<T, Rejection>>,
    T: serde::Serialize,
{
    let (parts, body) = req.into_parts();
    let body = match read_body(body, ADMIN_BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match f(app.clone(), parts.clone(), body.clone()).await {
        Ok(v) => json_response(&v),
        Err(rej) => forward::resolve(&app, rej, &parts, body).await,
    }
}

pub async fn status(State(app): State<App>) -> Response {
    json_response(&app.node.status())
}

/// How long `health` waits for one member's answers.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /v1/cluster/health`: every member's `/healthz`, `/readyz` and own
/// status, probed from this node over the members' client URLs, at once.
/// A browser or a port-forward reaches one node; this is how it sees all.
/// Other nodes are asked with the caller's credentials.
pub async fn health(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let me = app.node.status();
    let token = super::authz::forward_token(&parts, &app.node.db.auth());
    let mut members: Vec<(Member, bool)> = me
        .membership
        .voters
        .iter()
        .map(|m| (m.clone(), true))
        .chain(me.membership.learners.iter().map(|m| (m.clone(), false)))
        .collect();
    if !members.iter().any(|(m, _)| m.id == me.id) {
        // Not (or not yet) a member: still show the node that answers.
        members.insert(
            0,
            (
                Member {
                    id: me.id,
                    info: kvapi::MemberInfo {
                        name: me.name.clone(),
                        ..kvapi::MemberInfo::default()
                    },
                },
                false,
            ),
        );
    }
    let probes = members.into_iter().map(|(m, voter)| {
        let app = app.clone();
        let token = token.clone();
        let me = me.clone();
        async move {
            if m.id == me.id {
                local_health(&app, m, voter, me)
            } else {
                probe(&app, m, voter, token.as_deref()).await
            }
        }
    });
    let members = futures::future::join_all(probes).await;
    json_response(&ClusterHealth {
        checked_by: app.node.id(),
        members,
    })
}

fn local_health(app: &App, m: Member, voter: bool, me: ClusterStatus) -> MemberHealth {
    let stopped = app.node.stopped();
    let ready = app.node.readiness();
    MemberHealth {
        id: m.id,
        info: m.info,
        voter,
        healthy: stopped.is_none(),
        ready: ready.is_ok(),
        reason: stopped.or(ready.err()),
        status: Some(me),
        rtt_ms: Some(0),
    }
}

async fn probe(app: &App, m: Member, voter: bool, token: Option<&str>) -> MemberHealth {
    let base = m.info.client_url.trim_end_matches('/').to_owned();
    let get = |path: &str| {
        let mut r = app.http.get(format!("{base}{path}")).timeout(PROBE_TIMEOUT);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let started = Instant::now();
    let (healthz, readyz, status) =
        tokio::join!(get("/healthz"), get("/readyz"), get("/v1/cluster/status"));
    let rtt_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut out = MemberHealth {
        id: m.id,
        info: m.info,
        voter,
        healthy: false,
        ready: false,
        reason: None,
        status: None,
        rtt_ms: None,
    };
    let healthz = match healthz {
        Ok(r) => r,
        Err(e) => {
            out.reason = Some(format!("unreachable: {}", reqwest_reason(&e)));
            return out;
        }
    };
    out.rtt_ms = Some(rtt_ms);
    out.healthy = healthz.status().is_success();
    if !out.healthy {
        out.reason = Some(error_message(healthz).await);
    }
    match readyz {
        Ok(r) if r.status().is_success() => out.ready = true,
        Ok(r) => {
            let why = error_message(r).await;
            out.reason.get_or_insert(why);
        }
        Err(e) => {
            out.reason
                .get_or_insert(format!("readyz: {}", reqwest_reason(&e)));
        }
    }
    if let Ok(r) = status
        && r.status().is_success()
    {
        out.status = r.json::<ClusterStatus>().await.ok();
    }
    out
}

fn reqwest_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {PROBE_TIMEOUT:?}")
    } else if e.is_connect() {
        "connection refused or no route".to_owned()
    } else {
        e.to_string()
    }
}

/// The message of a raftkv JSON error, or the HTTP status.
async fn error_message(r: reqwest::Response) -> String {
    let status = r.status();
    r.json::<kvapi::ErrorBody>()
        .await
        .map(|b| b.error.message)
        .unwrap_or_else(|_| format!("HTTP {status}"))
}

pub async fn init(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, _, body| async move {
        let req: InitRequest = if body.iter().all(u8::is_ascii_whitespace) {
            InitRequest::default()
        } else {
            parse(&body, "init request")?
        };
        Ok(app.node.init(req).await?)
    })
    .await
}

/// Runs on the node it is sent to, never forwarded: it is that node's data
/// that survives.
pub async fn force_new_cluster(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, _, body| async move {
        let r: ForceNewClusterRequest = parse(&body, "force-new-cluster request")?;
        let message = app.node.force_new_cluster(&r.cluster_id).await?;
        Ok(ForceNewClusterResponse {
            node_id: app.node.id(),
            cluster_id: r.cluster_id,
            restarting: true,
            message,
        })
    })
    .await
}

pub async fn add_learner(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, _, body| async move {
        let r: AddLearnerRequest = parse(&body, "learner")?;
        let info = MemberInfo {
            name: r.name,
            peer_url: r.peer_url,
            client_url: r.client_url,
        };
        Ok(app.node.add_learner(r.id, info).await?)
    })
    .await
}

pub async fn set_voters(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, _, body| async move {
        let r: SetVotersRequest = parse(&body, "voter set")?;
        Ok(app.node.set_voters(r.voters).await?)
    })
    .await
}

pub async fn remove_member(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, parts, _| async move {
        let raw = parts.uri.path().rsplit('/').next().unwrap_or("");
        let id: u64 = raw
            .parse()
            .map_err(|_| ApiError::bad_request(format!("member id {raw:?} is not an integer")))?;
        Ok(app.node.remove_member(id).await?)
    })
    .await
}

pub async fn transfer_leader(State(app): State<App>, req: Request) -> Response {
    admin(app, req, |app, _, body| async move {
        let r: TransferLeaderRequest = parse(&body, "transfer request")?;
        let leader = app.node.transfer_leader(r.to).await?;
        Ok(serde_json::json!({ "leader": leader }))
    })
    .await
}
