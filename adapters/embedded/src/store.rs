//! The conversation store on redb, in the same shape as the DynamoDB store:
//! a conversation record (the fields that rarely change, under a version)
//! and message chunks keyed by their first index, each carrying the head
//! state as of its last message. Every port call is one redb transaction,
//! so each step of the worker's commit is atomic on its own and two writers
//! are serialised; the version check and the free-key check make a stale
//! writer fail exactly as a DynamoDB condition would.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use convo_domain::cursor;
use convo_domain::ports::*;
use convo_schema::{Conversation, ConversationStatus, FlagStatus, Message, Sealed, Timestamp, UserStats};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};

use convo_domain::pager::MessagePager;

use crate::db::{SEP, key, millis, num};

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

const CONVERSATIONS: Table = TableDefinition::new("conversations");
const CHUNKS: Table = TableDefinition::new("message_chunks");
const EXTERNAL_IDS: Table = TableDefinition::new("external_ids");
const PAIRS: Table = TableDefinition::new("active_pairs");
const BY_USER: Table = TableDefinition::new("conversations_by_user");
const ACTIVE: Table = TableDefinition::new("active_by_start");
const STATS: Table = TableDefinition::new("user_stats");
const IDEMPOTENCY: Table = TableDefinition::new("idempotency_keys");
const STORE_INFO: Table = TableDefinition::new("store_info");
/// The sweeper's place in [`ACTIVE`] (in [`STORE_INFO`]).
const SWEEP_CURSOR: &str = "sweep_cursor";
const FLAGGED_CONVERSATIONS: Table = TableDefinition::new("flagged_conversations");
const FLAGGED_MESSAGES: Table = TableDefinition::new("flagged_messages");
const EXPIRING: Table = TableDefinition::new("conversations_by_expiry");
/// The owner's listings: every conversation, by agent, by status and the
/// flagged ones, each under its own key prefix ([`list_prefix`]).
const LISTS: Table = TableDefinition::new("conversation_lists");
/// Users' erasure jobs, by erasure id.
const ERASURES: Table = TableDefinition::new("erasure_jobs");

const ALL_TABLES: [Table; 14] = [
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

/// The layout this code reads and writes: 2 is the chunked layout (1, with
/// one item per message, was never released). Kept in `store_info` so a
/// later layout can recognise and migrate a database.
pub const STORE_FORMAT: &str = "2";

/// A chunk as stored: its messages and the head as of its last one.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredChunk {
    messages: Vec<Message>,
    last_activity_at: Timestamp,
    #[serde(default)]
    first_message_preview: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_first_preview: Option<Sealed>,
    #[serde(default)]
    state: HeadState,
}

impl StoredChunk {
    fn of(chunk: &Chunk) -> Self {
        Self {
            messages: chunk.messages.clone(),
            last_activity_at: chunk.head.last_activity_at,
            first_message_preview: chunk.head.first_message_preview.clone(),
            sealed_first_preview: chunk.head.sealed_first_preview.clone(),
            state: chunk.head.state.clone(),
        }
    }

