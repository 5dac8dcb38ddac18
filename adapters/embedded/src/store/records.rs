//! The stored forms and the key layout: chunks, erasure jobs and
//! idempotency records as stored, the keys of every table and index, and
//! the reads and deltas every query and commit share.

use super::*;

pub(super) type Table = TableDefinition<'static, &'static str, &'static [u8]>;

pub(super) const CONVERSATIONS: Table = TableDefinition::new("conversations");
pub(super) const CHUNKS: Table = TableDefinition::new("message_chunks");
pub(super) const EXTERNAL_IDS: Table = TableDefinition::new("external_ids");
pub(super) const PAIRS: Table = TableDefinition::new("active_pairs");
pub(super) const BY_USER: Table = TableDefinition::new("conversations_by_user");
pub(super) const ACTIVE: Table = TableDefinition::new("active_by_start");
pub(super) const STATS: Table = TableDefinition::new("user_stats");
pub(super) const IDEMPOTENCY: Table = TableDefinition::new("idempotency_keys");
pub(super) const STORE_INFO: Table = TableDefinition::new("store_info");
/// The sweeper's place in [`ACTIVE`] (in [`STORE_INFO`]).
pub(super) const SWEEP_CURSOR: &str = "sweep_cursor";
pub(super) const FLAGGED_CONVERSATIONS: Table = TableDefinition::new("flagged_conversations");
pub(super) const FLAGGED_MESSAGES: Table = TableDefinition::new("flagged_messages");
pub(super) const EXPIRING: Table = TableDefinition::new("conversations_by_expiry");
/// The owner's listings: every conversation, by agent, by status and the
/// flagged ones, each under its own key prefix ([`list_prefix`]).
pub(super) const LISTS: Table = TableDefinition::new("conversation_lists");
/// Users' erasure jobs, by erasure id.
pub(super) const ERASURES: Table = TableDefinition::new("erasure_jobs");

pub(super) const ALL_TABLES: [Table; 14] = [
    ERASURES,
    LISTS,
    EXPIRING,
    FLAGGED_CONVERSATIONS,
    FLAGGED_MESSAGES,
    CONVERSATIONS,
    CHUNKS,
    EXTERNAL_IDS,
    PAIRS,
    BY_USER,
    ACTIVE,
    STATS,
    IDEMPOTENCY,
    STORE_INFO,
];

/// A chunk as stored: its messages and the head as of its last one.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredChunk {
    pub(super) messages: Vec<Message>,
    pub(super) last_activity_at: Timestamp,
    #[serde(default)]
    pub(super) first_message_preview: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) sealed_first_preview: Option<Sealed>,
    #[serde(default)]
    pub(super) state: HeadState,
}

impl StoredChunk {
    pub(super) fn of(chunk: &Chunk) -> Self {
        Self {
            messages: chunk.messages.clone(),
            last_activity_at: chunk.head.last_activity_at,
            first_message_preview: chunk.head.first_message_preview.clone(),
            sealed_first_preview: chunk.head.sealed_first_preview.clone(),
            state: chunk.head.state.clone(),
        }
    }

