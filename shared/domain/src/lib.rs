//! convo's domain: the rules every function applies and the ports through
//! which it reaches the outside world (store, queues, clock, ids, moderator,
//! title generator).
//!
//! Handlers decode an event, call into this crate, and encode the result.
//! This crate must not depend on any AWS service crate, HTTP framework or
//! database (aws-lc-rs, a cryptography library, is not one): adapters
//! implement the traits in [`ports`].

pub mod crypto;
pub mod cursor;
pub mod deps;
pub mod erasure;
pub mod error;
pub mod events;
pub mod export;
pub mod model;
pub mod moderation;
pub mod outbox;
pub mod pager;
pub mod persist;
pub mod ports;
pub mod screening;
pub mod sealing;
pub mod service;
pub mod store_rules;
pub mod sweep;
pub mod titles;
pub mod tokens;
pub mod wordlists;

pub use deps::{ApiDeps, Config, Deps};
pub use deps::{SystemClock, UlidSource};
pub use error::DomainError;
pub use ports::*;
