//! The conversation store on DynamoDB: one table, items mapped in
//! [`codec`], conditional writes for exactly-once and race-free writes,
//! `Query` (never `Scan`) on every request path.
//!
//! | item | pk | sk |
//! | --- | --- | --- |
//! | conversation | `C#<id>` | `META` (+ `byUser`, `byAgent` and `byOwner` keys; `activeByStart` keys while active; `flagged` keys once flagged) |
//! | message chunk | `C#<id>` | `M#<index of its first message, 20 digits>` (messages and the head state) |
//! | externalId claim | `C#<id>` | `X#<externalId>` |
//! | flagged-message pointer | `C#<id>` | `F#<messageIndex, 20 digits>` |
//! | idempotency key | `C#<id>` | `I#<operation>#<key>` (with TTL) |
//! | active pair | `P#<owner>#<agentId>#<userId>` | `ACTIVE` |
//! | user stats | `U#<owner>#<userId>` | `STATS` |
//! | a user's erasure job | `E#<erasureId>` | `JOB` (its state as JSON, and a `version`) |
//! | the sweeper's place in `activeByStart` | `SWEEP` | `CURSOR` |
//!
//! The worker's append is one conditional `PutItem` of a chunk; the
//! conversation item is written only when a field that rarely changes moves.
//! Transactions remain where an invariant needs two items to change
//! together: creation with the active pair, a session's end with the user's
//! totals, erasure of the conversation with its totals.
//!
//! Ids never contain `#` (the schema refuses it), so keys cannot collide.
//!
//! The requests every operation is made of are in `requests`, the reads of
//! conversations in `reads`, the versioned writes in `writes`. This file is
//! the `ConversationStore` implementation itself, which Rust wants in one
//! block: it shrinks as the port is split by role (issue 24).

pub mod codec;
mod reads;
mod requests;
mod writes;
use requests::*;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem, Update};
use convo_domain::cursor;
use convo_domain::pager::MessagePager;
use convo_domain::ports::*;
use convo_schema::{Conversation, ConversationStatus, FlagStatus, Message, Timestamp, UserStats};
use rand::Rng;

use self::codec::*;
use crate::resources::*;

