//! The ports: what the domain needs from the outside world. Adapters (the
//! embedded ones for local runs and tests, the AWS ones for Lambda) implement
//! them; the domain and the handlers see only these traits.

use std::collections::HashMap;

use async_trait::async_trait;
use convo_schema::commands::{TitleJob, WriteCommand};
use convo_schema::events::{CloudEvent, EventType};
use convo_schema::{
    Conversation, ConversationStatus, FlagStatus, Message, SafetyVerdict, Sealed, SealedFields, Timestamp, UserStats,
};
use serde::{Deserialize, Serialize};

/// A short tag of a write command id: the first 8 bytes of its SHA-256.
/// A conversation remembers the tags of the commands it applied recently
/// (8 bytes each instead of a 26-character id); two ids share a tag with a
/// probability of 2⁻⁶⁴.
pub type CommandTag = u64;

pub fn command_tag(command_id: &str) -> CommandTag {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(command_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The per-append state of a conversation that is not part of the public
/// [`Conversation`]: stored with the newest message chunk (so the worker's
/// one write per exchange carries it), never in the conversation item.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeadState {
    /// Tags of the most recent applied append commands, newest last (at most
    /// [`crate::persist::RECENT_COMMANDS`]): a redelivered command is found
    /// here and changes nothing; `after=` reads wait until their command is.
    #[serde(default)]
    pub recent_commands: Vec<CommandTag>,
    /// The rate window (whole minutes since the epoch) of the newest counted
    /// append, and how many appends were accepted in it.
    #[serde(default)]
    pub rate_window: Option<i64>,
    #[serde(default)]
    pub rate_count: u32,
    /// A title job has been queued (so the early-exchange trigger fires once).
    #[serde(default)]
    pub title_requested: bool,
    /// The conversation's rolling grooming risk in thousandths (see
    /// [`convo_schema::commands::TurnRisk`]): a number, never content.
    #[serde(default)]
    pub risk_milli: u32,
}

/// A conversation as stored: the public fields plus what the worker needs
/// to stay exactly-once and race-free. Two items hold it: the conversation
/// item (the fields that rarely change, under `version`) and the newest
/// message chunk (`messageCount`, `lastActivityAt`, the previews and
/// [`HeadState`]); stores read both in one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationRecord {
    #[serde(flatten)]
    pub conversation: Conversation,
    /// The conversation item's version; its writes are conditional on it.
    /// Appends do not move it.
    pub version: u64,
    #[serde(default)]
    pub head: HeadState,
    /// The first message index of the newest chunk (where the head lives);
    /// `None` until a message is stored.
    #[serde(default)]
    pub head_chunk: Option<u64>,
    /// Erasure has begun: the conversation reads as missing, takes no more
    /// writes, and a repeated erasure finishes the job.
    #[serde(default)]
    pub deleting: bool,
    /// The tag of the end command that ended the session.
    #[serde(default)]
    pub end_command: Option<CommandTag>,
    /// How many of its messages the user's totals count (set when the
    /// session ends, raised by messages stored after it): a redelivered
    /// write never counts a message twice.
    #[serde(default)]
    pub counted_messages: Option<u64>,
    /// The id of the user's data key its personal fields are sealed under
    /// (`None`: stored in clear, as before encryption or with it off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<KeyId>,
    /// The conversation's personal fields, sealed (title, userName,
    /// metadata, reviewNote, and the previews' snapshot); the public
    /// fields are then empty. See [`crate::sealing`].
    #[serde(default, skip_serializing_if = "SealedFields::is_empty")]
    pub sealed: SealedFields,
    /// The newest chunk's last message, sealed: its preview is read from
    /// it (never stored; set by [`ConversationRecord::apply_head`]).
    #[serde(skip)]
    pub last_sealed: Option<LastSealed>,
    /// Its data key was destroyed (its user erased): read as being erased
    /// (`deleting` is set too), though the store may not say so yet.
    #[serde(skip)]
    pub shredded: bool,
}

/// The stored state of a user's erasure job (`DELETE /users/{userId}`):
/// its report and where it is, so that a step interrupted anywhere resumes
/// from the last step it recorded. Written with a version, conditionally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErasureJob {
    pub erasure_id: String,
    pub owner_id: String,
    /// Until the job is done; a finished job keeps no id of the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub done: bool,
    pub conversations_deleted: u64,
    pub messages_deleted: u64,
    pub requested_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The step the next command runs (a command of an earlier step is a
    /// redelivery).
    pub step: u64,
    /// Where the current pass over the user's conversations resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// The conversations the last step found and counted, which the next
    /// step erases first (so that a crash anywhere neither loses one nor
    /// counts one twice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    /// Whether the current pass erased anything (a pass that erases
    /// nothing from start to end is the check that ends the job).
    pub found_in_pass: bool,
    /// When a pass over a lagging index first found nothing: the job ends
    /// with a second clean pass once the index has had time to settle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_pass_at: Option<Timestamp>,
    /// The stored version (1 for a new job); a write expects it.
    #[serde(skip)]
    pub version: u64,
}

