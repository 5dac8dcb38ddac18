//! The item codecs' tests: every item reads back as written, keys decode
//! into their parts, and bad items are refused.

use super::*;
use chrono::TimeZone;

fn message(index: u64, content: &str) -> Message {
    let at = chrono::Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap();
    Message {
        message_id: "01JD0000000000000000000001".into(),
        conversation_id: "01JD0000000000000000000000".into(),
        message_index: index,
        role: Role::User,
        content: content.into(),
        created_at: at,
        accepted_at: at,
        external_id: None,
        direction: None,
        audio_url: None,
        flagged: false,
        blocked: false,
        flag_reason: None,
        safety: SafetyVerdict::safe(),
        metadata: Metadata::new(),
        tool_calls: vec![],
        tool_call_id: None,
        removed: false,
        sealed: SealedFields::new(),
    }
}

#[test]
fn a_chunk_round_trips_every_field() {
    let mut flagged = message(8, "a flagged one");
    flagged.safety = SafetyVerdict {
        score: 0.6,
        action: SafetyAction::Flagged,
        categories: vec!["bullying".into()],
        severity: Some(convo_schema::Severity::Medium),
        reason: Some("bullying".into()),
        findings: vec![convo_schema::SafetyFinding {
            category: "bullying".into(),
            stage: convo_schema::SafetyStage::Learned,
            severity: convo_schema::Severity::Medium,
            probability: Some(0.91),
        }],
        model: Some("convo-safety-2".into()),
    };
    flagged.flagged = true;
    flagged.flag_reason = Some("bullying".into());
    flagged.created_at += chrono::Duration::nanoseconds(1_234_567);
    flagged.accepted_at += chrono::Duration::seconds(2);
    flagged.external_id = Some("SM1".into());
    flagged.direction = Some(Direction::Inbound);
    flagged.metadata.insert("lang".into(), "en".into());
    flagged.role = Role::Assistant;
    flagged.tool_calls = vec![ToolCall {
        id: "call_1".into(),
        name: "lookup".into(),
        arguments: r#"{"q":"volcano"}"#.into(),
    }];
    let mut result = message(9, "42");
    result.role = Role::Tool;
    result.tool_call_id = Some("call_1".into());
    let chunk = Chunk {
        conversation_id: "01JD0000000000000000000000".into(),
        first_index: 7,
        messages: vec![message(7, "hello"), flagged, result, message(10, "gone").tombstone()],
        head: Head {
            message_count: 11,
            last_activity_at: chrono::Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 2).unwrap(),
            first_message_preview: Some("hi".into()),
            // The last message is removed: it has no preview.
            last_message_preview: None,
            sealed_first_preview: None,
            last_sealed: None,
            state: HeadState {
                recent_commands: vec![1, u64::MAX],
                rate_window: Some(29_000_000),
                rate_count: 3,
                title_requested: true,
                risk_milli: 1250,
            },
        },
        expires_at: None,
    };
    let item = chunk_item(&chunk).unwrap();
    let (first, messages, head) = chunk_from(&item, &chunk.conversation_id).unwrap();
    assert_eq!((first, &messages, &head), (7, &chunk.messages, &chunk.head));
    assert_eq!(chunk_tags(&item), vec![1, u64::MAX]);
}

/// DynamoDB's item size: attribute names plus values (strings and
/// binaries by length, numbers by about one byte per two digits).
fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    AttributeValue::S(s) => s.len(),
                    AttributeValue::N(n) => n.len().div_ceil(2) + 1,
                    AttributeValue::B(b) => b.as_ref().len(),
                    AttributeValue::Bool(_) => 1,
                    _ => 100,
                }
        })
        .sum()
}

