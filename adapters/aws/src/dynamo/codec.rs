//! How convo's records map to DynamoDB items: keys, the conversation item,
//! and the compact message chunk (the item the worker writes once per
//! exchange).
//!
//! A chunk stores its messages as one JSON string with one-letter field
//! names, and drops what it can rebuild: the conversation id and message
//! index (from its keys), `flagged`, `blocked` and `flagReason` (from the
//! safety verdict, which is left out when it is the plain "safe"),
//! `acceptedAt` when it equals `createdAt`, and the last preview (from the
//! last message). Two 200-character messages and the head state come to
//! about 900 bytes: one write unit.
//!
//! Format 3 (issue 16) stores the messages as MessagePack in a binary
//! attribute, so that sealed values are raw bytes (JSON would carry them as
//! base64, a third more); format 2's JSON string is still read.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use convo_domain::ports::*;
use convo_schema::{
    Conversation, ConversationStatus, Direction, FlagStatus, Message, Metadata, Role, SafetyAction, SafetyVerdict,
    Sealed, SealedFields, Timestamp, ToolCall,
};
use serde::{Deserialize, Serialize};

use crate::resources::*;

pub type Item = HashMap<String, AttributeValue>;

/// The layout of the table's items: 2 is the chunked layout (1, one item
/// per message and the command ids in the conversation item, was never
/// deployed). Written on every conversation item and chunk, so a later
/// layout can find and migrate what is older.
pub const STORE_FORMAT: u32 = 3;

pub const META: &str = "META";
/// Every sort key from here to [`META`] is a chunk: one descending query of
/// this range with a limit of 2 reads the conversation item and its newest
/// chunk ("M#…" sorts before "META").
pub const CHUNK_PREFIX: &str = "M#";

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub fn conv_pk(id: &str) -> String {
    format!("C#{id}")
}

pub fn chunk_sk(first_index: u64) -> String {
    format!("{CHUNK_PREFIX}{first_index:020}")
}

pub fn flag_sk(index: u64) -> String {
    format!("F#{index:020}")
}

pub fn pair_pk(c: &Conversation) -> String {
    format!("P#{}#{}#{}", c.owner_id, c.agent_id, c.user_id)
}

pub fn stats_pk(owner: &str, user: &str) -> String {
    format!("U#{owner}#{user}")
}

/// Idempotency records live in their conversation's partition, so an
/// erasure removes them with it.
/// A user's erasure job: `E#<erasureId>` / [`ERASURE_SK`].
pub fn erasure_pk(erasure_id: &str) -> String {
    format!("E#{erasure_id}")
}

pub const ERASURE_SK: &str = "JOB";

/// The sweeper's place in the active index: one item.
pub const SWEEP_PK: &str = "SWEEP";
pub const SWEEP_SK: &str = "CURSOR";

pub fn idem_sk(key: &str) -> String {
    format!("I#{key}")
}

pub fn by_user_pk(owner: &str, user: &str) -> String {
    format!("O#{owner}#U#{user}")
}

/// The `byOwner` partition of a conversation in this status, flagged or not.
pub fn by_owner_pk(owner: &str, status: ConversationStatus, flagged: bool) -> String {
    format!("O#{owner}#S#{}#{}", status.as_str(), if flagged { "F" } else { "N" })
}

pub fn by_agent_pk(owner: &str, agent: &str) -> String {
    format!("O#{owner}#A#{agent}")
}

/// The sort key every listing index uses: creation time, then the id.
pub fn created_sk(c: &Conversation) -> String {
    format!("{}#{}", millis(c.created_at), c.conversation_id)
}

pub fn flagged_pk(owner: &str, status: FlagStatus) -> String {
    format!("F#{owner}#{}", status.as_str())
}

/// Milliseconds, fixed width, so that string order is time order.
pub fn millis(t: Timestamp) -> String {
    format!("{:015}", t.timestamp_millis().max(0))
}

fn shard(id: &str) -> u32 {
    id.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) % ACTIVE_SHARDS
}

pub fn key(pk: String, sk: &str) -> Item {
    HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
}

pub fn str_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn num_attr<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

