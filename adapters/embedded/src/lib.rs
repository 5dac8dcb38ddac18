//! Embedded adapters: the conversation store on redb (on disk, or in memory
//! for tests) and durable in-process queues with SQS semantics (FIFO groups,
//! deduplication, redelivery with a bounded receive count, a dead-letter
//! list). They let the whole system run on one machine with no AWS account
//! and no emulator.
//!
//! Implements the ports of `convo-domain`; depends on no AWS service crate (aws-lc-rs signs its webhooks).

mod db;
pub mod keys;
pub mod queue;
pub mod store;

pub mod net;
pub mod webhooks;

pub use db::{compact_database, open_database};
pub use queue::{Backoff, EmbeddedQueue, QueueKind, QueueStats, Received};
pub use store::EmbeddedStore;