#[test]
fn an_exchange_of_two_200_character_messages_is_one_write_unit() {
    let text = "a".repeat(200);
    let mut user = message(40, &text);
    user.message_id = "01KBZZZZZZZZZZZZZZZZZZZZZ1".into();
    let mut agent = message(41, &text);
    agent.message_id = "01KBZZZZZZZZZZZZZZZZZZZZZ2".into();
    agent.role = Role::Assistant;
    let chunk = Chunk {
        conversation_id: "01KBZZZZZZZZZZZZZZZZZZZZZ0".into(),
        first_index: 40,
        messages: vec![user, agent],
        head: Head {
            message_count: 42,
            last_activity_at: chrono::Utc::now(),
            // The longest first preview: 120 characters and an ellipsis.
            first_message_preview: Some(format!("{}…", "b".repeat(120))),
            last_message_preview: None,
            sealed_first_preview: None,
            last_sealed: None,
            state: HeadState {
                recent_commands: vec![7; crate::dynamo::codec::tests::RECENT],
                rate_window: Some(29_000_000),
                rate_count: 29,
                title_requested: true,
                risk_milli: 0,
            },
        },
        expires_at: Some(chrono::Utc::now()),
    };
    let size = item_size(&chunk_item(&chunk).unwrap());
    assert!(size <= 1024, "{size} bytes");
}

/// Issue 16's cost: with every content and the first preview sealed
/// (29 bytes more each, stored as raw bytes), the exchange still fits
/// one write unit; and a sealed chunk round-trips, its last preview
/// read from the sealed last message.
#[test]
fn a_sealed_exchange_is_still_one_write_unit_and_round_trips() {
    let (key, _) = convo_domain::crypto::DataKey::generate().unwrap();
    let text = "a".repeat(200);
    let conversation = "01KBZZZZZZZZZZZZZZZZZZZZZ0";
    let mut user = message(40, &text);
    user.conversation_id = conversation.into();
    user.message_id = "01KBZZZZZZZZZZZZZZZZZZZZZ1".into();
    user.metadata.insert("lang".into(), "en".into());
    let mut agent = message(41, &text);
    agent.conversation_id = conversation.into();
    agent.message_id = "01KBZZZZZZZZZZZZZZZZZZZZZ2".into();
    agent.role = Role::Assistant;
    for m in [&mut user, &mut agent] {
        convo_domain::sealing::seal_message(&key, "toyco", m).unwrap();
        assert!(m.content.is_empty() && m.metadata.is_empty());
    }
    let preview = key
        .seal(
            &convo_domain::crypto::Place {
                owner: "toyco",
                conversation,
                item: "conversation",
                field: "preview",
            },
            format!("{}…", "b".repeat(120)).as_bytes(),
        )
        .unwrap();
    let chunk = Chunk {
        conversation_id: conversation.into(),
        first_index: 40,
        messages: vec![user, agent],
        head: Head {
            message_count: 42,
            last_activity_at: chrono::Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 2).unwrap(),
            first_message_preview: None,
            last_message_preview: None,
            sealed_first_preview: Some(Sealed(preview)),
            last_sealed: None,
            state: HeadState {
                recent_commands: vec![7; crate::dynamo::codec::tests::RECENT],
                rate_window: Some(29_000_000),
                rate_count: 29,
                title_requested: true,
                risk_milli: 0,
            },
        },
        expires_at: Some(chrono::Utc.with_ymd_and_hms(2027, 5, 1, 9, 0, 2).unwrap()),
    };
    let item = chunk_item(&chunk).unwrap();
    let size = item_size(&item);
    assert!(size <= 1024, "{size} bytes");
    // Binary, not base64: no attribute holds the ciphertext as text.
    assert!(matches!(item["m"], AttributeValue::B(_)));
    assert!(matches!(item["fq"], AttributeValue::B(_)));
    let (_, messages, head) = chunk_from(&item, conversation).unwrap();
    assert_eq!(messages, chunk.messages);
    assert_eq!(head.sealed_first_preview, chunk.head.sealed_first_preview);
    let last = head.last_sealed.expect("the last message is sealed");
    assert_eq!(last.message_id, "01KBZZZZZZZZZZZZZZZZZZZZZ2");
    let mut opened = messages[0].clone();
    convo_domain::sealing::open_message(&key, "toyco", &mut opened).unwrap();
    assert_eq!(opened.content, text);
    assert_eq!(opened.metadata["lang"], "en");
}