    pub(super) fn head(&self, first_index: u64) -> Head {
        let (last_message_preview, last_sealed) = Head::last_preview_of(self.messages.last());
        Head {
            message_count: first_index + self.messages.len() as u64,
            last_activity_at: self.last_activity_at,
            first_message_preview: self.first_message_preview.clone(),
            last_message_preview,
            sealed_first_preview: self.sealed_first_preview.clone(),
            last_sealed,
            state: self.state.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct ErasureItem {
    pub(super) version: u64,
    pub(super) job: ErasureJob,
}

#[derive(Serialize, Deserialize)]
pub(super) struct IdempotencyItem {
    pub(super) record: IdempotencyRecord,
    pub(super) expires_at: Timestamp,
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored types serialize")
}

pub(super) fn pair_key(c: &Conversation) -> String {
    key(&[&c.owner_id, &c.agent_id, &c.user_id])
}

pub(super) fn by_user_key(c: &Conversation) -> String {
    key(&[&c.owner_id, &c.user_id, &millis(c.created_at), &c.conversation_id])
}

/// Where a list's keys start: each is followed by `<created>␟<id>`.
pub(super) fn list_prefix(owner: &str, list: &ConversationList) -> String {
    let parts = match list {
        ConversationList::All => key(&["all", owner]),
        ConversationList::User(user) => return format!("{}{SEP}", key(&[owner, user])),
        ConversationList::Agent(agent) => key(&["agent", owner, agent]),
        ConversationList::Status(status) => key(&["status", owner, status.as_str()]),
        ConversationList::Flagged => key(&["flagged", owner]),
    };
    format!("{parts}{SEP}")
}

/// The entries a conversation has in [`LISTS`] (by user is [`BY_USER`]).
pub(super) fn list_keys(c: &Conversation) -> Vec<String> {
    let at = key(&[&millis(c.created_at), &c.conversation_id]);
    memberships(c)
        .lists
        .iter()
        .map(|l| format!("{}{at}", list_prefix(&c.owner_id, l)))
        .collect()
}

/// Writes the list entries of `new`, removing those of `old` it no longer has.
pub(super) fn write_lists(
    txn: &redb::WriteTransaction,
    old: Option<&Conversation>,
    new: Option<&Conversation>,
) -> Result<(), StoreError> {
    let old = old.map(list_keys).unwrap_or_default();
    let new = new.map(list_keys).unwrap_or_default();
    let mut lists = txn.open_table(LISTS).map_err(unavailable)?;
    for k in old.iter().filter(|k| !new.contains(k)) {
        lists.remove(k.as_str()).map_err(unavailable)?;
    }
    for k in new.iter().filter(|k| !old.contains(k)) {
        lists.insert(k.as_str(), &[][..]).map_err(unavailable)?;
    }
    Ok(())
}

pub(super) fn active_key(c: &Conversation) -> String {
    key(&[&millis(c.start_time), &c.conversation_id])
}

pub(super) fn expiry_key(c: &Conversation) -> Option<String> {
    memberships(c)
        .expires_at
        .map(|t| key(&[&millis(t), &c.conversation_id]))
}

pub(super) fn flagged_key(c: &Conversation) -> Option<String> {
    memberships(c)
        .review
        .map(|(status, at)| key(&[&c.owner_id, status.as_str(), &millis(at), &c.conversation_id]))
}

/// Removes every key of `table` that starts with `prefix`, which ends in
/// [`SEP`]: the keys from it up to the same prefix ending in the next
/// character (whatever characters follow, non-ASCII ones included).
pub(super) fn remove_prefix(txn: &redb::WriteTransaction, table: Table, prefix: &str) -> Result<(), StoreError> {
    let mut t = txn.open_table(table).map_err(unavailable)?;
    let upper = format!("{}\u{20}", prefix.strip_suffix(SEP).unwrap_or(prefix));
    let keys: Vec<String> = t
        .range(prefix..upper.as_str())
        .map_err(unavailable)?
        .map(|e| e.map(|(k, _)| k.value().to_string()).map_err(unavailable))
        .collect::<Result<_, _>>()?;
    for k in keys {
        t.remove(k.as_str()).map_err(unavailable)?;
    }
    Ok(())
}

pub(super) fn chunk_key(conversation_id: &str, first_index: u64) -> String {
    key(&[conversation_id, &num(first_index)])
}

pub(super) fn flag_key(conversation_id: &str, index: u64) -> String {
    key(&[conversation_id, &num(index)])
}

/// A conversation record as stored, with the head of its newest chunk
/// applied.
pub(super) fn load_record<T: ReadableTable<&'static str, &'static [u8]>>(
    convs: &T,
    chunks: &T,
    id: &str,
) -> Result<Option<ConversationRecord>, StoreError> {
    let Some(bytes) = convs.get(id).map_err(unavailable)? else {
        return Ok(None);
    };
    let mut record: ConversationRecord = decode(bytes.value())?;
    hydrate(chunks, &mut record)?;
    Ok(Some(record))
}

pub(super) fn hydrate<T: ReadableTable<&'static str, &'static [u8]>>(
    chunks: &T,
    record: &mut ConversationRecord,
) -> Result<(), StoreError> {
    let id = record.id().to_string();
    let (lo, hi) = (chunk_key(&id, 0), chunk_key(&id, u64::MAX));
    let newest = chunks
        .range(lo.as_str()..=hi.as_str())
        .map_err(unavailable)?
        .next_back();
    if let Some(entry) = newest {
        let (k, v) = entry.map_err(unavailable)?;
        let first = chunk_first(k.value())?;
        let chunk: StoredChunk = decode(v.value())?;
        record.apply_head(first, chunk.head(first));
    } else {
        record.apply_no_chunk();
    }
    Ok(())
}

pub(super) fn chunk_first(k: &str) -> Result<u64, StoreError> {
    k.rsplit(SEP)
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("chunk key {k:?}")))
}

/// The conversation item holds no per-append state: the chunks do.
pub(super) fn meta_of(record: &ConversationRecord) -> ConversationRecord {
    ConversationRecord {
        head: HeadState::default(),
        head_chunk: None,
        ..record.clone()
    }
}
