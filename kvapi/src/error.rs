//! The error body every failed request carries, and its codes.

use serde::{Deserialize, Serialize};

use crate::Member;

/// Error codes of the API, each with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    NotFound,
    PreconditionFailed,
    TooLarge,
    NotInitialized,
    NoLeader,
    Unavailable,
    Internal,
    /// No credentials, or a token that is invalid or expired (401).
    Unauthenticated,
    /// Authenticated, but not allowed to do this (403).
    PermissionDenied,
    /// The user or role exists already (409).
    AlreadyExists,
    /// A watch asked for revisions this node no longer keeps (410);
    /// `oldest_revision` says where its history starts.
    Compacted,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::PreconditionFailed => 412,
            ErrorCode::TooLarge => 413,
            ErrorCode::NotInitialized | ErrorCode::NoLeader | ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::AlreadyExists => 409,
            ErrorCode::Compacted => 410,
        }
    }

    /// The code as it appears on the wire (`"no_leader"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NotInitialized => "not_initialized",
            ErrorCode::NoLeader => "no_leader",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Compacted => "compacted",
        }
    }

    /// Whether a client may retry the same request (possibly elsewhere).
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::NoLeader | ErrorCode::Unavailable | ErrorCode::NotInitialized
        )
    }
}

/// `{"error": {...}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ApiError,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<Member>,
    /// With `compacted`: the oldest revision the node can still watch from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_revision: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_is_the_serialized_name() {
        use ErrorCode::*;
        let all = [
            BadRequest,
            NotFound,
            PreconditionFailed,
            TooLarge,
            NotInitialized,
            NoLeader,
            Unavailable,
            Internal,
            Unauthenticated,
            PermissionDenied,
            AlreadyExists,
            Compacted,
        ];
        for code in all {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
