//! The stored model: the conversation record and its head, message chunks,
//! queries, pages, totals' deltas, idempotency records and erasure jobs,
//! with the pure rules over them. Depends on the schema crate only: the
//! ports, the stores and the use cases all build on it.

use convo_schema::commands::AcceptedMessage;
use convo_schema::limits::PREVIEW_CHARS;
use convo_schema::{Conversation, ConversationStatus, Message, SafetyAction, Sealed, SealedFields, Timestamp};
use serde::{Deserialize, Serialize};

/// A data key's id: random, stored with the wrapped key and with every
/// conversation sealed under it, so that a conversation names the key it
/// needs (a key made after an erasure is another key).
pub type KeyId = u64;

/// The names of the sealed fields (the keys of a record's or a message's
/// sealed map, and the places their ciphertext is bound to).
pub const CONTENT: &str = "content";
pub const TOOL_CALLS: &str = "toolCalls";
pub const METADATA: &str = "metadata";
pub const AUDIO_URL: &str = "audioUrl";
/// An accepted message's preview (what the conversation shows of it).
pub const PREVIEW: &str = "preview";
pub const TITLE: &str = "title";
pub const USER_NAME: &str = "userName";
pub const REVIEW_NOTE: &str = "reviewNote";
pub const FIRST_PREVIEW: &str = "firstMessagePreview";
pub const LAST_PREVIEW: &str = "lastMessagePreview";

/// How many recent commands a conversation remembers (see
/// [`HeadState::recent_commands`]).
pub const RECENT_COMMANDS: usize = 16;

/// Conversation ids are ULIDs; anything else cannot exist.
pub fn is_conversation_id(id: &str) -> bool {
    id.len() == 26 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Past its retention: it reads as missing until the store removes it.
pub fn expired(rec: &ConversationRecord, now: Timestamp) -> bool {
    rec.conversation.expires_at.is_some_and(|t| t <= now)
}

/// What a conversation shows of an accepted message: its first characters,
/// or a placeholder for a blocked one.
pub fn preview_of_accepted(m: &AcceptedMessage) -> String {
    preview(if m.safety.action == SafetyAction::Blocked {
        "[withheld by moderation]"
    } else {
        &m.content
    })
}

/// What a conversation shows of a message (see [`preview_of_accepted`]).
pub fn preview_of(m: &Message) -> String {
    preview(if m.blocked {
        "[withheld by moderation]"
    } else {
        &m.content
    })
}

pub fn preview(content: &str) -> String {
    let mut out: String = content.chars().take(PREVIEW_CHARS).collect();
    if content.chars().count() > PREVIEW_CHARS {
        out.push('…');
    }
    out
}

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
    /// [`RECENT_COMMANDS`]): a redelivered command is found
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
    /// fields are then empty (the `sealing` module seals and opens them).
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
    /// conversation remembers: its last [`RECENT_COMMANDS`]
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
        self.sealed.remove(FIRST_PREVIEW);
        if let Some(p) = head.sealed_first_preview {
            self.sealed.insert(FIRST_PREVIEW.into(), p);
        }
        if head.last_sealed.is_none() {
            self.sealed.remove(LAST_PREVIEW);
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
        self.sealed.remove(FIRST_PREVIEW);
        self.sealed.remove(LAST_PREVIEW);
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
            sealed_first_preview: self.sealed.get(FIRST_PREVIEW).cloned(),
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
            Some(m) if !m.blocked && m.sealed.contains_key(CONTENT) => (
                None,
                Some(LastSealed {
                    message_id: m.message_id.clone(),
                    content: m.sealed[CONTENT].clone(),
                }),
            ),
            Some(m) => (Some(preview_of(m)), None),
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

pub use convo_schema::queries::Order;

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
