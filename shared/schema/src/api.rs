//! Request and response bodies of the HTTP API (JSON, camelCase).

use serde::{Deserialize, Serialize};
#[allow(unused_imports)]
use serde_json::json;

use crate::{Conversation, Direction, Message, Metadata, Role, SafetyVerdict, Timestamp, UserStats};

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"userId": "child-42", "userName": "Mia", "agentId": "teddy-7", "agentName": "Teddy", "type": "story", "metadata": {"lang": "en"}, "reuseActive": true}))]
pub struct CreateConversationRequest {
    /// The user (the child, the phone number). An id starting with `+`
    /// (after NFKC, so a fullwidth plus counts) is a phone number, stored
    /// and matched as E.164: `+1 (415) 555-0101` is `+14155550101`. Any
    /// other id is opaque and stored NFC-normalised. Leading or trailing
    /// whitespace, control characters and invisible formatting characters
    /// (a zero-width space, direction marks) are refused. With `channel` `sms`
    /// it must be a phone number in international form.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^#/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb](?:[^#/\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^#/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?$"
    )]
    pub user_id: String,
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub user_name: Option<String>,
    /// The agent, under the same identity rule as `userId`.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^#/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb](?:[^#/\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^#/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?$"
    )]
    pub agent_id: String,
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub agent_name: Option<String>,
    /// web, sms, voice, toy… (default `web`). `sms` requires both ids to be
    /// phone numbers in international form (`+` and the country code).
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub channel: Option<String>,
    /// chat, story, game… (default `chat`).
    #[serde(default, rename = "type")]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub kind: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    /// Return the active conversation of this (agent, user) pair if one exists.
    #[serde(default)]
    pub reuse_active: bool,
    /// Days to keep the conversation (1 to 3650); the deployment's
    /// retention applies when absent. Every item expires with it.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 3650)]
    pub retention_days: Option<u32>,
    /// Mask personal data in stored content; the deployment's setting
    /// applies when absent.
    #[serde(default)]
    pub redact_pii: Option<bool>,
    /// A title chosen by the user (never overwritten by the generator).
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub title: Option<String>,
}

/// A whole number, also when written with a zero fraction (`30.0`): JSON
/// has one number type, and JSON Schema's `integer` takes both spellings.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = match n.as_u64() {
        Some(u) => Some(u),
        None => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
            .map(|f| f as u64),
    };
    whole
        .and_then(|u| u32::try_from(u).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("expected a whole number from 0 to {}, found {n}", u32::MAX)))
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMessage {
    pub role: Role,
    /// At most 16 KiB of UTF-8 with the tool calls' arguments (more is a
    /// 413); not blank, unless the message carries `toolCalls` (then it may
    /// be empty or left out).
    #[serde(default)]
    #[schema(max_length = 16384)]
    pub content: String,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    /// When the message was said (default: when the API accepted it); at
    /// most 5 minutes in the future.
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    /// A provider's message id: a repeated one is stored once per conversation.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub external_id: Option<String>,
    #[serde(default)]
    pub direction: Option<Direction>,
    #[serde(default)]
    #[schema(max_length = 2048, pattern = r"^(https|s3)://")]
    pub audio_url: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    /// Only on an assistant message: the tools it calls (at most 32).
    #[serde(default)]
    #[schema(max_items = 32)]
    pub tool_calls: Option<Vec<crate::ToolCall>>,
    /// Only on a tool message: the id of the call it answers.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"messages": [{"role": "user", "content": "Tell me about volcanoes", "externalId": "SM8f2a"}, {"role": "assistant", "content": "Volcanoes are mountains that let melted rock out."}]}))]
pub struct AppendRequest {
    #[schema(min_items = 1, max_items = 20)]
    pub messages: Vec<NewMessage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedMessageView {
    pub message_id: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub safety: SafetyVerdict,
}

/// The 202 answer to an append: ids and verdicts, before anything is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppendResponse {
    pub conversation_id: String,
    pub command_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub accepted_at: Timestamp,
    pub messages: Vec<AcceptedMessageView>,
    /// True when any message was blocked: the agent should not answer it.
    pub blocked: bool,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"reason": "goodbye"}))]
pub struct EndRequest {
    #[serde(default)]
    /// Free text for the caller's own records; not stored.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndResponse {
    pub conversation_id: String,
    pub command_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub accepted_at: Timestamp,
    pub status: String,
}

