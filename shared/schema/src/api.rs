//! Request and response bodies of the HTTP API (JSON, camelCase).

use serde::{Deserialize, Serialize};

use crate::{Conversation, Direction, Message, Metadata, Role, SafetyVerdict, Timestamp, UserStats};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateConversationRequest {
    pub user_id: String,
    #[serde(default)]
    pub user_name: Option<String>,
    pub agent_id: String,
    #[serde(default)]
    pub agent_name: Option<String>,
    /// web, sms, voice, toy… (default `web`). `sms` makes both ids phone numbers.
    #[serde(default)]
    pub channel: Option<String>,
    /// chat, story, game… (default `chat`).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Return the active conversation of this (agent, user) pair if one exists.
    #[serde(default)]
    pub reuse_active: bool,
    /// Days to keep the conversation (1 to 3650); the deployment's
    /// retention applies when absent. Every item expires with it.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Mask personal data in stored content; the deployment's setting
    /// applies when absent.
    #[serde(default)]
    pub redact_pii: Option<bool>,
    /// A title chosen by the user (never overwritten by the generator).
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMessage {
    pub role: Role,
    pub content: String,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub direction: Option<Direction>,
    #[serde(default)]
    pub audio_url: Option<String>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppendRequest {
    pub messages: Vec<NewMessage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedMessageView {
    pub message_id: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub safety: SafetyVerdict,
}

/// The 202 answer to an append: ids and verdicts, before anything is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendResponse {
    pub conversation_id: String,
    pub command_id: String,
    pub accepted_at: Timestamp,
    pub messages: Vec<AcceptedMessageView>,
    /// True when any message was blocked: the agent should not answer it.
    pub blocked: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndResponse {
    pub conversation_id: String,
    pub command_id: String,
    pub accepted_at: Timestamp,
    pub status: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchConversationRequest {
    /// A user title; replaces any generated one and is never overwritten.
    #[serde(default)]
    pub title: Option<String>,
    /// Merged into the conversation's metadata; a `null` value removes a key.
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Only `archived` is accepted, and only for an ended conversation.
    #[serde(default)]
    pub status: Option<String>,
}

/// `POST /conversations/{id}/review`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewRequest {
    /// reviewed, dismissed or escalated.
    pub flag_status: crate::FlagStatus,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationPage {
    pub conversations: Vec<Conversation>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagePage {
    pub conversation_id: String,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub next_cursor: Option<String>,
    /// With `after=`: whether the answer holds that write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<AfterStatus>,
}

/// What a read with `after=<commandId>` found (also in the `X-Convo-After`
/// header): the write was applied before the answer was read, or the wait
/// ran out first and the answer may not hold it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterStatus {
    Applied,
    Pending,
}

impl AfterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AfterStatus::Applied => "applied",
            AfterStatus::Pending => "pending",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextMessage {
    pub role: Role,
    pub content: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextResponse {
    pub conversation_id: String,
    /// Oldest first, ready to hand to an LLM.
    pub messages: Vec<ContextMessage>,
    /// With `after=`: whether the answer holds that write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<AfterStatus>,
}

pub type UserStatsResponse = UserStats;

/// The error body: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}