    fn head(&self, first_index: u64) -> Head {
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

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

#[derive(Serialize, Deserialize)]
struct ErasureItem {
    version: u64,
    job: ErasureJob,
}

#[derive(Serialize, Deserialize)]
struct IdempotencyItem {
    record: IdempotencyRecord,
    expires_at: Timestamp,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored types serialize")
}

fn pair_key(c: &Conversation) -> String {
    key(&[&c.owner_id, &c.agent_id, &c.user_id])
}

fn by_user_key(c: &Conversation) -> String {
    key(&[&c.owner_id, &c.user_id, &millis(c.created_at), &c.conversation_id])
}

/// Where a list's keys start: each is followed by `<created>␟<id>`.
fn list_prefix(owner: &str, list: &ConversationList) -> String {
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
fn list_keys(c: &Conversation) -> Vec<String> {
    let mut lists = vec![
        ConversationList::All,
        ConversationList::Agent(c.agent_id.clone()),
        ConversationList::Status(c.status),
    ];
    if c.flagged {
        lists.push(ConversationList::Flagged);
    }
    let at = key(&[&millis(c.created_at), &c.conversation_id]);
    lists
        .iter()
        .map(|l| format!("{}{at}", list_prefix(&c.owner_id, l)))
        .collect()
}

/// Writes the list entries of `new`, removing those of `old` it no longer has.
fn write_lists(
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

fn active_key(c: &Conversation) -> String {
    key(&[&millis(c.start_time), &c.conversation_id])
}

fn expiry_key(c: &Conversation) -> Option<String> {
    c.expires_at.map(|t| key(&[&millis(t), &c.conversation_id]))
}

fn flagged_key(c: &Conversation) -> Option<String> {
    match (c.flag_status, c.flagged_at) {
        (Some(status), Some(at)) if c.flagged => {
            Some(key(&[&c.owner_id, status.as_str(), &millis(at), &c.conversation_id]))
        }
        _ => None,
    }
}

fn apply_delta(s: &mut UserStats, delta: &StatsDelta) {
    s.conversations = s.conversations.saturating_add_signed(delta.conversations);
    s.messages = s.messages.saturating_add_signed(delta.messages);
    s.total_seconds = (s.total_seconds + delta.seconds).max(0);
}

/// Removes every key of `table` that starts with `prefix`, which ends in
/// [`SEP`]: the keys from it up to the same prefix ending in the next
/// character (whatever characters follow, non-ASCII ones included).
fn remove_prefix(txn: &redb::WriteTransaction, table: Table, prefix: &str) -> Result<(), StoreError> {
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

fn chunk_key(conversation_id: &str, first_index: u64) -> String {
    key(&[conversation_id, &num(first_index)])
}

fn flag_key(conversation_id: &str, index: u64) -> String {
    key(&[conversation_id, &num(index)])
}

/// A conversation record as stored, with the head of its newest chunk
/// applied.
fn load_record<T: ReadableTable<&'static str, &'static [u8]>>(
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

fn hydrate<T: ReadableTable<&'static str, &'static [u8]>>(
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

fn chunk_first(k: &str) -> Result<u64, StoreError> {
    k.rsplit(SEP)
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("chunk key {k:?}")))
}

/// The conversation item holds no per-append state: the chunks do.
fn meta_of(record: &ConversationRecord) -> ConversationRecord {
    ConversationRecord {
        head: HeadState::default(),
        head_chunk: None,
        ..record.clone()
    }
}

impl EmbeddedStore {
    pub fn new(db: Arc<Database>) -> Result<Self, String> {
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        for t in ALL_TABLES {
            txn.open_table(t).map_err(|e| e.to_string())?;
        }
        {
            let mut info = txn.open_table(STORE_INFO).map_err(|e| e.to_string())?;
            let found = info
                .get("format")
                .map_err(|e| e.to_string())?
                .map(|v| String::from_utf8_lossy(v.value()).to_string());
            match found {
                Some(f) if f == STORE_FORMAT => {
                    if info.get("lists").map_err(|e| e.to_string())?.is_none() {
                        Self::backfill_lists(&txn).map_err(|e| e.to_string())?;
                    }
                }
                Some(f) => {
                    return Err(format!(
                        "the database holds store format {f}; this convo reads {STORE_FORMAT}"
                    ));
                }
                None => {
                    let convs = txn.open_table(CONVERSATIONS).map_err(|e| e.to_string())?;
                    if !convs.is_empty().map_err(|e| e.to_string())? {
                        return Err(format!(
                            "the database was written by an earlier convo (store format 1); this one reads format {STORE_FORMAT}: move the data directory away"
                        ));
                    }
                    info.insert("format", STORE_FORMAT.as_bytes())
                        .map_err(|e| e.to_string())?;
                }
            }
            info.insert("lists", &b"1"[..]).map_err(|e| e.to_string())?;
        }
        txn.commit().map_err(|e| e.to_string())?;
        Ok(Self { db })
    }

    /// Lists the conversations of a database written before the owner's
    /// listings existed (the same format otherwise): once, on open.
    fn backfill_lists(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
        let convs = txn.open_table(CONVERSATIONS).map_err(unavailable)?;
        for entry in convs.iter().map_err(unavailable)? {
            let (_, v) = entry.map_err(unavailable)?;
            let record: ConversationRecord = decode(v.value())?;
            write_lists(txn, None, Some(&record.conversation))?;
        }
        Ok(())
    }

    /// Every stored key and value (as text) that contains `needle`, across
    /// all tables: how the erasure tests prove nothing is left.
    pub fn entries_containing(&self, needle: &str) -> Vec<String> {
        let mut found = Vec::new();
        let Ok(txn) = self.db.begin_read() else { return found };
        for t in ALL_TABLES {
            let Ok(table) = txn.open_table(t) else { continue };
            let Ok(iter) = table.iter() else { continue };
            for (k, v) in iter.flatten() {
                let (k, v) = (k.value().to_string(), String::from_utf8_lossy(v.value()).to_string());
                if k.contains(needle) || v.contains(needle) {
                    found.push(format!("{}: {k}", t.name()));
                }
            }
        }
        found
    }

    /// One page, newest first, of an index table whose keys start with
    /// `prefix` and end in the conversation id, and the cursor after it
    /// (bound to `prefix`: a cursor from elsewhere is refused).
    async fn index_page(
        &self,
        index: Table,
        prefix: String,
        cursor_in: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        let scope = format!("{}{SEP}{prefix}", index.name());
        let upper = match cursor_in {
            Some(c) => {
                let pos = cursor::decode(&scope, c)?;
                if !pos.starts_with(&prefix) {
                    return Err(StoreError::InvalidCursor);
                }
                pos
            }
            None => format!("{prefix}\u{7f}"),
        };
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(index).map_err(unavailable)?;
            let convs = txn.open_table(CONVERSATIONS).map_err(unavailable)?;
            let chunks = txn.open_table(CHUNKS).map_err(unavailable)?;
            let mut items = Vec::new();
            let mut last_key = None;
            let mut more = false;
            for entry in index.range(prefix.as_str()..upper.as_str()).map_err(unavailable)?.rev() {
                let (k, _) = entry.map_err(unavailable)?;
                if items.len() == limit {
                    more = true;
                    break;
                }
                let k = k.value().to_string();
                let id = k.rsplit(SEP).next().unwrap_or_default().to_string();
                if let Some(record) = load_record(&convs, &chunks, &id)? {
                    items.push(record);
                }
                last_key = Some(k);
            }
            let next_cursor = if more {
                last_key.map(|k| cursor::encode(&scope, &k))
            } else {
                None
            };
            Ok(Page { items, next_cursor })
        })
        .await
    }

    /// The conversations of a time-ordered index table (keys `<time>␟<id>`)
    /// below `hi`, oldest first, at most `limit`.
    /// The records of an index's entries below `hi` (and after `after`),
    /// at most `limit` entries examined; the last key examined when there
    /// were `limit` of them.
    async fn records_before(
        &self,
        index: Table,
        after: Option<String>,
        hi: String,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        use std::ops::Bound;
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(index).map_err(unavailable)?;
            let convs = txn.open_table(CONVERSATIONS).map_err(unavailable)?;
            let chunks = txn.open_table(CHUNKS).map_err(unavailable)?;
            let mut items = Vec::new();
            let mut examined = 0;
            let mut last = None;
            let lo = match after.as_deref() {
                Some(a) if a < hi.as_str() => Bound::Excluded(a),
                Some(_) => {
                    return Ok(Page {
                        items: Vec::new(),
                        next_cursor: None,
                    });
                }
                None => Bound::Unbounded,
            };
            for entry in index
                .range::<&str>((lo, Bound::Excluded(hi.as_str())))
                .map_err(unavailable)?
            {
                if examined == limit {
                    break;
                }
                examined += 1;
                let (k, _) = entry.map_err(unavailable)?;
                let k = k.value().to_string();
                let id = k.rsplit(SEP).next().unwrap_or_default();
                if let Some(record) = load_record(&convs, &chunks, id)? {
                    items.push(record);
                }
                last = Some(k);
            }
            Ok(Page {
                items,
                next_cursor: last.filter(|_| examined == limit),
            })
        })
        .await
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(unavailable)?
    }

    /// Writes the index entries that follow a conversation's state.
    fn write_indexes(
        txn: &redb::WriteTransaction,
        old: Option<&Conversation>,
        new: &Conversation,
    ) -> Result<(), StoreError> {
        let mut active = txn.open_table(ACTIVE).map_err(unavailable)?;
        if let Some(old) = old
            && old.status == ConversationStatus::Active
        {
            active.remove(active_key(old).as_str()).map_err(unavailable)?;
        }
        if new.status == ConversationStatus::Active {
            active.insert(active_key(new).as_str(), &[][..]).map_err(unavailable)?;
        }
        let mut by_user = txn.open_table(BY_USER).map_err(unavailable)?;
        by_user
            .insert(by_user_key(new).as_str(), &[][..])
            .map_err(unavailable)?;
        write_lists(txn, old, Some(new))?;
        if old.is_none()
            && let Some(k) = expiry_key(new)
        {
            txn.open_table(EXPIRING)
                .map_err(unavailable)?
                .insert(k.as_str(), &[][..])
                .map_err(unavailable)?;
        }
        let old_flag = old.and_then(flagged_key);
        let new_flag = flagged_key(new);
        if old_flag != new_flag {
            let mut flagged = txn.open_table(FLAGGED_CONVERSATIONS).map_err(unavailable)?;
            if let Some(k) = old_flag {
                flagged.remove(k.as_str()).map_err(unavailable)?;
            }
            if let Some(k) = new_flag {
                flagged.insert(k.as_str(), &[][..]).map_err(unavailable)?;
            }
        }
        Ok(())
    }

    /// Writes the conversation item (conditional on its version) and its
    /// index entries, and applies `stats` to the user's totals in the same
    /// transaction; an ended session releases its (agent, user) pair.
    async fn write_meta(
        &self,
        record: &ConversationRecord,
        expected_version: u64,
        stats: Option<StatsDelta>,
    ) -> Result<(), StoreError> {
        let record = meta_of(record);
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let old = Self::check_version(&txn, record.id(), expected_version)?;
            txn.open_table(CONVERSATIONS)
                .map_err(unavailable)?
                .insert(record.id(), encode(&record).as_slice())
                .map_err(unavailable)?;
            let c = &record.conversation;
            Self::write_indexes(&txn, Some(&old.conversation), c)?;
            if let Some(delta) = stats {
                let mut table = txn.open_table(STATS).map_err(unavailable)?;
                let sk = key(&[&c.owner_id, &c.user_id]);
                let mut s: UserStats = match table.get(sk.as_str()).map_err(unavailable)? {
                    Some(v) => decode(v.value())?,
                    None => UserStats {
                        user_id: c.user_id.clone(),
                        ..UserStats::default()
                    },
                };
                apply_delta(&mut s, &delta);
                s.last_conversation_at = s.last_conversation_at.max(delta.at);
                table.insert(sk.as_str(), encode(&s).as_slice()).map_err(unavailable)?;
            }
            if old.conversation.status == ConversationStatus::Active && c.status != ConversationStatus::Active {
                let mut pairs = txn.open_table(PAIRS).map_err(unavailable)?;
                let pk = pair_key(c);
                let points_here = pairs
                    .get(pk.as_str())
                    .map_err(unavailable)?
                    .is_some_and(|v| v.value() == record.id().as_bytes());
                if points_here {
                    pairs.remove(pk.as_str()).map_err(unavailable)?;
                }
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    fn check_version(txn: &redb::WriteTransaction, id: &str, expected: u64) -> Result<ConversationRecord, StoreError> {
        let table = txn.open_table(CONVERSATIONS).map_err(unavailable)?;
        let current: ConversationRecord = match table.get(id).map_err(unavailable)? {
            Some(bytes) => decode(bytes.value())?,
            None => {
                return Err(StoreError::Conflict(format!("conversation {id} does not exist")));
            }
        };
        if current.version != expected {
            return Err(StoreError::Conflict(format!(
                "version is {}, expected {expected}",
                current.version
            )));
        }
        Ok(current)
    }
}

#[async_trait]
impl ConversationStore for EmbeddedStore {
    async fn create_conversation(
        &self,
        record: &ConversationRecord,
        reuse_active: bool,
    ) -> Result<Created, StoreError> {
        let record = record.clone();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let c = &record.conversation;
            {
                let mut pairs = txn.open_table(PAIRS).map_err(unavailable)?;
                let pair = pair_key(c);
                if reuse_active {
                    let existing_id = pairs
                        .get(pair.as_str())
                        .map_err(unavailable)?
                        .map(|v| v.value().to_vec());
                    if let Some(existing_id) = existing_id {
                        let convs = txn.open_table(CONVERSATIONS).map_err(unavailable)?;
                        let id = String::from_utf8_lossy(&existing_id).to_string();
                        if let Some(bytes) = convs.get(id.as_str()).map_err(unavailable)? {
                            let existing: ConversationRecord = decode(bytes.value())?;
                            if existing.conversation.status == ConversationStatus::Active && !existing.deleting {
                                return Ok(Created::Existing(Box::new(existing)));
                            }
                        }
                    }
                }
                pairs
                    .insert(pair.as_str(), c.conversation_id.as_bytes())
                    .map_err(unavailable)?;
                let mut convs = txn.open_table(CONVERSATIONS).map_err(unavailable)?;
                convs
                    .insert(c.conversation_id.as_str(), encode(&meta_of(&record)).as_slice())
                    .map_err(unavailable)?;
            }
            Self::write_indexes(&txn, None, c)?;
            txn.commit().map_err(unavailable)?;
            Ok(Created::New)
        })
        .await
    }

    async fn get_conversation(&self, conversation_id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        let id = conversation_id.to_string();
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let convs = txn.open_table(CONVERSATIONS).map_err(unavailable)?;
            let chunks = txn.open_table(CHUNKS).map_err(unavailable)?;
            load_record(&convs, &chunks, &id)
        })
        .await
    }

    async fn put_conversation_with(
        &self,
        record: &ConversationRecord,
        expected_version: u64,
        stats: Option<StatsDelta>,
    ) -> Result<(), StoreError> {
        self.write_meta(record, expected_version, stats).await
    }

    async fn put_chunk(&self, chunk: &Chunk) -> Result<ChunkWrite, StoreError> {
        let k = chunk_key(&chunk.conversation_id, chunk.first_index);
        let stored = encode(&StoredChunk::of(chunk));
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut chunks = txn.open_table(CHUNKS).map_err(unavailable)?;
                if let Some(existing) = chunks.get(k.as_str()).map_err(unavailable)? {
                    let theirs: StoredChunk = decode(existing.value())?;
                    return Ok(ChunkWrite::Taken(theirs.state.recent_commands));
                }
                chunks.insert(k.as_str(), stored.as_slice()).map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)?;
            Ok(ChunkWrite::Stored)
        })
        .await
    }

    async fn update_head(
        &self,
        conversation_id: &str,
        chunk_first_index: u64,
        head: &HeadState,
    ) -> Result<(), StoreError> {
        let k = chunk_key(conversation_id, chunk_first_index);
        let head = head.clone();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut chunks = txn.open_table(CHUNKS).map_err(unavailable)?;
                let mut chunk: StoredChunk = match chunks.get(k.as_str()).map_err(unavailable)? {
                    Some(v) => decode(v.value())?,
                    None => return Err(StoreError::Conflict("the newest chunk is gone".into())),
                };
                chunk.state = head;
                chunks
                    .insert(k.as_str(), encode(&chunk).as_slice())
                    .map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn claim_external_ids(
        &self,
        conversation_id: &str,
        claims: &[(String, String)],
        _expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let id = conversation_id.to_string();
        let claims = claims.to_vec();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut externals = txn.open_table(EXTERNAL_IDS).map_err(unavailable)?;
                for (ext, message_id) in &claims {
                    let k = key(&[&id, ext]);
                    if let Some(held) = externals.get(k.as_str()).map_err(unavailable)?
                        && held.value() != message_id.as_bytes()
                    {
                        return Err(StoreError::Conflict("externalId held by another message".into()));
                    }
                    externals
                        .insert(k.as_str(), message_id.as_bytes())
                        .map_err(unavailable)?;
                }
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn put_flag_pointers(
        &self,
        conversation_id: &str,
        pointers: &[(u64, u64)],
        _expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let id = conversation_id.to_string();
        let pointers = pointers.to_vec();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut flags = txn.open_table(FLAGGED_MESSAGES).map_err(unavailable)?;
                for (index, chunk) in pointers {
                    flags
                        .insert(flag_key(&id, index).as_str(), num(chunk).as_bytes())
                        .map_err(unavailable)?;
                }
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn list_conversations(
        &self,
        owner_id: &str,
        list: &ConversationList,
        cursor_in: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        let table = match list {
            ConversationList::User(_) => BY_USER,
            _ => LISTS,
        };
        self.index_page(table, list_prefix(owner_id, list), cursor_in, limit)
            .await
    }

    async fn list_messages(&self, conversation_id: &str, q: &MessageQuery) -> Result<Page<Message>, StoreError> {
        let id = conversation_id.to_string();
        let q = q.clone();
        self.run(move |db| {
            let mut pager = MessagePager::new(&q, format!("M{SEP}{id}"))?;
            let txn = db.begin_read().map_err(unavailable)?;
            let chunks = txn.open_table(CHUNKS).map_err(unavailable)?;
            let (lo, hi) = match (q.order, pager.start_chunk()) {
                (Order::Asc, Some(from)) => (chunk_key(&id, from), chunk_key(&id, u64::MAX)),
                (Order::Desc, Some(from)) => (chunk_key(&id, 0), chunk_key(&id, from)),
                (_, None) => (chunk_key(&id, 0), chunk_key(&id, u64::MAX)),
            };
            let range = chunks.range(lo.as_str()..=hi.as_str()).map_err(unavailable)?;
            let iter: Box<dyn Iterator<Item = _>> = match q.order {
                Order::Asc => Box::new(range),
                Order::Desc => Box::new(range.rev()),
            };
            for entry in iter {
                let (k, v) = entry.map_err(unavailable)?;
                let chunk: StoredChunk = decode(v.value())?;
                if !pager.push(chunk_first(k.value())?, chunk.messages) {
                    break;
                }
            }
            Ok(pager.finish())
        })
        .await
    }

    async fn chunks_desc(
        &self,
        conversation_id: &str,
        below: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Chunk>, StoreError> {
        let id = conversation_id.to_string();
        let expires_at = self
            .get_conversation(conversation_id)
            .await?
            .and_then(|r| r.conversation.expires_at);
        self.run(move |db| {
            let hi = match below {
                Some(0) => return Ok(Vec::new()),
                Some(b) => chunk_key(&id, b - 1),
                None => chunk_key(&id, u64::MAX),
            };
            let txn = db.begin_read().map_err(unavailable)?;
            let chunks = txn.open_table(CHUNKS).map_err(unavailable)?;
            let lo = chunk_key(&id, 0);
            let mut out = Vec::new();
            for entry in chunks.range(lo.as_str()..=hi.as_str()).map_err(unavailable)?.rev() {
                if out.len() == limit {
                    break;
                }
                let (k, v) = entry.map_err(unavailable)?;
                let first = chunk_first(k.value())?;
                let stored: StoredChunk = decode(v.value())?;
                out.push(Chunk {
                    conversation_id: id.clone(),
                    first_index: first,
                    head: stored.head(first),
                    messages: stored.messages,
                    expires_at,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn rewrite_chunk(&self, chunk: &Chunk) -> Result<(), StoreError> {
        let key = chunk_key(&chunk.conversation_id, chunk.first_index);
        let stored = encode(&StoredChunk::of(chunk));
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            txn.open_table(CHUNKS)
                .map_err(unavailable)?
                .insert(key.as_str(), stored.as_slice())
                .map_err(unavailable)?;
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn list_flagged_messages(
        &self,
        conversation_id: &str,
        order: Order,
        cursor_in: Option<&str>,
        limit: usize,
    ) -> Result<Page<Message>, StoreError> {
        let id = conversation_id.to_string();
        let scope = flagged_scope(&format!("F{SEP}{conversation_id}"), order);
        let start = cursor::decode_index(&scope, cursor_in)?;
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let flags = txn.open_table(FLAGGED_MESSAGES).map_err(unavailable)?;
            let chunks = txn.open_table(CHUNKS).map_err(unavailable)?;
            let (lo, hi) = match order {
                Order::Asc => (flag_key(&id, start.unwrap_or(0)), flag_key(&id, u64::MAX)),
                Order::Desc => (flag_key(&id, 0), flag_key(&id, start.unwrap_or(u64::MAX))),
            };
            let range = flags.range(lo.as_str()..=hi.as_str()).map_err(unavailable)?;
            let entries: Box<dyn Iterator<Item = _>> = match order {
                Order::Asc => Box::new(range),
                Order::Desc => Box::new(range.rev()),
            };
            let mut items = Vec::new();
            let mut next = None;
            for entry in entries {
                let (k, v) = entry.map_err(unavailable)?;
                let index = chunk_first(k.value())?;
                let first: u64 = String::from_utf8_lossy(v.value())
                    .parse()
                    .map_err(|_| StoreError::Corrupt("flag pointer".into()))?;
                let Some(bytes) = chunks.get(chunk_key(&id, first).as_str()).map_err(unavailable)? else {
                    continue;
                };
                let chunk: StoredChunk = decode(bytes.value())?;
                // A pointer written before a commit that did not finish
                // may name a message stored elsewhere since: skip it.
                let Some(m) = chunk
                    .messages
                    .into_iter()
                    .find(|m| m.message_index == index && m.flagged)
                else {
                    continue;
                };
                if items.len() == limit {
                    next = Some(index);
                    break;
                }
                items.push(m);
            }
            Ok(Page {
                items,
                next_cursor: next.map(|n| cursor::encode(&scope, &n.to_string())),
            })
        })
        .await
    }

    async fn list_flagged_conversations(
        &self,
        owner_id: &str,
        status: FlagStatus,
        cursor_in: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        let prefix = format!("{}{SEP}", key(&[owner_id, status.as_str()]));
        let page = self.index_page(FLAGGED_CONVERSATIONS, prefix, cursor_in, limit).await?;
        Ok(Page {
            items: page.items.into_iter().filter(|r| !r.deleting).collect(),
            next_cursor: page.next_cursor,
        })
    }

    async fn existing_external_ids(
        &self,
        conversation_id: &str,
        external_ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let id = conversation_id.to_string();
        let ids = external_ids.to_vec();
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(EXTERNAL_IDS).map_err(unavailable)?;
            let mut found = HashMap::new();
            for ext in ids {
                if let Some(holder) = table.get(key(&[&id, &ext]).as_str()).map_err(unavailable)? {
                    let holder = String::from_utf8_lossy(holder.value()).to_string();
                    found.insert(ext, holder);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn user_stats(&self, owner_id: &str, user_id: &str) -> Result<Option<UserStats>, StoreError> {
        let sk = key(&[owner_id, user_id]);
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(STATS).map_err(unavailable)?;
            match table.get(sk.as_str()).map_err(unavailable)? {
                Some(v) => Ok(Some(decode(v.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn delete_conversation_items(&self, conversation_id: &str) -> Result<(), StoreError> {
        let prefix = format!("{conversation_id}{SEP}");
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            for table in [CHUNKS, EXTERNAL_IDS, FLAGGED_MESSAGES, IDEMPOTENCY] {
                remove_prefix(&txn, table, &prefix)?;
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn remove_conversation(
        &self,
        record: &ConversationRecord,
        expected_version: u64,
        stats: Option<StatsDelta>,
    ) -> Result<(), StoreError> {
        let record = record.clone();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let id = record.id().to_string();
            let current = Self::check_version(&txn, &id, expected_version)?;
            let c = &current.conversation;
            txn.open_table(CONVERSATIONS)
                .map_err(unavailable)?
                .remove(id.as_str())
                .map_err(unavailable)?;
            txn.open_table(BY_USER)
                .map_err(unavailable)?
                .remove(by_user_key(c).as_str())
                .map_err(unavailable)?;
            write_lists(&txn, Some(c), None)?;
            txn.open_table(ACTIVE)
                .map_err(unavailable)?
                .remove(active_key(c).as_str())
                .map_err(unavailable)?;
            if let Some(k) = expiry_key(c) {
                txn.open_table(EXPIRING)
                    .map_err(unavailable)?
                    .remove(k.as_str())
                    .map_err(unavailable)?;
            }
            if let Some(k) = flagged_key(c) {
                txn.open_table(FLAGGED_CONVERSATIONS)
                    .map_err(unavailable)?
                    .remove(k.as_str())
                    .map_err(unavailable)?;
            }
            {
                let mut pairs = txn.open_table(PAIRS).map_err(unavailable)?;
                let pk = pair_key(c);
                let points_here = pairs
                    .get(pk.as_str())
                    .map_err(unavailable)?
                    .is_some_and(|v| v.value() == id.as_bytes());
                if points_here {
                    pairs.remove(pk.as_str()).map_err(unavailable)?;
                }
            }
            if let Some(delta) = stats {
                let mut table = txn.open_table(STATS).map_err(unavailable)?;
                let sk = key(&[&c.owner_id, &c.user_id]);
                let existing: Option<UserStats> = match table.get(sk.as_str()).map_err(unavailable)? {
                    Some(v) => Some(decode(v.value())?),
                    None => None,
                };
                if let Some(mut s) = existing {
                    apply_delta(&mut s, &delta);
                    table.insert(sk.as_str(), encode(&s).as_slice()).map_err(unavailable)?;
                }
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn expired_conversations(&self, now: Timestamp, limit: usize) -> Result<Vec<ConversationRecord>, StoreError> {
        Ok(self
            .records_before(EXPIRING, None, format!("{}{SEP}", millis(now)), limit)
            .await?
            .items)
    }

    async fn set_last_conversation_at(
        &self,
        owner_id: &str,
        user_id: &str,
        at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let sk = key(&[owner_id, user_id]);
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut table = txn.open_table(STATS).map_err(unavailable)?;
                let existing: Option<UserStats> = match table.get(sk.as_str()).map_err(unavailable)? {
                    Some(v) => Some(decode(v.value())?),
                    None => None,
                };
                if let Some(mut stats) = existing {
                    stats.last_conversation_at = at;
                    table
                        .insert(sk.as_str(), encode(&stats).as_slice())
                        .map_err(unavailable)?;
                }
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn delete_user_stats(&self, owner_id: &str, user_id: &str) -> Result<(), StoreError> {
        let sk = key(&[owner_id, user_id]);
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            txn.open_table(STATS)
                .map_err(unavailable)?
                .remove(sk.as_str())
                .map_err(unavailable)?;
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn active_started_before(
        &self,
        started_before: Timestamp,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        let mut page = self
            .records_before(ACTIVE, after.map(str::to_string), millis(started_before), limit)
            .await?;
        page.items.retain(|r| !r.deleting);
        Ok(page)
    }

    async fn sweep_cursor(&self) -> Result<Option<String>, StoreError> {
        self.run(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let info = txn.open_table(STORE_INFO).map_err(unavailable)?;
            let cursor = info.get(SWEEP_CURSOR).map_err(unavailable)?;
            Ok(cursor.map(|v| String::from_utf8_lossy(v.value()).into_owned()))
        })
        .await
    }

    async fn set_sweep_cursor(&self, cursor: Option<&str>) -> Result<(), StoreError> {
        let cursor = cursor.map(str::to_string);
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut info = txn.open_table(STORE_INFO).map_err(unavailable)?;
                match &cursor {
                    Some(c) => info.insert(SWEEP_CURSOR, c.as_bytes()).map(|_| ()),
                    None => info.remove(SWEEP_CURSOR).map(|_| ()),
                }
                .map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn get_idempotency(
        &self,
        conversation_id: &str,
        idem_key: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let k = key(&[conversation_id, idem_key]);
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(IDEMPOTENCY).map_err(unavailable)?;
            let item: Option<IdempotencyItem> = match table.get(k.as_str()).map_err(unavailable)? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            };
            Ok(item.filter(|i| i.expires_at > now).map(|i| i.record))
        })
        .await
    }

    async fn put_idempotency(
        &self,
        conversation_id: &str,
        idem_key: &str,
        record: &IdempotencyRecord,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let k = key(&[conversation_id, idem_key]);
        let item = IdempotencyItem {
            record: record.clone(),
            expires_at,
        };
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let stored = {
                let mut table = txn.open_table(IDEMPOTENCY).map_err(unavailable)?;
                let live = match table.get(k.as_str()).map_err(unavailable)? {
                    Some(v) => decode::<IdempotencyItem>(v.value())?.expires_at > now,
                    None => false,
                };
                if !live {
                    table
                        .insert(k.as_str(), encode(&item).as_slice())
                        .map_err(unavailable)?;
                }
                !live
            };
            txn.commit().map_err(unavailable)?;
            Ok(stored)
        })
        .await
    }

    async fn settle_idempotency(&self, conversation_id: &str, idem_key: &str) -> Result<(), StoreError> {
        let k = key(&[conversation_id, idem_key]);
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut table = txn.open_table(IDEMPOTENCY).map_err(unavailable)?;
                let item: Option<IdempotencyItem> = match table.get(k.as_str()).map_err(unavailable)? {
                    Some(v) => Some(decode(v.value())?),
                    None => None,
                };
                if let Some(mut item) = item {
                    item.record.command = None;
                    table
                        .insert(k.as_str(), encode(&item).as_slice())
                        .map_err(unavailable)?;
                }
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn get_erasure(&self, erasure_id: &str) -> Result<Option<ErasureJob>, StoreError> {
        let k = erasure_id.to_string();
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(ERASURES).map_err(unavailable)?;
            let Some(v) = table.get(k.as_str()).map_err(unavailable)? else {
                return Ok(None);
            };
            let item: ErasureItem = decode(v.value())?;
            Ok(Some(ErasureJob {
                version: item.version,
                ..item.job
            }))
        })
        .await
    }

    async fn put_erasure(&self, job: &ErasureJob, expected_version: u64) -> Result<(), StoreError> {
        let k = job.erasure_id.clone();
        let item = ErasureItem {
            version: job.version,
            job: job.clone(),
        };
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut table = txn.open_table(ERASURES).map_err(unavailable)?;
                let stored = match table.get(k.as_str()).map_err(unavailable)? {
                    Some(v) => decode::<ErasureItem>(v.value())?.version,
                    None => 0,
                };
                if stored != expected_version {
                    return Err(StoreError::Conflict(format!(
                        "the erasure job is at version {stored}, not {expected_version}"
                    )));
                }
                table
                    .insert(k.as_str(), encode(&item).as_slice())
                    .map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn health(&self) -> ComponentHealth {
        let result = self
            .run(|db| {
                let txn = db.begin_read().map_err(unavailable)?;
                let convs = txn.open_table(CONVERSATIONS).map_err(unavailable)?;
                let active = txn.open_table(ACTIVE).map_err(unavailable)?;
                Ok((convs.len().map_err(unavailable)?, active.len().map_err(unavailable)?))
            })
            .await;
        let mut figures = serde_json::Map::new();
        figures.insert("kind".into(), "embedded (redb)".into());
        let ok = match result {
            Ok((total, active)) => {
                figures.insert("conversations".into(), total.into());
                figures.insert("activeSessions".into(), active.into());
                true
            }
            Err(e) => {
                figures.insert("error".into(), e.to_string().into());
                false
            }
        };
        ComponentHealth {
            name: "store".into(),
            ok,
            figures,
        }
    }
}
