//! The stored and returned shapes of conversations, messages and user stats.
//! Field names follow the seed systems (camelCase on the wire).

use serde::{Deserialize, Serialize};

use crate::{Metadata, SealedFields, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConversationStatus {
    Active,
    Ended,
    Archived,
}

impl ConversationStatus {
    pub const ALL: [Self; 3] = [Self::Active, Self::Ended, Self::Archived];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Ended => "ended",
            Self::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
    Tool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TitleSource {
    Generated,
    User,
}

/// The review state of a flagged conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FlagStatus {
    Unreviewed,
    Reviewed,
    Dismissed,
    Escalated,
}

impl FlagStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FlagStatus::Unreviewed => "unreviewed",
            FlagStatus::Reviewed => "reviewed",
            FlagStatus::Dismissed => "dismissed",
            FlagStatus::Escalated => "escalated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Unreviewed, Self::Reviewed, Self::Dismissed, Self::Escalated]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

/// What a reviewer decided about a flagged conversation (its review state
/// after the review; `unreviewed` is where every flag starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReviewOutcome {
    Reviewed,
    Dismissed,
    Escalated,
}

impl From<ReviewOutcome> for FlagStatus {
    fn from(o: ReviewOutcome) -> Self {
        match o {
            ReviewOutcome::Reviewed => FlagStatus::Reviewed,
            ReviewOutcome::Dismissed => FlagStatus::Dismissed,
            ReviewOutcome::Escalated => FlagStatus::Escalated,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// What the moderator decided for one message (the seed service's bands:
/// score ≥ 0.8 safe, 0.5–0.8 flagged, < 0.5 blocked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SafetyAction {
    Safe,
    Flagged,
    Blocked,
}

/// A call the assistant asked a tool to make, in the shape OpenAI's and
/// LangChain's messages carry it: the call's id, the tool's name and the
/// arguments as the JSON string the model wrote (kept as written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolCall {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub id: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// At most 16 KiB of UTF-8, with the message's content.
    #[schema(max_length = 16384)]
    pub arguments: String,
}

/// The moderator's verdict on one message; returned in the 202 answer and
/// stored with the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SafetyVerdict {
    pub score: f64,
    pub action: SafetyAction,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Which stage found each category, for a reviewer (absent on a safe
    /// message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<SafetyFinding>,
    /// The learned model's version, when it found or confirmed something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl SafetyVerdict {
    pub fn safe() -> Self {
        Self {
            score: 1.0,
            action: SafetyAction::Safe,
            categories: Vec::new(),
            severity: None,
            reason: None,
            findings: Vec::new(),
            model: None,
        }
    }
}

/// The screening stage that found a category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SafetyStage {
    /// The word lists (`profanity`, `violence`, …).
    Wordlist,
    /// The personal-data detectors (`pii_email`, `pii_phone`, …).
    Detector,
    /// The learned model (its version is the verdict's `model`).
    Learned,
    /// The conversation's recent turns together (grooming built up over
    /// several messages that are each harmless alone).
    Conversation,
}

/// One category a stage found in a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SafetyFinding {
    pub category: String,
    pub stage: SafetyStage,
    pub severity: Severity,
    /// The learned model's probability for the category: on learned and
    /// conversation findings, and on a word-list finding made by topic
    /// terms only, the probability that confirmed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub conversation_id: String,
    pub owner_id: String,
    pub status: ConversationStatus,
    #[serde(rename = "type")]
    pub kind: String,
    pub channel: String,
    pub user_id: String,
    #[serde(default)]
    pub user_name: Option<String>,
    pub agent_id: String,
    #[serde(default)]
    pub agent_name: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub start_time: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub last_activity_at: Timestamp,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub end_time: Option<Timestamp>,
    #[serde(default)]
    pub duration_seconds: Option<i64>,
    /// The seeds' clients read whole minutes (rounded), kept alongside.
    #[serde(default)]
    pub duration_minutes: Option<i64>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub title_source: Option<TitleSource>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub title_generated_at: Option<Timestamp>,
    pub message_count: u64,
    #[serde(default)]
    pub first_message_preview: Option<String>,
    #[serde(default)]
    pub last_message_preview: Option<String>,
    pub flagged: bool,
    #[serde(default)]
    pub flag_type: Option<String>,
    #[serde(default)]
    pub flag_reason: Option<String>,
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub flag_status: Option<FlagStatus>,
    /// When the conversation was first flagged.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub flagged_at: Option<Timestamp>,
    /// The last review: who (the reviewer's `sub`), when, and their note.
    #[serde(default)]
    pub reviewed_by: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub reviewed_at: Option<Timestamp>,
    #[serde(default)]
    pub review_note: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub archived_at: Option<Timestamp>,
    /// Personal data is masked in stored content (`[phone]`, `[email]`, …).
    #[serde(default)]
    pub redact_pii: bool,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub message_id: String,
    pub conversation_id: String,
    pub message_index: u64,
    pub role: Role,
    pub content: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When the API accepted the message (server clock).
    #[schema(value_type = String, format = DateTime)]
    pub accepted_at: Timestamp,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub direction: Option<Direction>,
    #[serde(default)]
    pub audio_url: Option<String>,
    pub flagged: bool,
    pub blocked: bool,
    #[serde(default)]
    pub flag_reason: Option<String>,
    pub safety: SafetyVerdict,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    /// On an assistant message: the tool calls it asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// On a tool message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A removed message's tombstone (stored only, never answered): its
    /// index stays taken, its content is gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(ignore)]
    pub removed: bool,
    /// What the message says, sealed under its user's data key (stored
    /// only, never answered: reads open it into the fields above).
    #[serde(default, skip_serializing_if = "SealedFields::is_empty")]
    #[schema(ignore)]
    pub sealed: SealedFields,
}

impl Message {
    /// The tombstone a removal leaves: the index, id, role and times stay
    /// (the index must stay gapless); everything said is gone.
    pub fn tombstone(&self) -> Message {
        Message {
            message_id: self.message_id.clone(),
            conversation_id: self.conversation_id.clone(),
            message_index: self.message_index,
            role: self.role,
            content: String::new(),
            created_at: self.created_at,
            accepted_at: self.accepted_at,
            external_id: None,
            direction: self.direction,
            audio_url: None,
            flagged: false,
            blocked: false,
            flag_reason: None,
            safety: SafetyVerdict::safe(),
            metadata: Metadata::new(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            removed: true,
            sealed: SealedFields::new(),
        }
    }
}

/// Per (owner, user) totals, updated when a session ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStats {
    pub user_id: String,
    pub conversations: u64,
    pub messages: u64,
    pub total_seconds: i64,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_conversation_at: Option<Timestamp>,
}
