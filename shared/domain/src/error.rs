//! The domain's error type. Adapters map their failures into [`StoreError`]
//! and [`QueueError`]; the HTTP edge maps [`DomainError`] to an answer.

use convo_schema::{ErrorCode, ValidationError};

use crate::ports::{QueueError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("conversation not found")]
    NotFound,
    #[error("no such message in this conversation")]
    MessageNotFound,
    #[error("no such erasure")]
    ErasureNotFound,
    #[error("{1}")]
    Conflict(ErrorCode, String),
    #[error("too many requests; retry after {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    #[error("{0}")]
    Forbidden(String),
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl DomainError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DomainError::Validation(v) => v.code,
            DomainError::NotFound => ErrorCode::ConversationNotFound,
            DomainError::MessageNotFound => ErrorCode::MessageNotFound,
            DomainError::ErasureNotFound => ErrorCode::ErasureNotFound,
            DomainError::Conflict(code, _) => *code,
            DomainError::RateLimited { .. } => ErrorCode::RateLimited,
            DomainError::Forbidden(_) => ErrorCode::Forbidden,
            DomainError::Unavailable(_) => ErrorCode::DependencyUnavailable,
            DomainError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn ended() -> Self {
        DomainError::Conflict(
            ErrorCode::ConversationEnded,
            "the conversation has ended; start a new one".into(),
        )
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidCursor => DomainError::Validation(ValidationError::new(
                ErrorCode::InvalidCursor,
                "cursor",
                "cursor is not one this endpoint issued",
            )),
            StoreError::Conflict(what) => DomainError::Internal(format!("unresolved write conflict: {what}")),
            StoreError::Unavailable(what) => DomainError::Unavailable(what),
            StoreError::Corrupt(what) => DomainError::Internal(what),
        }
    }
}

impl From<QueueError> for DomainError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Unavailable(what) => DomainError::Unavailable(what),
            QueueError::TooLarge(size) => DomainError::Validation(ValidationError::too_large(
                "messages",
                format!("the request is {size} bytes once encoded; the queue takes at most 256 KiB"),
            )),
        }
    }
}

/// A key ring's failure as the domain answers it.
pub(crate) fn key_error(e: crate::ports::KeyError) -> DomainError {
    match e {
        crate::ports::KeyError::Unavailable(m) => DomainError::Unavailable(m),
        crate::ports::KeyError::Corrupt(m) => DomainError::Internal(m),
    }
}
