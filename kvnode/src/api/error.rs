//! API errors and their HTTP form: status + `{"error": {code, message, leader}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kvapi::{ApiError as WireError, ErrorBody, ErrorCode, Member};

use crate::node::{NodeError, Reject};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub leader: Option<Member>,
    pub oldest_revision: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            leader: None,
            oldest_revision: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Internal, message.to_string())
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn with_leader(mut self, leader: Option<Member>) -> Self {
        self.leader = leader;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: WireError {
                code: self.code,
                message: self.message,
                leader: self.leader,
                oldest_revision: self.oldest_revision,
            },
        };
        (status, Json(body)).into_response()
    }
}

/// The one place a node's domain error gets its wire code.
impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let message = e.to_string();
        match e {
            NodeError::Invalid(_) => ApiError::bad_request(message),
            NodeError::NotFound(_) => ApiError::not_found(message),
            NodeError::Conflict(_) => ApiError::new(ErrorCode::PreconditionFailed, message),
            NodeError::NotInitialized => ApiError::new(ErrorCode::NotInitialized, message),
            NodeError::AlreadyInitialized(_) => ApiError::new(ErrorCode::AlreadyExists, message),
            NodeError::NoLeader => ApiError::new(ErrorCode::NoLeader, message),
            NodeError::Unavailable { leader, .. } => {
                ApiError::unavailable(message).with_leader(leader)
            }
            NodeError::Internal(_) => ApiError::internal(message),
            NodeError::Storage(e) => e.into(),
        }
    }
}

/// Why a request was not answered here: an error for the caller, or
/// "the leader must serve it" (`forward::resolve` replays it there).
#[derive(Debug)]
pub enum Rejection {
    Forward(Option<Member>),
    Error(ApiError),
}

impl From<ApiError> for Rejection {
    fn from(e: ApiError) -> Self {
        Rejection::Error(e)
    }
}

impl From<Reject> for Rejection {
    fn from(r: Reject) -> Self {
        match r {
            Reject::Forward(leader) => Rejection::Forward(leader),
            Reject::Failed(e) => Rejection::Error(e.into()),
        }
    }
}

impl From<NodeError> for Rejection {
    fn from(e: NodeError) -> Self {
        Rejection::Error(e.into())
    }
}

impl From<crate::store::StoreError> for Rejection {
    fn from(e: crate::store::StoreError) -> Self {
        Rejection::Error(e.into())
    }
}

/// What a handler step returns.
pub type Outcome<T> = Result<T, Rejection>;

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        if matches!(e, crate::store::StoreError::Installing) {
            return ApiError::unavailable(e.to_string());
        }
        tracing::error!(error = %e, "storage error");
        ApiError::internal(format!("storage: {e}"))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