impl ErasureJob {
    pub fn report(&self) -> convo_schema::api::ErasureReport {
        use convo_schema::api::{ErasureOutcome, ErasureReport, ErasureStatus};
        ErasureReport {
            erasure_id: self.erasure_id.clone(),
            user_id: self.user_id.clone(),
            status: if self.done {
                ErasureStatus::Done
            } else {
                ErasureStatus::Running
            },
            outcome: self.done.then_some(if self.conversations_deleted > 0 {
                ErasureOutcome::Erased
            } else {
                ErasureOutcome::NothingHeld
            }),
            conversations_deleted: self.conversations_deleted,
            messages_deleted: self.messages_deleted,
            requested_at: self.requested_at,
            finished_at: self.finished_at,
        }
    }
}

/// A sealed message content and the message it belongs to (what the last
/// preview is made from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastSealed {
    pub message_id: String,
    pub content: Sealed,
}

impl ConversationRecord {
    /// A conversation not stored yet: version 1, no commands applied.
    pub fn new(conversation: Conversation) -> Self {
        Self {
            conversation,
            version: 1,
            head: HeadState::default(),
            head_chunk: None,
            deleting: false,
            end_command: None,
            counted_messages: None,
            key_id: None,
            sealed: SealedFields::new(),
            last_sealed: None,
            shredded: false,
        }
    }

    pub fn id(&self) -> &str {
        &self.conversation.conversation_id
    }

    /// Whether the command with this id has been applied (as far as the
    /// conversation remembers: its last [`crate::persist::RECENT_COMMANDS`]
    /// appends and its end).
    pub fn has_applied(&self, command_id: &str) -> bool {
        let tag = command_tag(command_id);
        self.head.recent_commands.contains(&tag) || self.end_command == Some(tag)
    }

    /// Takes the per-append fields from the newest chunk's head (stores
    /// call it when they read a conversation item and its newest chunk).
    pub fn apply_head(&mut self, chunk_first_index: u64, head: Head) {
        let c = &mut self.conversation;
        c.message_count = head.message_count;
        // Only ever moves forward; the conversation item's copy can be the
        // newer one when a commit stopped between its two writes.
        c.last_activity_at = head.last_activity_at.max(c.last_activity_at);
        c.first_message_preview = head.first_message_preview;
        c.last_message_preview = head.last_message_preview;
        // The chunk's previews replace the conversation item's snapshot;
        // the last one only when the chunk has it in clear: a sealed last
        // message is opened by a reader with the key (who prefers it), and
        // a writer without one keeps the snapshot's copy.
        self.sealed.remove(crate::sealing::FIRST_PREVIEW);
        if let Some(p) = head.sealed_first_preview {
            self.sealed.insert(crate::sealing::FIRST_PREVIEW.into(), p);
        }
        if head.last_sealed.is_none() {
            self.sealed.remove(crate::sealing::LAST_PREVIEW);
        }
        self.last_sealed = head.last_sealed;
        self.head = head.state;
        self.head_chunk = Some(chunk_first_index);
    }

    /// The per-append fields of a conversation with no chunk yet (its
    /// conversation item's snapshot may be ahead of what is stored).
    pub fn apply_no_chunk(&mut self) {
        let c = &mut self.conversation;
        c.message_count = 0;
        c.first_message_preview = None;
        c.last_message_preview = None;
        self.sealed.remove(crate::sealing::FIRST_PREVIEW);
        self.sealed.remove(crate::sealing::LAST_PREVIEW);
        self.last_sealed = None;
        self.head = HeadState::default();
        self.head_chunk = None;
    }

    /// The head as the conversation stands (written with its newest chunk).
    pub fn current_head(&self) -> Head {
        let c = &self.conversation;
        Head {
            message_count: c.message_count,
            last_activity_at: c.last_activity_at,
            first_message_preview: c.first_message_preview.clone(),
            last_message_preview: c.last_message_preview.clone(),
            sealed_first_preview: self.sealed.get(crate::sealing::FIRST_PREVIEW).cloned(),
            last_sealed: None,
            state: self.head.clone(),
        }
    }
}

