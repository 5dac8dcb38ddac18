//! Error codes and the validation error shared by every layer.

use serde::Serialize;

/// Every error code the API can answer with. The HTTP status of each lives
/// here too, so that the mapping exists in exactly one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    ValidationFailed,
    MalformedJson,
    InvalidPhoneNumber,
    InvalidCursor,
    PayloadTooLarge,
    Unauthorized,
    /// A valid token without the right (the deep health needs an operator).
    Forbidden,
    ConversationNotFound,
    MessageNotFound,
    /// No erasure job of this owner has that id.
    ErasureNotFound,
    RouteNotFound,
    MethodNotAllowed,
    ConversationEnded,
    ConversationNotEnded,
    ConversationNotFlagged,
    IdempotencyKeyReused,
    RequestInProgress,
    RateLimited,
    DependencyUnavailable,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::ValidationFailed
            | ErrorCode::MalformedJson
            | ErrorCode::InvalidPhoneNumber
            | ErrorCode::InvalidCursor => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::ConversationNotFound
            | ErrorCode::MessageNotFound
            | ErrorCode::ErasureNotFound
            | ErrorCode::RouteNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::ConversationEnded
            | ErrorCode::ConversationNotEnded
            | ErrorCode::ConversationNotFlagged
            | ErrorCode::IdempotencyKeyReused
            | ErrorCode::RequestInProgress => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::DependencyUnavailable => 503,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::InvalidPhoneNumber => "invalid_phone_number",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ConversationNotFound => "conversation_not_found",
            ErrorCode::MessageNotFound => "message_not_found",
            ErrorCode::ErasureNotFound => "erasure_not_found",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::ConversationEnded => "conversation_ended",
            ErrorCode::ConversationNotEnded => "conversation_not_ended",
            ErrorCode::ConversationNotFlagged => "conversation_not_flagged",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::RequestInProgress => "request_in_progress",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::DependencyUnavailable => "dependency_unavailable",
            ErrorCode::Internal => "internal_error",
        }
    }
}

/// Bad input, found before anything is changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub code: ErrorCode,
    pub message: String,
    /// The offending field as a JSON path such as `messages[2].content`.
    pub field: Option<String>,
}

impl ValidationError {
    pub fn new(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, field, message)
    }

    pub fn too_large(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PayloadTooLarge, field, message)
    }
}
