//! The rules every store keeps, as pure functions over the model: which
//! indexes a conversation is in, when its (agent, user) pair is held and
//! released, which conversation `reuseActive` may hand out, and the
//! arithmetic of a user's totals. The embedded store (redb) and the
//! DynamoDB store call these and only translate the answer into their own
//! keys, transactions and update expressions; the contract suite
//! (`tests/contract`) runs the same cases on both.
//!
//! Where a store cannot call a rule directly (a DynamoDB update expression
//! does the arithmetic on the server), the rule's doc names the expression
//! that translates it, and a contract case holds both stores to it.

use convo_schema::{Conversation, ConversationStatus, FlagStatus, Timestamp, UserStats};

use crate::model::{ConversationList, ConversationRecord, StatsDelta};

/// The indexes a conversation is in, from its state alone: a write adds
/// the entries of the new state and removes those of the old one it no
/// longer has.
#[derive(Debug, Clone, PartialEq)]
pub struct Memberships {
    /// The owner's lists (`GET /conversations` and its filters); every
    /// conversation is in its user's list too, which each store keeps as
    /// its own index (the erasure's and the export's).
    pub lists: Vec<ConversationList>,
    /// In the sweeper's index of active sessions, by start time.
    pub active: bool,
    /// In the review queue: its review state and when it was flagged.
    pub review: Option<(FlagStatus, Timestamp)>,
    /// When it expires (the embedded store's expiry index; DynamoDB's TTL).
    pub expires_at: Option<Timestamp>,
}

pub fn memberships(c: &Conversation) -> Memberships {
    let mut lists = vec![
        ConversationList::All,
        ConversationList::Agent(c.agent_id.clone()),
        ConversationList::Status(c.status),
    ];
    if c.flagged {
        lists.push(ConversationList::Flagged);
    }
    Memberships {
        lists,
        active: c.status == ConversationStatus::Active,
        review: match (c.flagged, c.flag_status, c.flagged_at) {
            (true, Some(status), Some(at)) => Some((status, at)),
            _ => None,
        },
        expires_at: c.expires_at,
    }
}

/// Whether `reuseActive` may hand out this conversation, which its pair
/// points at: an active one that is not being erased. Any other is stale,
/// and the create takes the pair over.
pub fn reusable(existing: &ConversationRecord) -> bool {
    existing.conversation.status == ConversationStatus::Active && !existing.deleting
}

/// Whether a write from `old` to `new` releases the (agent, user) pair
/// (when it still points at this conversation): the session stops being
/// active. The only such write is a session's end, which counts the
/// conversation in the user's totals (`persist`): DynamoDB, which writes
/// without reading the old item, releases on a write whose totals delta
/// counts a conversation, after its transaction (a conditional delete; a
/// pair it fails to release is stale, and [`reusable`] lets the next create
/// take it over).
pub fn releases_pair(old: &Conversation, new: &Conversation) -> bool {
    old.status == ConversationStatus::Active && new.status != ConversationStatus::Active
}

/// Applies a delta to a user's totals: counts are added (never below
/// zero), and `lastConversationAt` is a max, so ends applied out of order
/// leave the latest. On DynamoDB: `ADD conversations :c, messages :m,
/// totalSeconds :s` with `SET lastConversationAt = :at` conditioned on
/// `lastConversationAt <= :at`.
pub fn apply_delta(s: &mut UserStats, delta: &StatsDelta) {
    s.conversations = s.conversations.saturating_add_signed(delta.conversations);
    s.messages = s.messages.saturating_add_signed(delta.messages);
    s.total_seconds = (s.total_seconds + delta.seconds).max(0);
    s.last_conversation_at = s.last_conversation_at.max(delta.at);
}

/// Whether a removal's (negative) delta applies to the totals held: only
/// to a row that exists and holds the conversations it takes away, so a
/// removal never creates a row nor drives one negative. On DynamoDB: the
/// condition `attribute_exists(pk) AND conversations >= :held`.
pub fn removal_applies(held: Option<&UserStats>, delta: &StatsDelta) -> bool {
    held.is_some_and(|s| i128::from(s.conversations) >= -i128::from(delta.conversations))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> Timestamp {
        chrono::Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn conversation(status: ConversationStatus) -> Conversation {
        let mut c: Conversation = serde_json::from_value(serde_json::json!({
            "conversationId": "c1", "ownerId": "o", "status": "active", "type": "chat",
            "channel": "web", "userId": "u", "agentId": "a", "createdAt": at(0),
            "startTime": at(0), "lastActivityAt": at(0), "messageCount": 0, "flagged": false
        }))
        .expect("a conversation");
        c.status = status;
        c
    }

    #[test]
    fn memberships_follow_the_state() {
        let mut c = conversation(ConversationStatus::Active);
        let m = memberships(&c);
        assert!(m.active && m.review.is_none());
        assert!(!m.lists.contains(&ConversationList::Flagged));
        c.flagged = true;
        c.flag_status = Some(FlagStatus::Unreviewed);
        c.flagged_at = Some(at(0));
        c.status = ConversationStatus::Ended;
        let m = memberships(&c);
        assert!(!m.active);
        assert_eq!(m.review, Some((FlagStatus::Unreviewed, at(0))));
        assert!(m.lists.contains(&ConversationList::Flagged));
        assert!(m.lists.contains(&ConversationList::Status(ConversationStatus::Ended)));
    }

    #[test]
    fn the_pair_is_released_by_an_end_only() {
        use ConversationStatus::*;
        assert!(releases_pair(&conversation(Active), &conversation(Ended)));
        assert!(!releases_pair(&conversation(Active), &conversation(Active)));
        assert!(!releases_pair(&conversation(Ended), &conversation(Archived)));
    }

    #[test]
    fn totals_add_up_and_the_last_conversation_is_a_max() {
        let mut s = UserStats::default();
        apply_delta(
            &mut s,
            &StatsDelta {
                conversations: 1,
                messages: 4,
                seconds: 30,
                at: Some(at(10)),
            },
        );
        apply_delta(
            &mut s,
            &StatsDelta {
                conversations: 1,
                messages: 2,
                seconds: 5,
                at: Some(at(5)),
            },
        );
        assert_eq!((s.conversations, s.messages, s.total_seconds), (2, 6, 35));
        assert_eq!(
            s.last_conversation_at,
            Some(at(10)),
            "an older end does not move it back"
        );
        apply_delta(
            &mut s,
            &StatsDelta {
                conversations: -5,
                messages: -50,
                seconds: -500,
                at: None,
            },
        );
        assert_eq!(
            (s.conversations, s.messages, s.total_seconds),
            (0, 0, 0),
            "never below zero"
        );
        let removal = StatsDelta {
            conversations: -1,
            messages: -3,
            seconds: -1,
            at: None,
        };
        assert!(!removal_applies(None, &removal), "no row is created");
        assert!(!removal_applies(Some(&s), &removal), "none held");
        s.conversations = 1;
        assert!(removal_applies(Some(&s), &removal));
    }
}
