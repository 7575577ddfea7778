//! API errors and their HTTP form: status + `{"error": {code, message, leader}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kvclient::{ApiError as WireError, ErrorBody, ErrorCode, Member};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub leader: Option<Member>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            leader: None,
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
            },
        };
        (status, Json(body)).into_response()
    }
}

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