/// Each field is optional; an empty patch changes nothing.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"title": "Volcano night", "metadata": {"mood": "happy"}}))]
pub struct PatchConversationRequest {
    /// A user title; replaces any generated one and is never overwritten.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub title: Option<String>,
    /// Merged into the conversation's metadata; a `null` value removes a key.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    /// Only `archived` is accepted, and only for an ended conversation.
    #[serde(default)]
    #[schema(pattern = "^archived$")]
    pub status: Option<String>,
}

/// `POST /conversations/{id}/review`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"flagStatus": "reviewed", "note": "talked with the parent"}))]
pub struct ReviewRequest {
    /// reviewed, dismissed or escalated.
    pub flag_status: crate::ReviewOutcome,
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = r"[^\x09-\x0d\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationPage {
    pub conversations: Vec<Conversation>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// One page of `GET /users/{userId}/export`: conversations of the user and
/// messages, oldest first within each conversation, opened. A conversation
/// appears in the page where its export starts; its messages may run over
/// several pages (each carries its `conversationId`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserExportPage {
    /// The user's id as stored (the identity rule).
    pub user_id: String,
    pub conversations: Vec<Conversation>,
    pub messages: Vec<Message>,
    /// The next page's cursor; none when the export is complete.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// A message as an LLM call takes it: role and content, and the tool
/// calls of an assistant message or the call id a tool message answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextMessage {
    pub role: Role,
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<crate::ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextResponse {
    pub conversation_id: String,
    /// Oldest first, ready to hand to an LLM.
    pub messages: Vec<ContextMessage>,
    /// With `maxTokens`: what these messages cost in a chat request, the
    /// reply's priming included (at most `maxTokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
    /// With `after=`: whether the answer holds that write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<AfterStatus>,
}

/// A message of a user's context, with the conversation it is from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserContextMessage {
    pub conversation_id: String,
    #[serde(flatten)]
    pub message: ContextMessage,
}

/// `GET /users/{userId}/context`: the user's most recent messages across
/// their conversations (with one agent, when asked), oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserContextResponse {
    /// The user's id as stored (the identity rule).
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Oldest first, ready to hand to an LLM; each names its conversation.
    pub messages: Vec<UserContextMessage>,
    /// The conversations the messages come from, oldest first.
    pub conversations: Vec<String>,
    /// With `maxTokens`: what these messages cost in a chat request, the
    /// reply's priming included (at most `maxTokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
    /// With `after=`: whether the answer holds that write (a write to the
    /// user's newest conversation, the one an agent writes to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<AfterStatus>,
}

pub type UserStatsResponse = UserStats;

/// The 202 answer to `DELETE /conversations/{id}/messages/{messageId}`: the
/// message as it was (its removal is applied a moment later, after every
/// write accepted before it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoveMessageResponse {
    pub conversation_id: String,
    pub command_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub accepted_at: Timestamp,
    pub message: Message,
}

/// The 202 answer to `DELETE /conversations/{id}/messages`: every message
/// accepted before it is removed a moment later; the conversation stays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClearMessagesResponse {
    pub conversation_id: String,
    pub command_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub accepted_at: Timestamp,
}

/// The answer to `DELETE /conversations/{id}` (the same for a missing id).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteConversationResponse {
    pub conversation_id: String,
    pub deleted: bool,
}

/// An erasure of a user's data (`DELETE /users/{userId}` answers 202 with
/// it; `GET /erasures/{erasureId}` reports its progress). The user's data
/// key is destroyed before the 202, so nothing sealed under it opens again;
/// the job then deletes every item of the user, page by page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErasureReport {
    /// The job's id (`GET /erasures/{erasureId}`).
    pub erasure_id: String,
    /// The id the user is stored under, while the job runs. A finished
    /// erasure keeps no id of the person it erased: absent once `done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub status: ErasureStatus,
    /// Once `done`: `erased` (something was held and is gone) or
    /// `nothing_held` (the owner held nothing of that user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<ErasureOutcome>,
    /// Conversations erased so far.
    pub conversations_deleted: u64,
    /// Messages in them.
    pub messages_deleted: u64,
    #[schema(value_type = String, format = DateTime)]
    pub requested_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErasureStatus {
    Running,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasureOutcome {
    Erased,
    NothingHeld,
}

/// The error body: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}
