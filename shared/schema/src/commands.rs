//! Queue message formats: the write commands on the FIFO writes queue
//! (group = conversation id, deduplication id = command id) and the title
//! jobs on the titles queue. Versioned so old messages stay readable.

use serde::{Deserialize, Serialize};

use crate::{Direction, Metadata, Role, SafetyVerdict, SealedFields, Timestamp, ToolCall};

/// One write accepted by the API, to be applied by `persist-writes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteCommand {
    /// Format version of this message.
    pub v: u32,
    pub command_id: String,
    pub conversation_id: String,
    pub owner_id: String,
    pub accepted_at: Timestamp,
    #[serde(flatten)]
    pub kind: WriteKind,
}

impl WriteCommand {
    /// A command in this code's format.
    pub fn new(
        command_id: String,
        conversation_id: String,
        owner_id: String,
        accepted_at: Timestamp,
        kind: WriteKind,
    ) -> Self {
        WriteCommand {
            v: WRITE_COMMAND_VERSION,
            command_id,
            conversation_id,
            owner_id,
            accepted_at,
            kind,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum WriteKind {
    Append {
        messages: Vec<AcceptedMessage>,
    },
    End {
        reason: EndReason,
    },
    /// Sent by an erasure behind every write of the conversation accepted
    /// before it: the worker deletes what a write that raced the erasure
    /// may have stored, and announces the erasure once it is complete.
    /// The ids name the conversation's user and agent in that event (absent
    /// in commands queued before they were added).
    Erase {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<String>,
    },
    /// Removes one message (found at `index` when the removal was accepted),
    /// leaving a tombstone.
    Remove {
        message_id: String,
        index: u64,
    },
    /// Removes every message accepted before this command (the
    /// conversation stays), leaving tombstones.
    Clear,
    /// One step of the erasure of a user (`DELETE /users/{userId}`): the
    /// command's `conversationId` is the erasure's id (its own FIFO group),
    /// and `step` the job's step it runs; a step that finds the job moved
    /// on is a redelivery and does nothing twice.
    EraseUser {
        step: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    /// The client ended the session.
    Client,
    /// The sweeper ended a session idle for too long.
    Idle,
}

/// A message validated and screened at ingress, waiting to be stored. A
/// field this code does not know fails the command (retried, then a dead
/// letter) rather than being dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcceptedMessage {
    pub message_id: String,
    pub role: Role,
    pub content: String,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_url: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: Metadata,
    pub safety: SafetyVerdict,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The message's content, tool arguments, metadata and audio URL, and
    /// its preview, sealed by the API under the user's data key (the
    /// fields above are then empty): the queue never holds them in clear.
    #[serde(default, skip_serializing_if = "SealedFields::is_empty")]
    pub sealed: SealedFields,
    /// The message's part in its conversation's rolling risk (numbers only),
    /// when the learned stage ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<TurnRisk>,
}

/// What one message adds to its conversation's rolling risk: the worker,
/// which applies messages in order, keeps `level = level × decay + signal`
/// in the conversation's head and flags the conversation when the level
/// reaches `threshold`. Numbers only, never content.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TurnRisk {
    /// The message's grooming signal (0 to 1).
    pub signal: f32,
    pub decay: f32,
    pub threshold: f32,
}

/// 2: messages may carry `sealed` fields (issue 16); a worker of format 1
/// would drop them, so it must never take one.
/// 3: messages may carry a `risk`, and verdicts `findings` and `model`
/// (issue 22).
/// 4: a message with an `externalId` has an id derived from it, and the
/// worker claims the externalId with a token of the message and the
/// command (issue 23); a worker of format 3 would claim it with the message
/// id alone, which a re-send of the same externalId would match.
/// 5: `eraseUser`, the steps of a user's erasure job (issue 23).
pub const WRITE_COMMAND_VERSION: u32 = 5;

/// A request to (re)generate a conversation's title.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TitleJob {
    pub conversation_id: String,
    pub owner_id: String,
    pub reason: TitleReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TitleReason {
    SessionEnded,
    EarlyExchanges,
}
