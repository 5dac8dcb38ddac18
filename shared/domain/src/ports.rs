//! The ports: what the domain needs from the outside world. Adapters (the
//! embedded ones for local runs and tests, the AWS ones for Lambda) implement
//! them; the domain and the handlers see only these traits.

use std::collections::HashMap;

use async_trait::async_trait;
use convo_schema::commands::{TitleJob, WriteCommand};
use convo_schema::events::{CloudEvent, EventType};
use convo_schema::{FlagStatus, Message, SafetyVerdict, Timestamp, UserStats};
use serde::Serialize;

pub use crate::model::*;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentHealth {
    pub name: String,
    pub ok: bool,
    #[serde(flatten)]
    pub figures: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum StoreError {
    /// A conditional write lost a race (version moved, key taken).
    #[error("write conflict: {0}")]
    Conflict(String),
    /// A cursor that this store did not issue for this scope.
    #[error("invalid cursor")]
    InvalidCursor,
    /// The store could not be reached or refused for now; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("corrupt item: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("message of {0} bytes is too large for the queue")]
    TooLarge(usize),
}

/// The conversation items: created with their (agent, user) pair, read,
/// replaced under a version, removed. Carries personal data (sealed by
/// `sealing::SealedStore`).
#[async_trait]
pub trait Conversations: Send + Sync {
    /// Stores a new conversation and points its (owner, agent, user) pair at
    /// it. With `reuse_active`, an existing active conversation of the pair
    /// wins instead (race-free: two concurrent calls create one).
    async fn create_conversation(&self, record: &ConversationRecord, reuse_active: bool)
    -> Result<Created, StoreError>;
    async fn get_conversation(&self, conversation_id: &str) -> Result<Option<ConversationRecord>, StoreError>;
    /// As [`Conversations::get_conversation`], for the read routes
    /// (context and messages), which may see a change up to about a second
    /// late: a store may answer from a cheaper, eventually consistent read,
    /// but must never report a conversation that exists as missing.
    async fn get_conversation_for_read(&self, conversation_id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        self.get_conversation(conversation_id).await
    }
    /// Replaces the conversation item if its version is still
    /// `expected_version` (the per-append fields it holds are a snapshot;
    /// readers take them from the newest chunk), and applies `stats` to the
    /// user's totals in the same atomic write (a session's end, or messages
    /// stored after it).
    async fn put_conversation_with(
        &self,
        record: &ConversationRecord,
        expected_version: u64,
        stats: Option<StatsDelta>,
    ) -> Result<(), StoreError>;
    /// [`Conversations::put_conversation_with`] without totals.
    async fn put_conversation(&self, record: &ConversationRecord, expected_version: u64) -> Result<(), StoreError> {
        self.put_conversation_with(record, expected_version, None).await
    }
    /// Deletes the conversation itself (conditional on `expected_version`)
    /// with its index entries and its (agent, user) pair, and applies `stats`
    /// to the user's totals, atomically.
    async fn remove_conversation(
        &self,
        record: &ConversationRecord,
        expected_version: u64,
        stats: Option<StatsDelta>,
    ) -> Result<(), StoreError>;
}

/// A conversation's messages: chunks, their head state, externalId claims,
/// flag pointers, and the pages read from them. Carries personal data
/// (sealed).
#[async_trait]
pub trait MessageLog: Send + Sync {
    /// Stores a chunk unless its key is taken (then nothing is written and
    /// the chunk already there is described).
    async fn put_chunk(&self, chunk: &Chunk) -> Result<ChunkWrite, StoreError>;
    /// Up to `limit` chunks whose first index is below `below` (all when
    /// `None`), newest first: what a removal rewrites.
    async fn chunks_desc(
        &self,
        conversation_id: &str,
        below: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Chunk>, StoreError>;
    /// Writes a chunk over the one stored under its key (a removal's
    /// tombstones; the conversation's worker is its only writer).
    async fn rewrite_chunk(&self, chunk: &Chunk) -> Result<(), StoreError>;
    /// Rewrites the head state of the conversation's newest chunk (commands
    /// applied without storing a message: every message a repeat).
    async fn update_head(
        &self,
        conversation_id: &str,
        chunk_first_index: u64,
        head: &HeadState,
    ) -> Result<(), StoreError>;
    /// Claims each `externalId` for its message (`(externalId, messageId)`),
    /// keeping it for `expires_at` when set. A claim already held by the same
    /// message is fine (a retried write); one held by another message is a
    /// [`StoreError::Conflict`].
    async fn claim_external_ids(
        &self,
        conversation_id: &str,
        claims: &[(String, String)],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError>;
    /// The claims already held among `external_ids`: externalId → messageId.
    async fn existing_external_ids(
        &self,
        conversation_id: &str,
        external_ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError>;
    /// Points the flagged-message list at flagged messages:
    /// `(messageIndex, first index of its chunk)`.
    async fn put_flag_pointers(
        &self,
        conversation_id: &str,
        pointers: &[(u64, u64)],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError>;
    async fn list_messages(&self, conversation_id: &str, query: &MessageQuery) -> Result<Page<Message>, StoreError>;
    /// The flagged (and blocked) messages of a conversation, in index order,
    /// from a sparse index: the cost follows the flags, not the length.
    async fn list_flagged_messages(
        &self,
        conversation_id: &str,
        order: Order,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Message>, StoreError>;
    /// Deletes every item of a conversation but the conversation itself
    /// (messages, externalId claims, flag pointers), in pages within the
    /// store's batch limits.
    async fn delete_conversation_items(&self, conversation_id: &str) -> Result<(), StoreError>;
}

/// The owner's lists and the review queue, each one index. Returns
/// conversations, so it carries personal data (opened when sealed).
#[async_trait]
pub trait ConversationLists: Send + Sync {
    /// One of the owner's conversation lists, newest first by creation
    /// (including conversations being erased, so that an erasure can be
    /// finished). Each list is one index: no list is ever scanned.
    async fn list_conversations(
        &self,
        owner_id: &str,
        list: &ConversationList,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError>;
    /// The owner's flagged conversations in one review state, most recently
    /// flagged first (a sparse index: only flagged conversations are in it).
    async fn list_flagged_conversations(
        &self,
        owner_id: &str,
        status: FlagStatus,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError>;
    /// Whether the user index ([`ConversationList::User`]) shows every
    /// committed change at once. DynamoDB's global secondary index lags;
    /// an erasure then ends with a second clean pass after a settling time.
    fn user_index_is_consistent(&self) -> bool {
        true
    }
}

/// A user's totals (counts, seconds, the last conversation): numbers and
/// the user's id, never content.
#[async_trait]
pub trait UserTotals: Send + Sync {
    async fn user_stats(&self, owner_id: &str, user_id: &str) -> Result<Option<UserStats>, StoreError>;
    /// Sets (or, with `None`, clears) the time of the user's last counted
    /// conversation, if the user has totals (an erasure recomputes it).
    async fn set_last_conversation_at(
        &self,
        owner_id: &str,
        user_id: &str,
        at: Option<Timestamp>,
    ) -> Result<(), StoreError>;
    /// Deletes a user's totals.
    async fn delete_user_stats(&self, owner_id: &str, user_id: &str) -> Result<(), StoreError>;
}

/// What an `Idempotency-Key` answered, and the write command it may still
/// have to send (its content sealed as on the queue): nothing to open.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// The record of an idempotency key of a conversation (`key` is scoped
    /// by operation), unless it expired at `now`.
    async fn get_idempotency(
        &self,
        conversation_id: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// Stores the record unless a live one holds the key; returns whether it
    /// was stored. It lives with the conversation (and is erased with it).
    async fn put_idempotency(
        &self,
        conversation_id: &str,
        key: &str,
        record: &IdempotencyRecord,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError>;
    /// The command is on the queue: forget it, keep the answer.
    async fn settle_idempotency(&self, conversation_id: &str, key: &str) -> Result<(), StoreError>;
}

/// The sweeper's indexes: active sessions by start time, its cursor, and
/// (on stores that do not expire items themselves) expired conversations.
/// Used by the keyless sweeper: nothing here is opened.
#[async_trait]
pub trait SessionIndex: Send + Sync {
    /// Active conversations that started before `started_before`, oldest
    /// first (the sweeper's sparse index; the caller checks idleness),
    /// from just after `after` (a `next_cursor` of this method), at most
    /// `limit` of them examined. `next_cursor` is the last one examined
    /// when the page is full (more may follow), `None` at the end.
    async fn active_started_before(
        &self,
        started_before: Timestamp,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError>;
    /// Where the sweeper's next run resumes in the index above.
    async fn sweep_cursor(&self) -> Result<Option<String>, StoreError>;
    async fn set_sweep_cursor(&self, cursor: Option<&str>) -> Result<(), StoreError>;
    /// Conversations past their `expiresAt`, oldest first, for stores that do
    /// not expire items themselves (DynamoDB's TTL does: it returns none).
    async fn expired_conversations(
        &self,
        _now: Timestamp,
        _limit: usize,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        Ok(Vec::new())
    }
}

/// The durable erasure jobs (`DELETE /users/{id}`): counts, times and a
/// cursor; a finished job holds no id of the person.
#[async_trait]
pub trait ErasureJobs: Send + Sync {
    /// An erasure job, read strongly consistently.
    async fn get_erasure(&self, erasure_id: &str) -> Result<Option<ErasureJob>, StoreError>;
    /// Stores an erasure job at `job.version` if the stored one is at
    /// `expected_version` (0: none stored yet); `Conflict` otherwise.
    async fn put_erasure(&self, job: &ErasureJob, expected_version: u64) -> Result<(), StoreError>;
}

/// Whether the store answers, for `/health`.
#[async_trait]
pub trait StoreHealth: Send + Sync {
    async fn health(&self) -> ComponentHealth;
}

/// The whole store, by role: an adapter implements every role, and each
/// part of the domain names only the roles it uses (through
/// `deps::Stores`). Implemented for anything that has them all.
pub trait ConversationStore:
    Conversations
    + MessageLog
    + ConversationLists
    + UserTotals
    + IdempotencyStore
    + SessionIndex
    + ErasureJobs
    + StoreHealth
{
}

impl<T> ConversationStore for T where
    T: Conversations
        + MessageLog
        + ConversationLists
        + UserTotals
        + IdempotencyStore
        + SessionIndex
        + ErasureJobs
        + StoreHealth
        + ?Sized
{
}

/// The FIFO writes queue: group = conversation id, deduplication id =
/// command id, so every write of one conversation is applied in order.
#[async_trait]
pub trait WriteQueue: Send + Sync {
    async fn send_write(&self, command: &WriteCommand) -> Result<(), QueueError>;
    async fn health(&self) -> ComponentHealth;
}

/// The titles queue (standard; jobs are idempotent).
#[async_trait]
pub trait TitleQueue: Send + Sync {
    async fn send_title(&self, job: &TitleJob) -> Result<(), QueueError>;
    async fn health(&self) -> ComponentHealth;
}

/// The events queue (standard): producers put an event on it once the
/// change it describes is committed; the `publish-events` function delivers
/// it. Durable, so an event is retried there (never lost) and a delivery
/// failure never holds up the conversation's writes.
#[async_trait]
pub trait EventQueue: Send + Sync {
    async fn send_events(&self, events: &[CloudEvent]) -> Result<(), QueueError>;
    async fn health(&self) -> ComponentHealth;
}

/// One event as it is delivered: the JSON body as queued, with what the
/// delivery needs to know without parsing it again.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingEvent {
    pub id: String,
    pub event_type: EventType,
    pub time: Timestamp,
    pub body: String,
}

impl OutgoingEvent {
    pub fn new(event: &CloudEvent) -> Result<Self, String> {
        Ok(OutgoingEvent {
            id: event.id.clone(),
            event_type: event.event_type,
            time: event.time,
            body: serde_json::to_string(event).map_err(|e| e.to_string())?,
        })
    }

    /// Reads a queued event; the body is kept as it was queued.
    pub fn parse(body: &str) -> Result<Self, String> {
        let event: CloudEvent = serde_json::from_str(body).map_err(|e| format!("not a convo event: {e}"))?;
        Ok(OutgoingEvent {
            id: event.id,
            event_type: event.event_type,
            time: event.time,
            body: body.to_string(),
        })
    }
}

/// Delivers events: to an EventBridge bus on AWS, to webhooks locally.
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// One result per event, in order: delivered, or why not (it is
    /// retried later).
    async fn publish(&self, events: &[OutgoingEvent]) -> Vec<Result<(), String>>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key store is unavailable: {0}")]
    Unavailable(String),
    /// A wrapped key that does not unwrap (another key-wrapping key, or
    /// altered bytes): reported, never guessed around.
    #[error("a stored data key is corrupt: {0}")]
    Corrupt(String),
}

/// The data keys: one per (owner, user), so that destroying it makes
/// everything sealed under it unreadable for good (crypto-shredding).
#[async_trait]
pub trait KeyRing: Send + Sync {
    /// The key of (owner, user) and its id, made and stored (wrapped) when
    /// there is none. The ring is read every time (a destroyed key is never
    /// handed out from memory); only the unwrapping is cached.
    async fn current_key(
        &self,
        owner: &str,
        user: &str,
    ) -> Result<(KeyId, std::sync::Arc<crate::crypto::DataKey>), KeyError>;
    /// The key with this id, if it still exists (cached unwrapped, for a
    /// bounded time: a warm function makes no call per append).
    async fn key(
        &self,
        owner: &str,
        user: &str,
        id: KeyId,
    ) -> Result<Option<std::sync::Arc<crate::crypto::DataKey>>, KeyError>;
    /// Destroys the key, then forgets it; idempotent.
    async fn destroy(&self, owner: &str, user: &str) -> Result<(), KeyError>;
    /// Whether the key with this id is still the user's, read from the
    /// ring itself (never from memory).
    async fn confirm(&self, owner: &str, user: &str, id: KeyId) -> Result<bool, KeyError>;
}

/// Where counters and timings go (CloudWatch EMF on Lambda). Values are
/// (name, value, unit); never message content.
pub trait Metrics: Send + Sync {
    fn record(&self, values: &[(&str, f64, &str)]);
}

/// Drops every value (local runs and tests that do not look at metrics).
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn record(&self, _values: &[(&str, f64, &str)]) {}
}

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// Sortable unique ids (ULIDs in production).
pub trait IdSource: Send + Sync {
    fn new_id(&self) -> String;
}

pub trait Moderator: Send + Sync {
    fn screen(&self, content: &str) -> SafetyVerdict;

    /// As [`Moderator::screen`], with the message's part in its
    /// conversation's rolling risk (none from a moderator without a learned
    /// stage).
    fn screen_turn(&self, content: &str) -> (SafetyVerdict, Option<convo_schema::commands::TurnRisk>) {
        (self.screen(content), None)
    }

    /// `content` with its personal data masked (`[email]`, `[phone]`,
    /// `[card]`, `[address]`), or `None` when it holds none.
    fn redact(&self, _content: &str) -> Option<String> {
        None
    }
}

pub trait TitleGenerator: Send + Sync {
    /// A title from the conversation's user turns (oldest first), never
    /// using a word of `avoid` (the participants' names), or `None` when the
    /// turns hold nothing to build one from.
    fn title(&self, user_turns: &[&str], avoid: &[&str]) -> Option<String>;
}