/// A chunk of the JSON layout (format 2) still reads.
#[test]
fn a_format_2_chunk_still_reads() {
    let mut item = key(conv_pk("01JD0000000000000000000000"), &chunk_sk(0));
    item.insert(
        "m".into(),
        s(r#"[{"i":"01JD0000000000000000000001","r":"user","c":"hello","t":1777626000000}]"#),
    );
    item.insert("la".into(), n(1_777_626_000_000i64));
    item.insert("fp".into(), s("hello"));
    item.insert("f".into(), n(2));
    let (_, messages, head) = chunk_from(&item, "01JD0000000000000000000000").unwrap();
    assert_eq!(messages[0].content, "hello");
    assert_eq!(head.last_message_preview.as_deref(), Some("hello"));
}

const RECENT: usize = convo_domain::model::RECENT_COMMANDS;

proptest::proptest! {
    /// No two distinct key tuples make the same key: every key that
    /// holds an owner decodes back into its parts (the owner, which may
    /// hold `#`, comes first; the ids after it cannot hold one).
    #[test]
    fn keys_decode_back_into_their_parts(
        owner in "[a-z#|:]{1,12}",
        agent in "[a-z0-9+.-]{1,8}",
        user in "[a-z0-9+.-]{1,8}",
    ) {
        proptest::prop_assume!(convo_schema::validate::is_owner_id(&owner));
        proptest::prop_assume!(convo_schema::validate::id("agentId", &agent).is_ok());
        proptest::prop_assume!(convo_schema::validate::id("userId", &user).is_ok());
        let mut c = sample_conversation();
        c.owner_id = owner.clone();
        c.agent_id = agent.clone();
        c.user_id = user.clone();
        let pair = pair_pk(&c);
        let mut parts = pair.strip_prefix("P#").unwrap().rsplitn(3, '#');
        proptest::prop_assert_eq!(
            (parts.next(), parts.next(), parts.next()),
            (Some(user.as_str()), Some(agent.as_str()), Some(owner.as_str()))
        );
        let stats = stats_pk(&owner, &user);
        proptest::prop_assert_eq!(
            stats.strip_prefix("U#").unwrap().rsplit_once('#'),
            Some((owner.as_str(), user.as_str()))
        );
        let by_user = by_user_pk(&owner, &user);
        proptest::prop_assert_eq!(
            by_user.strip_prefix("O#").unwrap().rsplit_once("#U#"),
            Some((owner.as_str(), user.as_str()))
        );
        let flagged = flagged_pk(&owner, FlagStatus::Unreviewed);
        proptest::prop_assert_eq!(
            flagged.strip_prefix("F#").unwrap().rsplit_once('#'),
            Some((owner.as_str(), "unreviewed"))
        );
        for status in ConversationStatus::ALL {
            for flag in [true, false] {
                let by_owner = by_owner_pk(&owner, status, flag);
                let mut parts = by_owner.strip_prefix("O#").unwrap().rsplitn(4, '#');
                proptest::prop_assert_eq!(
                    (parts.next(), parts.next(), parts.next(), parts.next()),
                    (Some(if flag { "F" } else { "N" }), Some(status.as_str()), Some("S"), Some(owner.as_str()))
                );
            }
        }
        let by_agent = by_agent_pk(&owner, &agent);
        proptest::prop_assert_eq!(
            by_agent.strip_prefix("O#").unwrap().rsplit_once("#A#"),
            Some((owner.as_str(), agent.as_str()))
        );
    }
}

fn sample_conversation() -> Conversation {
    let at = chrono::Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap();
    serde_json::from_value(serde_json::json!({
        "conversationId": "01JD0000000000000000000000", "ownerId": "o", "status": "active",
        "type": "chat", "channel": "web", "userId": "u", "agentId": "a",
        "createdAt": at, "startTime": at, "lastActivityAt": at, "messageCount": 0, "flagged": false
    }))
    .unwrap()
}
