//! The events of convo's changes, built from what was committed.
//!
//! Producers (the API, the worker, the title generator) put them on the
//! events queue after the change is committed; the `publish-events`
//! function delivers them (EventBridge on AWS, signed webhooks locally).
//! Every id is derived from what caused the event, so a redelivered command
//! yields the same ids and a consumer drops the repeats.

use crate::ports::{EventPublisher, Metrics, OutgoingEvent};
use convo_schema::commands::{EndReason, TitleReason};
use convo_schema::events::{CloudEvent, EventData, EventType};
use convo_schema::{Conversation, Message, SafetyAction, Severity, Timestamp};

fn base(c: &Conversation) -> EventData {
    EventData {
        owner_id: c.owner_id.clone(),
        conversation_id: Some(c.conversation_id.clone()),
        user_id: c.user_id.clone(),
        // Never the child's name: it is personal data, sealed in the store
        // (issue 16), and an event goes where no erasure reaches.
        user_name: None,
        agent_id: Some(c.agent_id.clone()),
        agent_name: c.agent_name.clone(),
        ..EventData::default()
    }
}

fn event(t: EventType, key: &str, time: Timestamp, c: &Conversation, data: EventData) -> CloudEvent {
    CloudEvent::new(t, format!("{t}:{key}"), time, c.conversation_id.clone(), data)
}

pub fn conversation_created(c: &Conversation) -> CloudEvent {
    event(
        EventType::ConversationCreated,
        &c.conversation_id,
        c.created_at,
        c,
        EventData {
            conversation_type: Some(c.kind.clone()),
            channel: Some(c.channel.clone()),
            start_time: Some(c.start_time),
            ..base(c)
        },
    )
}

/// What a message's verdict says about it, with its index when known (an
/// event re-derived from a redelivered command does not know it).
pub struct FlaggedMessage<'a> {
    pub message_id: &'a str,
    pub message_index: Option<u64>,
    pub role: convo_schema::Role,
    pub safety: &'a convo_schema::SafetyVerdict,
    pub accepted_at: Timestamp,
}

impl<'a> From<&'a Message> for FlaggedMessage<'a> {
    fn from(m: &'a Message) -> Self {
        FlaggedMessage {
            message_id: &m.message_id,
            message_index: Some(m.message_index),
            role: m.role,
            safety: &m.safety,
            accepted_at: m.accepted_at,
        }
    }
}

fn verdict(c: &Conversation, m: &FlaggedMessage<'_>) -> EventData {
    EventData {
        message_id: Some(m.message_id.to_string()),
        message_index: m.message_index,
        role: Some(m.role),
        action: Some(m.safety.action),
        categories: m.safety.categories.clone(),
        severity: m.safety.severity,
        score: Some(m.safety.score),
        ..base(c)
    }
}

/// message.flagged or message.blocked, and safety.critical for a
/// critical verdict; nothing for a safe message.
pub fn message_events(c: &Conversation, m: &FlaggedMessage<'_>) -> Vec<CloudEvent> {
    let t = match m.safety.action {
        SafetyAction::Safe => return Vec::new(),
        SafetyAction::Flagged => EventType::MessageFlagged,
        SafetyAction::Blocked => EventType::MessageBlocked,
    };
    let mut out = vec![event(t, m.message_id, m.accepted_at, c, verdict(c, m))];
    if m.safety.severity == Some(Severity::Critical) {
        out.push(event(
            EventType::SafetyCritical,
            m.message_id,
            m.accepted_at,
            c,
            verdict(c, m),
        ));
    }
    out
}

/// The first flag of a conversation (one per conversation: its id is the
/// conversation's).
pub fn conversation_flagged(c: &Conversation, m: &FlaggedMessage<'_>) -> CloudEvent {
    event(
        EventType::ConversationFlagged,
        &c.conversation_id,
        c.flagged_at.unwrap_or(m.accepted_at),
        c,
        EventData {
            flag_type: c.flag_type.clone(),
            ..verdict(c, m)
        },
    )
}

/// A session's end (a conversation ends once).
pub fn session_ended(c: &Conversation, reason: EndReason) -> CloudEvent {
    event(
        EventType::SessionEnded,
        &c.conversation_id,
        c.end_time.unwrap_or(c.last_activity_at),
        c,
        EventData {
            start_time: Some(c.start_time),
            end_time: c.end_time,
            duration_seconds: c.duration_seconds,
            message_count: Some(c.message_count),
            end_reason: Some(reason),
            ..base(c)
        },
    )
}

/// A generated title (at most one per reason: early, then at the end).
pub fn title_generated(c: &Conversation, reason: TitleReason) -> CloudEvent {
    let why = match reason {
        TitleReason::EarlyExchanges => "early",
        TitleReason::SessionEnded => "ended",
    };
    event(
        EventType::TitleGenerated,
        &format!("{}:{why}", c.conversation_id),
        c.title_generated_at.unwrap_or(c.last_activity_at),
        c,
        EventData {
            title_source: c.title_source,
            ..base(c)
        },
    )
}