/// The per-append state as of the end of one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub message_count: u64,
    pub last_activity_at: Timestamp,
    pub first_message_preview: Option<String>,
    pub last_message_preview: Option<String>,
    /// The first preview, sealed (stored with the chunk instead of
    /// `first_message_preview`).
    pub sealed_first_preview: Option<Sealed>,
    /// The chunk's last message when it is sealed (read only: the last
    /// preview is made from it).
    pub last_sealed: Option<LastSealed>,
    pub state: HeadState,
}

impl Head {
    /// The last preview of a chunk ending with `last`: in clear, or (for a
    /// sealed message) the sealed content it is made from.
    pub fn last_preview_of(last: Option<&Message>) -> (Option<String>, Option<LastSealed>) {
        match last {
            None => (None, None),
            Some(m) if m.removed => (None, None),
            Some(m) if !m.blocked && m.sealed.contains_key(crate::sealing::CONTENT) => (
                None,
                Some(LastSealed {
                    message_id: m.message_id.clone(),
                    content: m.sealed[crate::sealing::CONTENT].clone(),
                }),
            ),
            Some(m) => (Some(crate::persist::preview_of(m)), None),
        }
    }
}

/// A run of consecutive messages stored as one item, keyed by the index of
/// its first message, written once (conditional on its key being free) and
/// never rewritten except for its head state. It holds whole commands only,
/// and carries the conversation's head as of its last message, so every
/// prefix of a commit's chunks is a consistent state.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub conversation_id: String,
    pub first_index: u64,
    pub messages: Vec<Message>,
    pub head: Head,
    /// The conversation's retention (DynamoDB's TTL).
    pub expires_at: Option<Timestamp>,
}

/// What a conditional chunk write found.
#[derive(Debug, Clone, PartialEq)]
pub enum ChunkWrite {
    Stored,
    /// The key was taken: the recent commands of the chunk already there
    /// (a duplicate if they include every command of ours).
    Taken(Vec<CommandTag>),
}

/// What `create_conversation` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The new conversation was stored.
    New,
    /// `reuse_active` was asked and this pair already had an active
    /// conversation: it is returned and nothing was written.
    Existing(Box<ConversationRecord>),
}

/// A change to a user's totals (negative when a conversation is erased).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StatsDelta {
    pub conversations: i64,
    pub messages: i64,
    pub seconds: i64,
    pub at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// A page request for messages. `cursor` is opaque; the store issued it.
#[derive(Debug, Clone, Default)]
pub struct MessageQuery {
    pub cursor: Option<String>,
    pub limit: usize,
    pub order: Order,
    /// Inclusive lower bound on createdAt.
    pub since: Option<Timestamp>,
    /// Exclusive upper bound on createdAt.
    pub until: Option<Timestamp>,
    /// The conversation is known to hold this many messages (from a read of
    /// it a moment before): a store that reads eventually consistent and
    /// finds fewer where it reaches the newest message reads again strongly
    /// consistent, so a reader never sees fewer messages than the
    /// conversation it read first.
    pub known_count: Option<u64>,
}

/// Where a message stands relative to a query's time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Inside,
    /// Outside, but later messages in the reading direction may be inside.
    Skip,
    /// Outside, and so is everything after it in the reading direction:
    /// messages are appended in time order, so reading can stop here.
    Past,
}

impl MessageQuery {
    pub fn window(&self, m: &Message) -> Window {
        let inside = self.since.is_none_or(|s| m.created_at >= s) && self.until.is_none_or(|u| m.created_at < u);
        if inside {
            return Window::Inside;
        }
        // A client may backfill `createdAt` with any past time, so only one
        // bound ends a scan early: reading newest first, once `acceptedAt`
        // (the server's clock, growing with the index up to small races) is
        // older than `since` by more than the future skew a `createdAt` may
        // have, no earlier message can be inside the window.
        let margin = chrono::Duration::seconds(convo_schema::limits::MAX_FUTURE_SKEW_SECONDS + 60);
        let past = self.order == Order::Desc && self.since.is_some_and(|s| m.accepted_at + margin < s);
        if past { Window::Past } else { Window::Skip }
    }
}

/// The cursor scope of a conversation's flagged messages in one order (a
/// cursor of one order is refused by the other).
pub fn flagged_scope(base: &str, order: Order) -> String {
    match order {
        Order::Asc => base.to_string(),
        Order::Desc => format!("{base}#desc"),
    }
}

