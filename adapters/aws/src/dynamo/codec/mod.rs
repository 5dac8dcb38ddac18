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
    let memberships = convo_domain::store_rules::memberships(c);
    if memberships.active {
        item.insert(ACTIVE_PK.into(), s(format!("A#{}", shard(&c.conversation_id))));
        item.insert(
            ACTIVE_SK.into(),
            s(format!("{}#{}", millis(c.start_time), c.conversation_id)),
        );
    }
    if let Some((status, at)) = memberships.review {
        item.insert(FLAGGED_PK.into(), s(flagged_pk(&c.owner_id, status)));
        item.insert(FLAGGED_SK.into(), s(format!("{}#{}", millis(at), c.conversation_id)));
    }
    if let Some(t) = ttl(memberships.expires_at) {
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
mod tests;
