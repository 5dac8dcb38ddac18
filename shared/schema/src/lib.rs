//! convo's schema: the types every part shares, their validation rules, the
//! wire formats of API bodies and queue messages, and the error codes.
//!
//! This crate does no I/O and depends on no runtime, store or AWS crate: the
//! functions, the domain and every adapter agree on the shapes defined here.

#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

pub mod api;
pub mod commands;
pub mod error;
pub mod events;
pub mod identity;
pub mod limits;
pub mod model;
pub mod queries;
pub mod sealed;
pub mod validate;

pub use error::{ErrorCode, ValidationError};
pub use model::*;
pub use sealed::{Sealed, SealedFields};

/// Timestamps are UTC, serialized as RFC 3339 with millisecond precision.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
/// A free-form JSON object attached to conversations and messages.
pub type Metadata = serde_json::Map<String, serde_json::Value>;