/// Which of an owner's conversation lists to read. Each is kept by an
/// index whose keys are set when a conversation is created and change only
/// with its status or its first flag, never on an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationList {
    /// Every conversation of the owner.
    All,
    User(String),
    Agent(String),
    Status(ConversationStatus),
    /// The flagged ones, in any review state.
    Flagged,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// What a request with an `Idempotency-Key` left behind: its fingerprint,
/// its answer, and — until the command is known to be on the queue — the
/// command itself, so that a retry can send it again (the queue and the
/// worker drop the duplicate) instead of waiting or losing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    /// The write command (JSON) while it may not have been sent.
    #[serde(default)]
    pub command: Option<String>,
    /// The answer (JSON) the first request gave or will give.
    pub response: String,
}

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

#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// Stores a new conversation and points its (owner, agent, user) pair at
    /// it. With `reuse_active`, an existing active conversation of the pair
    /// wins instead (race-free: two concurrent calls create one).
    async fn create_conversation(&self, record: &ConversationRecord, reuse_active: bool)
    -> Result<Created, StoreError>;

    async fn get_conversation(&self, conversation_id: &str) -> Result<Option<ConversationRecord>, StoreError>;

    /// As [`ConversationStore::get_conversation`], for the read routes
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

    /// [`ConversationStore::put_conversation_with`] without totals.
    async fn put_conversation(&self, record: &ConversationRecord, expected_version: u64) -> Result<(), StoreError> {
        self.put_conversation_with(record, expected_version, None).await
    }

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

    /// Points the flagged-message list at flagged messages:
    /// `(messageIndex, first index of its chunk)`.
    async fn put_flag_pointers(
        &self,
        conversation_id: &str,
        pointers: &[(u64, u64)],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError>;

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

    /// The owner's flagged conversations in one review state, most recently
    /// flagged first (a sparse index: only flagged conversations are in it).
    async fn list_flagged_conversations(
        &self,
        owner_id: &str,
        status: FlagStatus,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError>;

    /// The claims already held among `external_ids`: externalId → messageId.
    async fn existing_external_ids(
        &self,
        conversation_id: &str,
        external_ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError>;

    async fn user_stats(&self, owner_id: &str, user_id: &str) -> Result<Option<UserStats>, StoreError>;

    /// Deletes every item of a conversation but the conversation itself
    /// (messages, externalId claims, flag pointers), in pages within the
    /// store's batch limits.
    async fn delete_conversation_items(&self, conversation_id: &str) -> Result<(), StoreError>;

    /// Deletes the conversation itself (conditional on `expected_version`)
    /// with its index entries and its (agent, user) pair, and applies `stats`
    /// to the user's totals, atomically.
    async fn remove_conversation(
        &self,
        record: &ConversationRecord,
        expected_version: u64,
        stats: Option<StatsDelta>,
    ) -> Result<(), StoreError>;

    /// Conversations past their `expiresAt`, oldest first, for stores that do
    /// not expire items themselves (DynamoDB's TTL does: it returns none).
    async fn expired_conversations(
        &self,
        _now: Timestamp,
        _limit: usize,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        Ok(Vec::new())
    }

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

    /// An erasure job, read strongly consistently.
    async fn get_erasure(&self, erasure_id: &str) -> Result<Option<ErasureJob>, StoreError>;

    /// Stores an erasure job at `job.version` if the stored one is at
    /// `expected_version` (0: none stored yet); `Conflict` otherwise.
    async fn put_erasure(&self, job: &ErasureJob, expected_version: u64) -> Result<(), StoreError>;

    /// Whether the user index ([`ConversationList::User`]) shows every
    /// committed change at once. DynamoDB's global secondary index lags;
    /// an erasure then ends with a second clean pass after a settling time.
    fn user_index_is_consistent(&self) -> bool {
        true
    }

    async fn health(&self) -> ComponentHealth;
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

/// A data key's id: random, stored with the wrapped key and with every
/// conversation sealed under it, so that a conversation names the key it
/// needs (a key made after an erasure is another key).
pub type KeyId = u64;

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

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // Millisecond precision, as stored and serialized.
        let now = chrono::Utc::now();
        chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
    }
}

/// ULIDs, monotonic within one process.
pub struct UlidSource(std::sync::Mutex<ulid::Generator>);

impl Default for UlidSource {
    fn default() -> Self {
        Self(std::sync::Mutex::new(ulid::Generator::new()))
    }
}

impl IdSource for UlidSource {
    fn new_id(&self) -> String {
        let mut generator = self.0.lock().unwrap_or_else(|p| p.into_inner());
        generator.generate().unwrap_or_else(|_| ulid::Ulid::new()).to_string()
    }
}