pub fn ttl(expires: Option<Timestamp>) -> Option<AttributeValue> {
    expires.map(|t| n(t.timestamp()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaExtra {
    version: u64,
    #[serde(default)]
    deleting: bool,
    #[serde(default)]
    end_command: Option<u64>,
    #[serde(default)]
    counted_messages: Option<u64>,
    #[serde(default, rename = "kid")]
    key_id: Option<u64>,
}

/// The conversation item's sealed fields (issue 16), one binary each,
/// under short names: a conversation item is rewritten at its end, a title
/// and a review, and every byte over 1 KB is a second write unit.
const SEALED_ATTRIBUTE: &str = "e";
const SEALED_CODES: [(&str, &str); 6] = [
    (convo_domain::sealing::TITLE, "t"),
    (convo_domain::sealing::USER_NAME, "u"),
    (convo_domain::sealing::METADATA, "m"),
    (convo_domain::sealing::REVIEW_NOTE, "r"),
    (convo_domain::sealing::FIRST_PREVIEW, "f"),
    (convo_domain::sealing::LAST_PREVIEW, "l"),
];

fn sealed_code(name: &str) -> &str {
    SEALED_CODES.iter().find(|(n, _)| *n == name).map_or(name, |(_, c)| c)
}

fn sealed_name(code: &str) -> &str {
    SEALED_CODES.iter().find(|(_, c)| *c == code).map_or(code, |(n, _)| n)
}

/// The conversation item: every public field (the per-append ones as a
/// snapshot of its last write), its version and the index keys.
pub fn meta_item(r: &ConversationRecord) -> Result<Item, StoreError> {
    let c = &r.conversation;
    let mut item: Item = serde_dynamo::to_item(c).map_err(corrupt)?;
    item.retain(|_, v| !matches!(v, AttributeValue::Null(_)));
    item.insert(PK.into(), s(conv_pk(&c.conversation_id)));
    item.insert(SK.into(), s(META));
    item.insert("version".into(), n(r.version));
    item.insert("storeFormat".into(), n(STORE_FORMAT));
    if let Some(tag) = r.end_command {
        item.insert("endCommand".into(), n(tag));
    }
    if let Some(counted) = r.counted_messages {
        item.insert("countedMessages".into(), n(counted));
    }
    if let Some(kid) = r.key_id {
        item.insert("kid".into(), n(kid));
    }
    if !r.sealed.is_empty() {
        item.insert(
            SEALED_ATTRIBUTE.into(),
            AttributeValue::M(
                r.sealed
                    .iter()
                    .map(|(k, v)| (sealed_code(k).to_string(), AttributeValue::B(Blob::new(v.0.clone()))))
                    .collect(),
            ),
        );
    }
    if r.deleting {
        // Kept in the indexes so that an interrupted erasure can be found
        // and finished; readers skip it.
        item.insert("deleting".into(), AttributeValue::Bool(true));
    }
    item.insert(BY_USER_PK.into(), s(by_user_pk(&c.owner_id, &c.user_id)));
    // One sort key attribute for `byUser`, `byOwner` and `byAgent`.
    item.insert(BY_USER_SK.into(), s(created_sk(c)));
    item.insert(BY_OWNER_PK.into(), s(by_owner_pk(&c.owner_id, c.status, c.flagged)));
    item.insert(BY_AGENT_PK.into(), s(by_agent_pk(&c.owner_id, &c.agent_id)));
    if c.status == ConversationStatus::Active {
        item.insert(ACTIVE_PK.into(), s(format!("A#{}", shard(&c.conversation_id))));
        item.insert(
            ACTIVE_SK.into(),
            s(format!("{}#{}", millis(c.start_time), c.conversation_id)),
        );
    }
    if let (true, Some(status), Some(at)) = (c.flagged, c.flag_status, c.flagged_at) {
        item.insert(FLAGGED_PK.into(), s(flagged_pk(&c.owner_id, status)));
        item.insert(FLAGGED_SK.into(), s(format!("{}#{}", millis(at), c.conversation_id)));
    }
    if let Some(t) = ttl(c.expires_at) {
        item.insert(TTL_ATTRIBUTE.into(), t);
    }
    Ok(item)
}

/// A conversation item as read, before any chunk is applied.
pub fn record_from(mut item: Item) -> Result<ConversationRecord, StoreError> {
    let mut sealed = SealedFields::new();
    if let Some(AttributeValue::M(fields)) = item.remove(SEALED_ATTRIBUTE) {
        for (k, v) in fields {
            match v {
                AttributeValue::B(b) => {
                    sealed.insert(sealed_name(&k).to_string(), Sealed(b.into_inner()));
                }
                _ => return Err(corrupt("conversation: a sealed field is not binary")),
            }
        }
    }
    let extra: MetaExtra = serde_dynamo::from_item(item.clone()).map_err(corrupt)?;
    let conversation: Conversation = serde_dynamo::from_item(item).map_err(corrupt)?;
    Ok(ConversationRecord {
        conversation,
        version: extra.version,
        head: HeadState::default(),
        head_chunk: None,
        deleting: extra.deleting,
        end_command: extra.end_command,
        counted_messages: extra.counted_messages,
        key_id: extra.key_id,
        sealed,
        last_sealed: None,
        shredded: false,
    })
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// One message inside a chunk.
#[derive(Serialize, Deserialize)]
struct Packed {
    #[serde(rename = "i")]
    message_id: String,
    #[serde(rename = "r")]
    role: Role,
    #[serde(rename = "c", default, skip_serializing_if = "String::is_empty")]
    content: String,
    /// createdAt, milliseconds since the epoch, and any finer part.
    #[serde(rename = "t")]
    created_ms: i64,
    #[serde(rename = "tn", default, skip_serializing_if = "is_zero")]
    created_sub_ms: u32,
    /// acceptedAt, when it differs from createdAt.
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    accepted_ms: Option<i64>,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    external_id: Option<String>,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    direction: Option<Direction>,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    audio_url: Option<String>,
    /// The verdict, unless it is the plain "safe".
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    safety: Option<SafetyVerdict>,
    #[serde(rename = "m", default, skip_serializing_if = "serde_json::Map::is_empty")]
    metadata: Metadata,
    #[serde(rename = "tc", default, skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall>,
    #[serde(rename = "tk", default, skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
    #[serde(rename = "rm", default, skip_serializing_if = "std::ops::Not::not")]
    removed: bool,
    /// The sealed fields (issue 16), raw bytes in MessagePack.
    #[serde(rename = "e", default, skip_serializing_if = "SealedFields::is_empty")]
    sealed: SealedFields,
}

fn pack(m: &Message) -> Packed {
    let created_ms = m.created_at.timestamp_millis();
    let accepted_ms = m.accepted_at.timestamp_millis();
    let created_sub_ms = m.created_at.timestamp_subsec_nanos() % 1_000_000;
    Packed {
        message_id: m.message_id.clone(),
        role: m.role,
        content: m.content.clone(),
        created_ms,
        created_sub_ms,
        accepted_ms: (m.accepted_at != m.created_at).then_some(accepted_ms),
        external_id: m.external_id.clone(),
        direction: m.direction,
        audio_url: m.audio_url.clone(),
        safety: (m.safety != SafetyVerdict::safe()).then(|| m.safety.clone()),
        metadata: m.metadata.clone(),
        tool_calls: m.tool_calls.clone(),
        tool_call_id: m.tool_call_id.clone(),
        removed: m.removed,
        sealed: m.sealed.clone(),
    }
}

fn unpack(p: Packed, conversation_id: &str, index: u64) -> Result<Message, StoreError> {
    let created_at = chrono::DateTime::from_timestamp_millis(p.created_ms)
        .and_then(|t| t.checked_add_signed(chrono::Duration::nanoseconds(i64::from(p.created_sub_ms))))
        .ok_or_else(|| corrupt("chunk: createdAt out of range"))?;
    let accepted_at = match p.accepted_ms {
        Some(ms) => chrono::DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("chunk: acceptedAt"))?,
        None => created_at,
    };
    let safety = p.safety.unwrap_or_else(SafetyVerdict::safe);
    let flagged = safety.action != SafetyAction::Safe;
    Ok(Message {
        message_id: p.message_id,
        conversation_id: conversation_id.to_string(),
        message_index: index,
        role: p.role,
        content: p.content,
        created_at,
        accepted_at,
        external_id: p.external_id,
        direction: p.direction,
        audio_url: p.audio_url,
        flagged,
        blocked: safety.action == SafetyAction::Blocked,
        flag_reason: if flagged { safety.reason.clone() } else { None },
        safety,
        metadata: p.metadata,
        tool_calls: p.tool_calls,
        tool_call_id: p.tool_call_id,
        removed: p.removed,
        sealed: p.sealed,
    })
}

fn tags_blob(tags: &[CommandTag]) -> AttributeValue {
    AttributeValue::B(Blob::new(
        tags.iter().flat_map(|t| t.to_be_bytes()).collect::<Vec<u8>>(),
    ))
}

fn tags_from(item: &Item) -> Vec<CommandTag> {
    match item.get("rc").and_then(|v| v.as_b().ok()) {
        Some(blob) => blob
            .as_ref()
            .chunks_exact(8)
            .map(|b| {
                let mut eight = [0u8; 8];
                eight.copy_from_slice(b);
                u64::from_be_bytes(eight)
            })
            .collect(),
        None => Vec::new(),
    }
}

/// The head-state attributes of a chunk, as `(name, value or removal)`.
pub fn head_attributes(head: &HeadState) -> Vec<(&'static str, Option<AttributeValue>)> {
    vec![
        (
            "rc",
            (!head.recent_commands.is_empty()).then(|| tags_blob(&head.recent_commands)),
        ),
        ("rw", head.rate_window.map(n)),
        ("rn", (head.rate_count > 0).then(|| n(head.rate_count))),
        ("tr", head.title_requested.then_some(AttributeValue::Bool(true))),
        ("rk", (head.risk_milli > 0).then(|| n(head.risk_milli))),
    ]
}

pub fn chunk_item(chunk: &Chunk) -> Result<Item, StoreError> {
    let packed: Vec<Packed> = chunk.messages.iter().map(pack).collect();
    let mut item = key(conv_pk(&chunk.conversation_id), &chunk_sk(chunk.first_index));
    let bytes = rmp_serde::to_vec_named(&packed).map_err(corrupt)?;
    item.insert("m".into(), AttributeValue::B(Blob::new(bytes)));
    item.insert("la".into(), n(chunk.head.last_activity_at.timestamp_millis()));
    if let Some(fp) = &chunk.head.first_message_preview {
        item.insert("fp".into(), s(fp));
    }
    if let Some(sealed) = &chunk.head.sealed_first_preview {
        item.insert("fq".into(), AttributeValue::B(Blob::new(sealed.0.clone())));
    }
    for (name, value) in head_attributes(&chunk.head.state) {
        if let Some(v) = value {
            item.insert(name.into(), v);
        }
    }
    item.insert("f".into(), n(STORE_FORMAT));
    if let Some(t) = ttl(chunk.expires_at) {
        item.insert(TTL_ATTRIBUTE.into(), t);
    }
    Ok(item)
}

/// The first index of the chunk an item is, if it is one.
pub fn chunk_first(item: &Item) -> Option<u64> {
    str_attr(item, SK)?.strip_prefix(CHUNK_PREFIX)?.parse().ok()
}

pub fn chunk_tags(item: &Item) -> Vec<CommandTag> {
    tags_from(item)
}

/// A chunk item's messages and the head as of its last one.
pub fn chunk_from(item: &Item, conversation_id: &str) -> Result<(u64, Vec<Message>, Head), StoreError> {
    let first = chunk_first(item).ok_or_else(|| corrupt("chunk: sort key"))?;
    let packed: Vec<Packed> = match item.get("m") {
        Some(AttributeValue::B(bytes)) => rmp_serde::from_slice(bytes.as_ref()).map_err(corrupt)?,
        // Format 2: JSON.
        Some(AttributeValue::S(json)) => serde_json::from_str(json).map_err(corrupt)?,
        _ => return Err(corrupt("chunk: no messages")),
    };
    let messages = packed
        .into_iter()
        .enumerate()
        .map(|(i, p)| unpack(p, conversation_id, first + i as u64))
        .collect::<Result<Vec<_>, _>>()?;
    let last_activity_at = num_attr::<i64>(item, "la")
        .and_then(chrono::DateTime::from_timestamp_millis)
        .ok_or_else(|| corrupt("chunk: lastActivityAt"))?;
    let (last_message_preview, last_sealed) = Head::last_preview_of(messages.last());
    let head = Head {
        message_count: first + messages.len() as u64,
        last_activity_at,
        first_message_preview: str_attr(item, "fp").map(str::to_string),
        last_message_preview,
        sealed_first_preview: match item.get("fq") {
            Some(AttributeValue::B(b)) => Some(Sealed(b.as_ref().to_vec())),
            _ => None,
        },
        last_sealed,
        state: HeadState {
            recent_commands: tags_from(item),
            rate_window: num_attr(item, "rw"),
            rate_count: num_attr(item, "rn").unwrap_or(0),
            title_requested: item.get("tr").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
            risk_milli: num_attr(item, "rk").unwrap_or(0),
        },
    };
    Ok((first, messages, head))
}

/// A whole chunk as read, its retention included (a rewrite keeps it).
pub fn whole_chunk(item: &Item, conversation_id: &str) -> Result<Chunk, StoreError> {
    let (first_index, messages, head) = chunk_from(item, conversation_id)?;
    Ok(Chunk {
        conversation_id: conversation_id.to_string(),
        first_index,
        messages,
        head,
        expires_at: num_attr::<i64>(item, TTL_ATTRIBUTE).and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
    })
}

#[cfg(test)]
mod tests {
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
}
