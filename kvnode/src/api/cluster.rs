//! Cluster admin routes. Membership changes run on the leader (a follower
//! forwards them); `init` runs on the node it is sent to.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kvapi::{
    AddLearnerRequest, ForceNewClusterRequest, ForceNewClusterResponse, InitRequest,
    SetVotersRequest, TransferLeaderRequest,
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
