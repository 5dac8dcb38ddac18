//! The events convo emits: CloudEvents 1.0 in JSON, one `data` shape
//! (version 1, named by `dataschema`) whose fields each type fills as
//! documented. `data` holds ids, names, verdicts, counts and times, never
//! what anyone wrote: a consumer reads content through the API.

use serde::{Deserialize, Serialize};

use crate::commands::EndReason;
use crate::{FlagStatus, Role, SafetyAction, Severity, Timestamp, TitleSource};

pub const SPEC_VERSION: &str = "1.0";
pub const DATA_CONTENT_TYPE: &str = "application/json";
/// The version of [`EventData`]; a change that removes or changes a field
/// gets a new one.
pub const DATA_SCHEMA: &str = "urn:convo:events:v1";
/// The CloudEvents `source` unless a deployment names its own.
pub const DEFAULT_SOURCE: &str = "convo";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    /// A conversation was created.
    #[serde(rename = "conversation.created")]
    ConversationCreated,
    /// A conversation was flagged for the first time.
    #[serde(rename = "conversation.flagged")]
    ConversationFlagged,
    /// A stored message was flagged by the moderator.
    #[serde(rename = "message.flagged")]
    MessageFlagged,
    /// A stored message was blocked (withheld) by the moderator.
    #[serde(rename = "message.blocked")]
    MessageBlocked,
    /// A message got a critical-severity verdict (for example self-harm);
    /// emitted besides its message.flagged or message.blocked.
    #[serde(rename = "safety.critical")]
    SafetyCritical,
    /// A session ended (by the client or the idle sweep).
    #[serde(rename = "session.ended")]
    SessionEnded,
    /// A title was generated.
    #[serde(rename = "title.generated")]
    TitleGenerated,
    /// A flagged conversation was reviewed.
    #[serde(rename = "conversation.reviewed")]
    ConversationReviewed,
    /// A conversation and everything stored with it was erased.
    #[serde(rename = "conversation.erased")]
    ConversationErased,
    /// Everything the owner held about a user was erased.
    #[serde(rename = "user.erased")]
    UserErased,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::ConversationCreated,
        EventType::ConversationFlagged,
        EventType::MessageFlagged,
        EventType::MessageBlocked,
        EventType::SafetyCritical,
        EventType::SessionEnded,
        EventType::TitleGenerated,
        EventType::ConversationReviewed,
        EventType::ConversationErased,
        EventType::UserErased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ConversationCreated => "conversation.created",
            EventType::ConversationFlagged => "conversation.flagged",
            EventType::MessageFlagged => "message.flagged",
            EventType::MessageBlocked => "message.blocked",
            EventType::SafetyCritical => "safety.critical",
            EventType::SessionEnded => "session.ended",
            EventType::TitleGenerated => "title.generated",
            EventType::ConversationReviewed => "conversation.reviewed",
            EventType::ConversationErased => "conversation.erased",
            EventType::UserErased => "user.erased",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CloudEvents 1.0 event in its JSON format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "specversion": "1.0",
    "id": "message.flagged:01JD8X5Q0M3ZC2T7K6V9R4B1NA",
    "source": "convo",
    "type": "message.flagged",
    "time": "2026-12-01T10:15:02.113Z",
    "subject": "01JD8X4T2W6Q1M0C8H5K3R7B2D",
    "datacontenttype": "application/json",
    "dataschema": "urn:convo:events:v1",
    "data": {"ownerId": "toyco", "conversationId": "01JD8X4T2W6Q1M0C8H5K3R7B2D", "userId": "child-42",
             "agentId": "teddy-7", "agentName": "Teddy",
             "messageId": "01JD8X5Q0M3ZC2T7K6V9R4B1NA", "messageIndex": 4, "role": "user",
             "action": "flagged", "categories": ["violence"], "severity": "medium", "score": 0.65}
}))]
pub struct CloudEvent {
    pub specversion: String,
    /// Derived from what caused the event (a redelivered write yields the
    /// same id): drop an id already seen.
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When the change happened.
    #[schema(value_type = String, format = DateTime)]
    pub time: Timestamp,
    /// The conversation id (the user id for `user.erased`).
    pub subject: String,
    pub datacontenttype: String,
    pub dataschema: String,
    pub data: EventData,
}

/// `data` of every event (`urn:convo:events:v1`). `ownerId` and `userId`
/// are always there; the other fields are there for the types named.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    pub owner_id: String,
    /// Every type but `user.erased`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    pub user_id: String,
    /// Not set: the child's name is personal data, sealed in the store
    /// (kept in the v1 shape for consumers that read it; always absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Every type but `user.erased`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// conversation.created: the conversation's type and channel.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub conversation_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// conversation.created, session.ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub start_time: Option<Timestamp>,
    /// message.flagged, message.blocked, safety.critical and
    /// conversation.flagged (the message that flagged it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The moderator's verdict on that message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<SafetyAction>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// conversation.flagged: the flag's type (its first category).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag_type: Option<String>,
    /// session.ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub end_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    /// session.ended: messages stored in the conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_count: Option<u64>,
    /// session.ended: `client` (POST …/end) or `idle` (the idle sweep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// title.generated (the title itself is read through the API: it is
    /// made of what was said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_source: Option<TitleSource>,
    /// conversation.reviewed: the outcome, the reviewer, whether a note was
    /// left (the note is read through the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag_status: Option<FlagStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_note: Option<bool>,
    /// user.erased: how many conversations went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations_deleted: Option<u64>,
}

impl CloudEvent {
    pub fn new(event_type: EventType, id: String, time: Timestamp, subject: String, data: EventData) -> Self {
        CloudEvent {
            specversion: SPEC_VERSION.into(),
            id,
            source: DEFAULT_SOURCE.into(),
            event_type,
            time,
            subject,
            datacontenttype: DATA_CONTENT_TYPE.into(),
            dataschema: DATA_SCHEMA.into(),
            data,
        }
    }
}

/// The largest event body convo sends (EventBridge takes 256 KiB an entry;
/// convo's are a few hundred bytes, names and ids being bounded).
pub const MAX_EVENT_BYTES: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_by_name() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(EventType::parse("message.deleted"), None);
    }

    #[test]
    fn the_envelope_is_cloudevents_json() {
        let e = CloudEvent::new(
            EventType::SessionEnded,
            "session.ended:c1".into(),
            "2026-12-01T10:00:00Z".parse().unwrap(),
            "c1".into(),
            EventData {
                owner_id: "o".into(),
                conversation_id: Some("c1".into()),
                user_id: "u".into(),
                end_reason: Some(EndReason::Idle),
                message_count: Some(4),
                ..EventData::default()
            },
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "session.ended");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"]["endReason"], "idle");
        assert_eq!(v["data"]["messageCount"], 4);
        assert!(v["data"].get("score").is_none() && v["data"].get("categories").is_none());
        let back: CloudEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