/// A review (each one is its own event, keyed by its time).
pub fn conversation_reviewed(c: &Conversation) -> CloudEvent {
    let at = c.reviewed_at.unwrap_or(c.last_activity_at);
    event(
        EventType::ConversationReviewed,
        &format!("{}:{}", c.conversation_id, at.timestamp_millis()),
        at,
        c,
        EventData {
            flag_status: c.flag_status,
            reviewed_by: c.reviewed_by.clone(),
            has_note: Some(c.review_note.is_some()),
            severity: c.severity,
            flag_type: c.flag_type.clone(),
            ..base(c)
        },
    )
}

/// An erased conversation: ids only (its names went with it).
pub fn conversation_erased(
    owner_id: &str,
    conversation_id: &str,
    user_id: &str,
    agent_id: Option<&str>,
    at: Timestamp,
) -> CloudEvent {
    CloudEvent::new(
        EventType::ConversationErased,
        format!("{}:{conversation_id}", EventType::ConversationErased),
        at,
        conversation_id.to_string(),
        EventData {
            owner_id: owner_id.to_string(),
            conversation_id: Some(conversation_id.to_string()),
            user_id: user_id.to_string(),
            agent_id: agent_id.map(str::to_string),
            ..EventData::default()
        },
    )
}

/// An erasure of a user's data (`request_id` names the erasure).
pub fn user_erased(owner_id: &str, user_id: &str, deleted: u64, request_id: &str, at: Timestamp) -> CloudEvent {
    CloudEvent::new(
        EventType::UserErased,
        format!("{}:{request_id}", EventType::UserErased),
        at,
        user_id.to_string(),
        EventData {
            owner_id: owner_id.to_string(),
            user_id: user_id.to_string(),
            conversations_deleted: Some(deleted),
            ..EventData::default()
        },
    )
}

/// The `publish-events` worker's rule: delivers a batch of queued events
/// and answers the record ids to retry (a failed delivery, or a body that
/// is not an event, which SQS parks in the dead-letter queue after its
/// tries).
pub async fn deliver(
    publisher: &dyn EventPublisher,
    metrics: &dyn Metrics,
    records: &[(String, String)],
) -> Vec<String> {
    let mut failed = Vec::new();
    let mut parsed = Vec::new();
    let mut record_ids = Vec::new();
    for (record_id, body) in records {
        match OutgoingEvent::parse(body) {
            Ok(e) => {
                parsed.push(e);
                record_ids.push(record_id.clone());
            }
            Err(why) => {
                tracing::error!(%record_id, error = %why, "undeliverable event record");
                failed.push(record_id.clone());
            }
        }
    }
    let results = if parsed.is_empty() {
        Vec::new()
    } else {
        publisher.publish(&parsed).await
    };
    let mut delivered = 0usize;
    for (i, (record_id, event)) in record_ids.iter().zip(&parsed).enumerate() {
        match results.get(i) {
            Some(Ok(())) => delivered += 1,
            Some(Err(why)) => {
                tracing::warn!(event_id = %event.id, event_type = %event.event_type, error = %why, "event not delivered; retried later");
                failed.push(record_id.clone());
            }
            None => failed.push(record_id.clone()),
        }
    }
    metrics.record(&[
        ("EventsDelivered", delivered as f64, "Count"),
        ("EventsNotDelivered", (parsed.len() - delivered) as f64, "Count"),
    ]);
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::NoMetrics;
    use std::sync::Mutex;

    /// Refuses the events whose id ends with "!", and answers `short` fewer
    /// results than it was given.
    struct Picky {
        short: usize,
        seen: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl EventPublisher for Picky {
        async fn publish(&self, events: &[OutgoingEvent]) -> Vec<Result<(), String>> {
            self.seen.lock().unwrap().extend(events.iter().map(|e| e.id.clone()));
            let mut out: Vec<Result<(), String>> = events
                .iter()
                .map(|e| {
                    if e.id.ends_with('!') {
                        Err("refused".into())
                    } else {
                        Ok(())
                    }
                })
                .collect();
            out.truncate(events.len().saturating_sub(self.short));
            out
        }
    }

    fn record(id: &str) -> String {
        let c = CloudEvent::new(
            EventType::SessionEnded,
            id.to_string(),
            chrono::Utc::now(),
            "c".into(),
            EventData::default(),
        );
        serde_json::to_string(&c).unwrap()
    }

    #[tokio::test]
    async fn deliver_retries_exactly_what_was_not_delivered() {
        let p = Picky {
            short: 0,
            seen: Mutex::default(),
        };
        let records = vec![
            ("r1".to_string(), record("a")),
            ("r2".to_string(), "{not an event".to_string()),
            ("r3".to_string(), record("b!")),
            ("r4".to_string(), record("c")),
        ];
        let failed = deliver(&p, &NoMetrics, &records).await;
        assert_eq!(failed, vec!["r2".to_string(), "r3".to_string()]);
        assert_eq!(
            *p.seen.lock().unwrap(),
            vec!["a", "b!", "c"],
            "the bad body is not sent"
        );
        // A publisher that answers too few results: the unanswered are retried.
        let p = Picky {
            short: 1,
            seen: Mutex::default(),
        };
        let failed = deliver(&p, &NoMetrics, &records[..1]).await;
        assert_eq!(failed, vec!["r1".to_string()]);
        // Nothing to send: nothing sent, nothing failed.
        let p = Picky {
            short: 0,
            seen: Mutex::default(),
        };
        assert!(deliver(&p, &NoMetrics, &[]).await.is_empty());
        assert!(p.seen.lock().unwrap().is_empty());
    }
}