/// Bounded retries for unprocessed batch keys.
const BATCH_RETRIES: u32 = 8;

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_string(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

#[async_trait]
impl ConversationStore for DynamoStore {
    async fn create_conversation(
        &self,
        record: &ConversationRecord,
        reuse_active: bool,
    ) -> Result<Created, StoreError> {
        let c = &record.conversation;
        let mut stale: Option<String> = None;
        for _ in 0..4 {
            let meta = self.put(meta_item(record)?, Some("attribute_not_exists(pk)"))?;
            let mut pair = Put::builder().table_name(&self.table).set_item(Some({
                let mut k = key(pair_pk(c), "ACTIVE");
                k.insert("conversationId".into(), s(&c.conversation_id));
                if let Some(t) = c.expires_at {
                    k.insert(TTL_ATTRIBUTE.into(), n(t.timestamp()));
                }
                k
            }));
            if reuse_active {
                match &stale {
                    None => pair = pair.condition_expression("attribute_not_exists(pk)"),
                    Some(old) => {
                        pair = pair
                            .condition_expression("attribute_not_exists(pk) OR conversationId = :stale")
                            .expression_attribute_values(":stale", s(old))
                    }
                }
            }
            let items = vec![
                TransactWriteItem::builder().put(meta).build(),
                TransactWriteItem::builder().put(pair.build().map_err(corrupt)?).build(),
            ];
            match self.transact(items).await {
                Ok(()) => return Ok(Created::New),
                Err(StoreError::Conflict(_)) if reuse_active => {
                    let Some(p) = self.get(pair_pk(c), "ACTIVE").await? else {
                        continue;
                    };
                    let Some(existing_id) = str_attr(&p, "conversationId").map(str::to_string) else {
                        continue;
                    };
                    match self.get_conversation(&existing_id).await? {
                        Some(existing) if existing.conversation.status == ConversationStatus::Active => {
                            return Ok(Created::Existing(Box::new(existing)));
                        }
                        _ => stale = Some(existing_id),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict("could not settle the active pair".into()))
    }

    async fn get_conversation(&self, conversation_id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        self.load(conversation_id, true).await
    }

    /// Half a read unit instead of one (an eventually consistent query);
    /// only a miss, which may be a conversation created a moment ago, is
    /// read again strongly consistent.
    async fn get_conversation_for_read(&self, conversation_id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        match self.load(conversation_id, false).await? {
            Some(record) => Ok(Some(record)),
            None => self.load(conversation_id, true).await,
        }
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
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(chunk_item(chunk)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(ChunkWrite::Stored),
            Err(e) if condition_failed(&e) => {
                let theirs = self
                    .get(conv_pk(&chunk.conversation_id), &chunk_sk(chunk.first_index))
                    .await?
                    .map(|item| chunk_tags(&item))
                    .unwrap_or_default();
                Ok(ChunkWrite::Taken(theirs))
            }
            Err(e) => Err(sdk(e)),
        }
    }

    async fn chunks_desc(
        &self,
        conversation_id: &str,
        below: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Chunk>, StoreError> {
        let hi = match below {
            Some(0) => return Ok(Vec::new()),
            Some(b) => chunk_sk(b - 1),
            None => chunk_sk(u64::MAX),
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let resp = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", s(conv_pk(conversation_id)))
            .expression_attribute_values(":lo", s(chunk_sk(0)))
            .expression_attribute_values(":hi", s(hi))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(limit as i32)
            .send()
            .await
            .map_err(sdk)?;
        resp.items
            .unwrap_or_default()
            .iter()
            .map(|item| whole_chunk(item, conversation_id))
            .collect()
    }

    async fn rewrite_chunk(&self, chunk: &Chunk) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(chunk_item(chunk)?))
            .send()
            .await
            .map_err(sdk)?;
        Ok(())
    }

    async fn update_head(
        &self,
        conversation_id: &str,
        chunk_first_index: u64,
        head: &HeadState,
    ) -> Result<(), StoreError> {
        let mut sets = Vec::new();
        let mut removes = Vec::new();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(conv_pk(conversation_id), &chunk_sk(chunk_first_index))))
            .condition_expression("attribute_exists(pk)");
        for (name, value) in head_attributes(head) {
            match value {
                Some(v) => {
                    sets.push(format!("{name} = :{name}"));
                    update = update.expression_attribute_values(format!(":{name}"), v);
                }
                None => removes.push(name.to_string()),
            }
        }
        let mut expression = String::new();
        if !sets.is_empty() {
            expression.push_str(&format!("SET {}", sets.join(", ")));
        }
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        match update.update_expression(expression.trim()).send().await {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Err(StoreError::Conflict("the newest chunk is gone".into())),
            Err(e) => Err(sdk(e)),
        }
    }

    async fn claim_external_ids(
        &self,
        conversation_id: &str,
        claims: &[(String, String)],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        for (ext, message_id) in claims {
            let mut claim = key(conv_pk(conversation_id), &format!("X#{ext}"));
            claim.insert("messageId".into(), s(message_id));
            if let Some(t) = ttl(expires_at) {
                claim.insert(TTL_ATTRIBUTE.into(), t);
            }
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(claim))
                .condition_expression("attribute_not_exists(pk) OR messageId = :m")
                .expression_attribute_values(":m", s(message_id))
                .send()
                .await;
            match result {
                Ok(_) => {}
                Err(e) if condition_failed(&e) => {
                    return Err(StoreError::Conflict("externalId held by another message".into()));
                }
                Err(e) => return Err(sdk(e)),
            }
        }
        Ok(())
    }

    async fn put_flag_pointers(
        &self,
        conversation_id: &str,
        pointers: &[(u64, u64)],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        for (index, chunk) in pointers {
            // A keys-only pointer: flagged messages list without reading
            // the whole conversation.
            let mut item = key(conv_pk(conversation_id), &flag_sk(*index));
            item.insert("c".into(), n(chunk));
            if let Some(t) = ttl(expires_at) {
                item.insert(TTL_ATTRIBUTE.into(), t);
            }
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(sdk)?;
        }
        Ok(())
    }

    async fn list_conversations(
        &self,
        owner_id: &str,
        list: &ConversationList,
        cursor_in: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        // The partitions of `byOwner` a list reads: (status, flagged).
        let by_owner = |statuses: &[ConversationStatus], flags: &[bool]| -> Vec<String> {
            statuses
                .iter()
                .flat_map(|st| flags.iter().map(move |f| by_owner_pk(owner_id, *st, *f)))
                .collect()
        };
        let owner_index = (BY_OWNER_INDEX, BY_OWNER_PK, BY_OWNER_SK);
        let (index, gpks, scope) = match list {
            ConversationList::User(user) => {
                let gpk = by_user_pk(owner_id, user);
                ((BY_USER_INDEX, BY_USER_PK, BY_USER_SK), vec![gpk.clone()], gpk)
            }
            ConversationList::Agent(agent) => {
                let gpk = by_agent_pk(owner_id, agent);
                ((BY_AGENT_INDEX, BY_AGENT_PK, BY_AGENT_SK), vec![gpk.clone()], gpk)
            }
            ConversationList::All => (
                owner_index,
                by_owner(&ConversationStatus::ALL, &[true, false]),
                format!("O#{owner_id}#ALL"),
            ),
            ConversationList::Status(st) => (
                owner_index,
                by_owner(&[*st], &[true, false]),
                format!("O#{owner_id}#S#{}", st.as_str()),
            ),
            ConversationList::Flagged => (
                owner_index,
                by_owner(&ConversationStatus::ALL, &[true]),
                format!("O#{owner_id}#FLAGGED"),
            ),
        };
        let (ids, next_cursor) = self.merged_index_page(index, &gpks, &scope, cursor_in, limit).await?;
        let items = self.conversations(&ids).await?;
        Ok(Page { items, next_cursor })
    }

    async fn list_messages(&self, conversation_id: &str, q: &MessageQuery) -> Result<Page<Message>, StoreError> {
        if let Some(page) = self.read_messages(conversation_id, q, false).await? {
            return Ok(page);
        }
        // The eventually consistent read lagged behind what the caller
        // already saw: read again strongly consistent (which never lags).
        self.read_messages(conversation_id, q, true)
            .await?
            .ok_or_else(|| StoreError::Unavailable("messages lag after a consistent read".into()))
    }

    async fn list_flagged_messages(
        &self,
        conversation_id: &str,
        order: Order,
        cursor_in: Option<&str>,
        limit: usize,
    ) -> Result<Page<Message>, StoreError> {
        let pk = conv_pk(conversation_id);
        let scope = flagged_scope(&format!("F#{conversation_id}"), order);
        let start = cursor::decode_index(&scope, cursor_in)?;
        let (lo, hi) = match order {
            Order::Asc => (start.unwrap_or(0), u64::MAX),
            Order::Desc => (0, start.unwrap_or(u64::MAX)),
        };
        let resp = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":lo", s(flag_sk(lo)))
            .expression_attribute_values(":hi", s(flag_sk(hi)))
            .scan_index_forward(order == Order::Asc)
            .limit((limit + 1) as i32)
            .send()
            .await
            .map_err(sdk)?;
        let pointers: Vec<(u64, u64)> = resp
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|i| {
                let index = str_attr(i, SK)?.strip_prefix("F#")?.parse().ok()?;
                let chunk = i.get("c")?.as_n().ok()?.parse().ok()?;
                Some((index, chunk))
            })
            .collect();
        let next = pointers.get(limit).map(|(i, _)| *i);
        let wanted: Vec<(u64, u64)> = pointers.into_iter().take(limit).collect();
        let chunk_keys: HashSet<u64> = wanted.iter().map(|(_, c)| *c).collect();
        let keys = chunk_keys.iter().map(|c| key(pk.clone(), &chunk_sk(*c))).collect();
        let mut by_index: HashMap<u64, Message> = HashMap::new();
        for item in self.batch_get(keys, false).await? {
            let (_, messages, _) = chunk_from(&item, conversation_id)?;
            by_index.extend(messages.into_iter().map(|m| (m.message_index, m)));
        }
        // A pointer written before a commit that did not finish may name a
        // message stored elsewhere since: only flagged messages are listed.
        let items = wanted
            .iter()
            .filter_map(|(i, _)| by_index.remove(i))
            .filter(|m| m.flagged)
            .collect();
        Ok(Page {
            items,
            next_cursor: next.map(|n| cursor::encode(&scope, &n.to_string())),
        })
    }

    async fn list_flagged_conversations(
        &self,
        owner_id: &str,
        status: FlagStatus,
        cursor_in: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        let index = (FLAGGED_INDEX, FLAGGED_PK, FLAGGED_SK);
        let gpk = flagged_pk(owner_id, status);
        let (ids, next_cursor) = self
            .merged_index_page(index, std::slice::from_ref(&gpk), &gpk, cursor_in, limit)
            .await?;
        // The index is eventually consistent: drop entries whose conversation
        // has moved to another state since.
        let items = self
            .conversations(&ids)
            .await?
            .into_iter()
            .filter(|r| !r.deleting && r.conversation.flag_status == Some(status))
            .collect();
        Ok(Page { items, next_cursor })
    }

    async fn existing_external_ids(
        &self,
        conversation_id: &str,
        external_ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let pk = conv_pk(conversation_id);
        let unique: HashSet<&String> = external_ids.iter().collect();
        let keys = unique.into_iter().map(|e| key(pk.clone(), &format!("X#{e}"))).collect();
        let found = self.batch_get(keys, true).await?;
        Ok(found
            .iter()
            .filter_map(|i| {
                let ext = str_attr(i, SK)?.strip_prefix("X#")?.to_string();
                Some((ext, str_attr(i, "messageId").unwrap_or_default().to_string()))
            })
            .collect())
    }

    async fn user_stats(&self, owner_id: &str, user_id: &str) -> Result<Option<UserStats>, StoreError> {
        match self.get(stats_pk(owner_id, user_id), "STATS").await? {
            Some(item) => Ok(Some(serde_dynamo::from_item(item).map_err(corrupt)?)),
            None => Ok(None),
        }
    }

    async fn delete_conversation_items(&self, conversation_id: &str) -> Result<(), StoreError> {
        let pk = conv_pk(conversation_id);
        let mut exclusive_start = None;
        loop {
            let resp = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&pk))
                .projection_expression("pk, sk")
                .limit(500)
                .set_exclusive_start_key(exclusive_start)
                .send()
                .await
                .map_err(sdk)?;
            let keys: Vec<Item> = resp
                .items
                .unwrap_or_default()
                .into_iter()
                .filter(|k| str_attr(k, SK) != Some(META))
                .collect();
            self.batch_delete(keys).await?;
            match resp.last_evaluated_key {
                Some(k) => exclusive_start = Some(k),
                None => return Ok(()),
            }
        }
    }

    async fn remove_conversation(
        &self,
        record: &ConversationRecord,
        expected_version: u64,
        stats: Option<StatsDelta>,
    ) -> Result<(), StoreError> {
        let c = &record.conversation;
        let meta = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(conv_pk(&c.conversation_id), META)))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(expected_version))
            .build()
            .map_err(corrupt)?;
        let mut items = vec![TransactWriteItem::builder().delete(meta.clone()).build()];
        if let Some(delta) = stats {
            // Only a row that holds the conversation is taken from: a missing
            // row (the user's totals already erased) is not created negative,
            // which would no longer decode. The conversation goes alone then.
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(stats_pk(&c.owner_id, &c.user_id), "STATS")))
                .update_expression("ADD conversations :c, messages :m, totalSeconds :s")
                .condition_expression("attribute_exists(pk) AND conversations >= :held")
                .expression_attribute_values(":c", n(delta.conversations))
                .expression_attribute_values(":m", n(delta.messages))
                .expression_attribute_values(":s", n(delta.seconds))
                .expression_attribute_values(":held", n(-delta.conversations))
                .build()
                .map_err(corrupt)?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        let counted = items.len() == 2;
        match self.try_transact(items).await? {
            Ok(()) => {}
            Err(reasons) if counted && only_second_failed(&reasons) => {
                self.transact(vec![TransactWriteItem::builder().delete(meta).build()])
                    .await?;
            }
            Err(reasons) => return Err(cancelled(reasons)),
        }
        self.release_pair(c).await;
        Ok(())
    }

    async fn set_last_conversation_at(
        &self,
        owner_id: &str,
        user_id: &str,
        at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(stats_pk(owner_id, user_id), "STATS")))
            .condition_expression("attribute_exists(pk)");
        let update = match at {
            Some(t) => update
                .update_expression("SET lastConversationAt = :at")
                .expression_attribute_values(":at", s(stats_time(t))),
            None => update.update_expression("REMOVE lastConversationAt"),
        };
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk(e)),
        }
    }

    async fn delete_user_stats(&self, owner_id: &str, user_id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(stats_pk(owner_id, user_id), "STATS")))
            .send()
            .await
            .map_err(sdk)?;
        Ok(())
    }

    async fn active_started_before(
        &self,
        started_before: Timestamp,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        let hi = millis(started_before);
        // `millis#id` keys: below `hi` (a bare `millis`) is before that
        // instant; from `after` on, then `after` itself left out.
        let lo = after.filter(|a| *a < hi.as_str());
        if after.is_some() && lo.is_none() {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        }
        let mut candidates: Vec<String> = Vec::new();
        for shard in 0..ACTIVE_SHARDS {
            let mut exclusive_start = None;
            let mut found = 0;
            loop {
                let query = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(ACTIVE_INDEX)
                    .expression_attribute_names("#pk", ACTIVE_PK)
                    .expression_attribute_names("#sk", ACTIVE_SK)
                    .expression_attribute_values(":pk", s(format!("A#{shard}")))
                    .expression_attribute_values(":hi", s(&hi))
                    .limit(limit.min(1000) as i32)
                    .set_exclusive_start_key(exclusive_start);
                let query = match lo {
                    Some(lo) => query
                        .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
                        .expression_attribute_values(":lo", s(lo)),
                    None => query.key_condition_expression("#pk = :pk AND #sk < :hi"),
                };
                let resp = query.send().await.map_err(sdk)?;
                for k in resp.items.unwrap_or_default() {
                    if let Some(sk) = str_attr(&k, ACTIVE_SK)
                        && Some(sk) != lo
                        && sk < hi.as_str()
                    {
                        candidates.push(sk.to_string());
                        found += 1;
                    }
                }
                match resp.last_evaluated_key {
                    Some(k) if found < limit => exclusive_start = Some(k),
                    _ => break,
                }
            }
        }
        candidates.sort();
        let full = candidates.len() >= limit;
        candidates.truncate(limit);
        let next_cursor = candidates.last().cloned().filter(|_| full);
        let ids: Vec<String> = candidates
            .iter()
            .filter_map(|sk| sk.split_once('#').map(|(_, id)| id.to_string()))
            .collect();
        let records = self.conversations(&ids).await?;
        Ok(Page {
            items: records.into_iter().filter(|r| !r.deleting).collect(),
            next_cursor,
        })
    }

    async fn sweep_cursor(&self) -> Result<Option<String>, StoreError> {
        let item = self.get(SWEEP_PK.to_string(), SWEEP_SK).await?;
        Ok(item.and_then(|i| str_attr(&i, "cursor").map(str::to_string)))
    }

    /// One item, rewritten by each run that moves on (one write unit).
    async fn set_sweep_cursor(&self, cursor: Option<&str>) -> Result<(), StoreError> {
        match cursor {
            Some(c) => {
                let mut item = key(SWEEP_PK.to_string(), SWEEP_SK);
                item.insert("cursor".into(), s(c));
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .send()
                    .await
                    .map_err(sdk)?;
            }
            None => {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key(SWEEP_PK.to_string(), SWEEP_SK)))
                    .send()
                    .await
                    .map_err(sdk)?;
            }
        }
        Ok(())
    }

    async fn get_idempotency(
        &self,
        conversation_id: &str,
        idem_key: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let Some(item) = self.get(conv_pk(conversation_id), &idem_sk(idem_key)).await? else {
            return Ok(None);
        };
        let expires: i64 = item
            .get("expiresAtMs")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if expires <= now.timestamp_millis() {
            return Ok(None);
        }
        Ok(Some(serde_dynamo::from_item(item).map_err(corrupt)?))
    }

    async fn put_idempotency(
        &self,
        conversation_id: &str,
        idem_key: &str,
        record: &IdempotencyRecord,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut item: Item = serde_dynamo::to_item(record).map_err(corrupt)?;
        item.retain(|_, v| !matches!(v, AttributeValue::Null(_)));
        item.extend(key(conv_pk(conversation_id), &idem_sk(idem_key)));
        item.insert("expiresAtMs".into(), n(expires_at.timestamp_millis()));
        item.insert(TTL_ATTRIBUTE.into(), n(expires_at.timestamp()));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR expiresAtMs <= :now")
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk(e)),
        }
    }

    async fn settle_idempotency(&self, conversation_id: &str, idem_key: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(conv_pk(conversation_id), &idem_sk(idem_key))))
            .update_expression("REMOVE command")
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk(e)),
        }
    }

    async fn get_erasure(&self, erasure_id: &str) -> Result<Option<ErasureJob>, StoreError> {
        let Some(item) = self.get(erasure_pk(erasure_id), ERASURE_SK).await? else {
            return Ok(None);
        };
        let version: u64 = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| StoreError::Corrupt("an erasure job without its version".into()))?;
        let body =
            str_attr(&item, "job").ok_or_else(|| StoreError::Corrupt("an erasure job without its body".into()))?;
        let job: ErasureJob = serde_json::from_str(body).map_err(corrupt)?;
        Ok(Some(ErasureJob { version, ..job }))
    }

    /// One item per job, its state as JSON (it is read and written whole),
    /// written on a condition on its version.
    async fn put_erasure(&self, job: &ErasureJob, expected_version: u64) -> Result<(), StoreError> {
        let mut item = key(erasure_pk(&job.erasure_id), ERASURE_SK);
        item.insert("version".into(), n(job.version));
        item.insert("job".into(), s(serde_json::to_string(job).map_err(corrupt)?));
        let put = self.client.put_item().table_name(&self.table).set_item(Some(item));
        let put = if expected_version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :v")
                .expression_attribute_values(":v", n(expected_version))
        };
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict(format!(
                    "the erasure job is no longer at version {expected_version}"
                )))
            }
            Err(e) => Err(sdk(e)),
        }
    }

    /// The `byUser` global secondary index is eventually consistent.
    fn user_index_is_consistent(&self) -> bool {
        false
    }

    async fn health(&self) -> ComponentHealth {
        let mut figures = serde_json::Map::new();
        figures.insert("kind".into(), "dynamodb".into());
        figures.insert("table".into(), self.table.clone().into());
        let ok = match self.client.describe_table().table_name(&self.table).send().await {
            Ok(out) => {
                if let Some(t) = out.table {
                    figures.insert(
                        "tableStatus".into(),
                        t.table_status
                            .map(|s| s.as_str().to_string())
                            .unwrap_or_default()
                            .into(),
                    );
                    figures.insert("approximateItems".into(), t.item_count.unwrap_or(0).into());
                }
                true
            }
            Err(e) => {
                // The SDK's text goes to the log only: it can name the
                // account, the role and the table's ARN.
                tracing::warn!(error = %DisplayErrorContext(e), "health: DescribeTable failed");
                figures.insert("error".into(), "the table could not be described".into());
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
