//! PURE: operator-managed auth. With `spec.auth.enabled` (the default) the
//! operator keeps root's password in Secret `NAME-root` (made once, before
//! the cluster is initialized) and, as soon as the raft leader reports auth
//! off, takes one step: make the user root and turn auth on. The step comes
//! before any membership change, so a cluster is never scaled up open.
//!
//! The operator never turns auth off: `enabled: false` on a cluster whose
//! nodes require authentication is reported, not applied.

use kvclient::ClusterStatus;

use super::Step;
use crate::auth::NodeAuth;
use crate::build::TlsMode;
use crate::crd::{AuthState, KvClusterSpec};
use crate::observe::{Observed, ObservedPod};
use crate::reason::Reason;

#[derive(Debug, PartialEq)]
pub struct AuthPlan {
    /// Create Secret `NAME-root` with a new password (it does not exist).
    pub create_secret: bool,
    pub step: Option<Step>,
    pub state: Option<AuthState>,
    /// For the Degraded condition: auth is not what the spec asks.
    pub trouble: Option<(Reason, String)>,
}

/// `leader`: the raft leader of the initialized cluster, if any. `tls`:
/// how the pods run (the operator is root by its client certificate, so
/// without TLS it could lock itself out).
pub fn plan_auth(
    spec: &KvClusterSpec,
    observed: &Observed,
    tls: TlsMode,
    leader: Option<(&ObservedPod, &ClusterStatus)>,
) -> AuthPlan {
    let reported = leader.map(|(pod, _)| pod.auth());
    let state = match reported {
        Some(NodeAuth::Known(s)) if s.enabled => Some(AuthState::Enabled),
        Some(NodeAuth::Known(_)) if !spec.auth.enabled => Some(AuthState::Disabled),
        Some(NodeAuth::Unsupported) => Some(AuthState::Unsupported),
        _ if !spec.auth.enabled => Some(AuthState::Disabled),
        _ => Some(AuthState::Pending),
    };
    let mut plan = AuthPlan {
        create_secret: false,
        step: None,
        state,
        trouble: None,
    };
    if !spec.auth.enabled {
        if state == Some(AuthState::Enabled) {
            plan.trouble = Some((
                Reason::AuthChangeNotApplied,
                "spec.auth.enabled is false but the nodes require authentication; the operator \
                 never turns auth off (do it as root: POST /v1/auth/disable)"
                    .into(),
            ));
        }
        return plan;
    }
    if tls == TlsMode::Plaintext {
        plan.trouble = Some((
            Reason::AuthNotApplied,
            "spec.auth is on but the cluster runs without TLS, and the operator authenticates \
             to the nodes with its client certificate; auth stays off"
                .into(),
        ));
        return plan;
    }
    plan.create_secret = observed.root_password.is_none();
    match (reported, leader, &observed.root_password) {
        (Some(NodeAuth::Known(s)), Some((pod, _)), Some(password)) if !s.enabled => {
            if let Some(endpoint) = pod.endpoint() {
                plan.step = Some(Step::EnableAuth {
                    leader: endpoint.to_owned(),
                    pod: pod.name.clone(),
                    password: password.clone(),
                });
            }
        }
        (Some(NodeAuth::Unsupported), ..) => {
            plan.trouble = Some((
                Reason::AuthUnsupported,
                "spec.auth is on but the nodes have no auth API (GET /v1/auth/status is 404): \
                 an older kvnode image? Auth stays off"
                    .into(),
            ));
        }
        _ => {}
    }
    plan
}
