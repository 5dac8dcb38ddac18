//! The conversation store on redb, in the same shape as the DynamoDB store:
//! a conversation record (the fields that rarely change, under a version)
//! and message chunks keyed by their first index, each carrying the head
//! state as of its last message. Every port call is one redb transaction,
//! so each step of the worker's commit is atomic on its own and two writers
//! are serialised; the version check and the free-key check make a stale
//! writer fail exactly as a DynamoDB condition would.
//!
//! The stored forms and keys are in `records`, the index reads in
//! `queries`, the versioned writes in `commit`, the bookkeeping beside
//! conversations (idempotency, erasure jobs, the sweeper's cursor, flags,
//! totals, health) in `bookkeeping`, with the store's roles of those (user
//! totals, idempotency, the sweeper's index, erasure jobs, health). This
//! file implements the roles that carry conversations: `Conversations`,
//! `MessageLog` and `ConversationLists` (`convo_domain::ports`).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use convo_domain::cursor;
use convo_domain::ports::*;
use convo_schema::{Conversation, FlagStatus, Message, Sealed, Timestamp, UserStats};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};

use convo_domain::pager::MessagePager;
use convo_domain::store_rules::{apply_delta, memberships, releases_pair, removal_applies, reusable};

use crate::db::{SEP, key, millis, num};

mod bookkeeping;
mod commit;
mod queries;
mod records;
use records::*;

/// The layout this code reads and writes: 2 is the chunked layout (1, with
/// one item per message, was never released). Kept in `store_info` so a
/// later layout can recognise and migrate a database.
pub const STORE_FORMAT: &str = "2";

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
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

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(unavailable)?
    }
}

#[async_trait]
impl Conversations for EmbeddedStore {
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
                            if reusable(&existing) {
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
                if let Some(mut s) = existing.filter(|s| removal_applies(Some(s), &delta)) {
                    apply_delta(&mut s, &delta);
                    table.insert(sk.as_str(), encode(&s).as_slice()).map_err(unavailable)?;
                }
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }
}

#[async_trait]
impl MessageLog for EmbeddedStore {
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
        self.list_flagged_messages_in(conversation_id, order, cursor_in, limit)
            .await
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
}

#[async_trait]
impl ConversationLists for EmbeddedStore {
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

    async fn list_flagged_conversations(
        &self,
        owner_id: &str,
        status: FlagStatus,
        cursor_in: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        self.list_flagged_conversations_in(owner_id, status, cursor_in, limit)
            .await
    }
}
