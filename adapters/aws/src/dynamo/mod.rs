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
//! conversations in `reads`, the versioned writes in `writes`, the
//! bookkeeping beside conversations (idempotency, erasure jobs, the
//! sweeper's index, flags, totals, health) in `bookkeeping`, with the
//! store's roles of those (user totals, idempotency, the sweeper's index,
//! erasure jobs, health). This file implements the roles that carry
//! conversations: `Conversations`, `MessageLog` and `ConversationLists`.

mod bookkeeping;
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
impl Conversations for DynamoStore {
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
                        Some(existing) if convo_domain::store_rules::reusable(&existing) => {
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
                // `store_rules::removal_applies`.
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
}

#[async_trait]
impl MessageLog for DynamoStore {
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
        self.list_flagged_messages_in(conversation_id, order, cursor_in, limit)
            .await
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
}

#[async_trait]
impl ConversationLists for DynamoStore {
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

    /// The `byUser` global secondary index is eventually consistent.
    fn user_index_is_consistent(&self) -> bool {
        false
    }
}
