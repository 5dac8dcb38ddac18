//! The conversation store on DynamoDB: one table, items mapped with
//! `serde_dynamo`, conditional writes and transactions for exactly-once and
//! race-free writes, `Query` (never `Scan`) on every request path.
//!
//! | item | pk | sk |
//! | --- | --- | --- |
//! | conversation | `C#<id>` | `META` (+ `byUser` keys; `activeByStart` keys while active) |
//! | message | `C#<id>` | `M#<index, 20 digits>` |
//! | externalId claim | `C#<id>` | `X#<externalId>` |
//! | active pair | `P#<owner>#<agentId>#<userId>` | `ACTIVE` |
//! | user stats | `U#<owner>#<userId>` | `STATS` |
//! | idempotency key | `C#<id>` | `I#<operation>#<key>` (with TTL) |
//!
//! Ids never contain `#` (the schema refuses it), so keys cannot collide.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem, Update};
use convo_domain::cursor;
use convo_domain::ports::*;
use convo_schema::{Conversation, ConversationStatus, FlagStatus, Message, Timestamp, UserStats};
use rand::Rng;
use serde::Deserialize;

use crate::resources::*;

type Item = HashMap<String, AttributeValue>;

/// Messages per transaction: each may bring an externalId claim and a flag
/// pointer, plus the conversation and the stats update, within DynamoDB's
/// 100 items.
pub const MAX_MESSAGES_PER_COMMIT: usize = 32;
/// Bounded retries for unprocessed batch keys.
const BATCH_RETRIES: u32 = 8;

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn conv_pk(id: &str) -> String {
    format!("C#{id}")
}

const META: &str = "META";

fn message_sk(index: u64) -> String {
    format!("M#{index:020}")
}

fn pair_pk(c: &Conversation) -> String {
    format!("P#{}#{}#{}", c.owner_id, c.agent_id, c.user_id)
}

fn stats_pk(owner: &str, user: &str) -> String {
    format!("U#{owner}#{user}")
}

/// Idempotency records live in their conversation's partition, so an
/// erasure removes them with it.
fn idem_sk(key: &str) -> String {
    format!("I#{key}")
}

fn by_user_pk(owner: &str, user: &str) -> String {
    format!("O#{owner}#U#{user}")
}

/// Milliseconds, fixed width, so that string order is time order.
fn millis(t: Timestamp) -> String {
    format!("{:015}", t.timestamp_millis().max(0))
}

fn shard(id: &str) -> u32 {
    id.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) % ACTIVE_SHARDS
}

fn sdk<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable(DisplayErrorContext(e).to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaExtra {
    version: u64,
    #[serde(default)]
    applied_commands: Vec<String>,
    #[serde(default)]
    title_requested: bool,
    #[serde(default)]
    deleting: bool,
}

fn meta_item(r: &ConversationRecord) -> Result<Item, StoreError> {
    let c = &r.conversation;
    let mut item: Item = serde_dynamo::to_item(c).map_err(corrupt)?;
    item.retain(|_, v| !matches!(v, AttributeValue::Null(_)));
    item.insert(PK.into(), s(conv_pk(&c.conversation_id)));
    item.insert(SK.into(), s(META));
    item.insert("version".into(), n(r.version));
    if !r.applied_commands.is_empty() {
        item.insert(
            "appliedCommands".into(),
            AttributeValue::L(r.applied_commands.iter().map(s).collect()),
        );
    }
    item.insert("titleRequested".into(), AttributeValue::Bool(r.title_requested));
    if r.deleting {
        // Kept in the indexes so that an interrupted erasure can be found
        // and finished; readers skip it.
        item.insert("deleting".into(), AttributeValue::Bool(true));
    }
    item.insert(BY_USER_PK.into(), s(by_user_pk(&c.owner_id, &c.user_id)));
    item.insert(
        BY_USER_SK.into(),
        s(format!("{}#{}", millis(c.created_at), c.conversation_id)),
    );
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
    if let Some(t) = c.expires_at {
        item.insert(TTL_ATTRIBUTE.into(), n(t.timestamp()));
    }
    Ok(item)
}

fn flagged_pk(owner: &str, status: FlagStatus) -> String {
    format!("F#{owner}#{}", status.as_str())
}

fn flag_sk(index: u64) -> String {
    format!("F#{index:020}")
}

fn record_from(item: Item) -> Result<ConversationRecord, StoreError> {
    let extra: MetaExtra = serde_dynamo::from_item(item.clone()).map_err(corrupt)?;
    let conversation: Conversation = serde_dynamo::from_item(item).map_err(corrupt)?;
    Ok(ConversationRecord {
        conversation,
        version: extra.version,
        applied_commands: extra.applied_commands,
        title_requested: extra.title_requested,
        deleting: extra.deleting,
    })
}

fn message_item(m: &Message, expires: Option<Timestamp>) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(m).map_err(corrupt)?;
    item.retain(|_, v| !matches!(v, AttributeValue::Null(_)));
    item.insert(PK.into(), s(conv_pk(&m.conversation_id)));
    item.insert(SK.into(), s(message_sk(m.message_index)));
    if let Some(t) = expires {
        item.insert(TTL_ATTRIBUTE.into(), n(t.timestamp()));
    }
    Ok(item)
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
}

fn str_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

async fn backoff(attempt: u32) {
    let cap = 20u64 << attempt.min(6);
    let ms = rand::rng().random_range(0..=cap);
    tokio::time::sleep(Duration::from_millis(ms)).await;
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

    fn put(&self, item: Item, condition: Option<&str>) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_string))
            .build()
            .map_err(corrupt)
    }

    /// Gets items by key, retrying unprocessed keys (bounded, jittered).
    async fn batch_get(&self, keys: Vec<Item>, consistent: bool) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                let req = KeysAndAttributes::builder()
                    .set_keys(Some(pending))
                    .consistent_read(consistent)
                    .build()
                    .map_err(corrupt)?;
                let resp = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, req)
                    .send()
                    .await
                    .map_err(sdk)?;
                if let Some(mut responses) = resp.responses {
                    out.extend(responses.remove(&self.table).unwrap_or_default());
                }
                pending = resp
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if !pending.is_empty() {
                    attempt += 1;
                    if attempt > BATCH_RETRIES {
                        return Err(StoreError::Unavailable("batch get: keys still unprocessed".into()));
                    }
                    backoff(attempt).await;
                }
            }
        }
        Ok(out)
    }

    /// Deletes items by key, 25 per request (DynamoDB's limit), retrying
    /// unprocessed ones (bounded, jittered).
    async fn batch_delete(&self, keys: Vec<Item>) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
        for chunk in keys.chunks(25) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|k| {
                    let delete = DeleteRequest::builder()
                        .set_key(Some(k.clone()))
                        .build()
                        .map_err(corrupt)?;
                    Ok(WriteRequest::builder().delete_request(delete).build())
                })
                .collect::<Result<_, StoreError>>()?;
            let mut attempt = 0;
            while !pending.is_empty() {
                let resp = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(sdk)?;
                pending = resp
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
                if !pending.is_empty() {
                    attempt += 1;
                    if attempt > BATCH_RETRIES {
                        return Err(StoreError::Unavailable("batch delete: items still unprocessed".into()));
                    }
                    backoff(attempt).await;
                }
            }
        }
        Ok(())
    }

    /// One page of conversation ids from a keys-only index whose sort key
    /// ends in `#<conversationId>`, newest first, and the cursor after it
    /// (bound to the partition `gpk`: a cursor from elsewhere is refused).
    async fn index_page(
        &self,
        (index, pk_attr, sk_attr): (&str, &str, &str),
        gpk: &str,
        cursor_in: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        let start = match cursor_in {
            Some(c) => {
                let gsk = cursor::decode(gpk, c)?;
                let id = gsk.rsplit('#').next().unwrap_or_default().to_string();
                if id.is_empty() || !gsk.contains('#') {
                    return Err(StoreError::InvalidCursor);
                }
                Some(HashMap::from([
                    (PK.to_string(), s(conv_pk(&id))),
                    (SK.to_string(), s(META)),
                    (pk_attr.to_string(), s(gpk)),
                    (sk_attr.to_string(), s(gsk)),
                ]))
            }
            None => None,
        };
        let resp = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", pk_attr)
            .expression_attribute_values(":pk", s(gpk))
            .scan_index_forward(false)
            .limit((limit + 1) as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(sdk)?;
        let keys = resp.items.unwrap_or_default();
        let more = keys.len() > limit;
        let page: Vec<(String, String)> = keys
            .iter()
            .take(limit)
            .filter_map(|k| {
                Some((
                    str_attr(k, PK)?.strip_prefix("C#")?.to_string(),
                    str_attr(k, sk_attr)?.to_string(),
                ))
            })
            .collect();
        let next_cursor = if more {
            page.last().map(|(_, gsk)| cursor::encode(gpk, gsk))
        } else {
            None
        };
        Ok((page.into_iter().map(|(id, _)| id).collect(), next_cursor))
    }

    /// Conversations by id, in the order given (missing ones skipped).
    async fn conversations(&self, ids: &[String]) -> Result<Vec<ConversationRecord>, StoreError> {
        let keys = ids.iter().map(|id| key(conv_pk(id), META)).collect();
        let mut by_id: HashMap<String, ConversationRecord> = HashMap::new();
        for item in self.batch_get(keys, false).await? {
            let rec = record_from(item)?;
            by_id.insert(rec.conversation.conversation_id.clone(), rec);
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(svc) = e.as_service_error() {
                    if let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) = svc {
                        let reasons: Vec<String> = c
                            .cancellation_reasons()
                            .iter()
                            .filter_map(|r| r.code().map(str::to_string))
                            .filter(|c| c != "None")
                            .collect();
                        if reasons.iter().any(|r| r == "ConditionalCheckFailed" || r == "TransactionConflict") {
                            return Err(StoreError::Conflict(reasons.join(", ")));
                        }
                        return Err(StoreError::Unavailable(format!("transaction cancelled: {}", reasons.join(", "))));
                    }
                    if svc.code() == Some("TransactionConflictException") {
                        return Err(StoreError::Conflict("transaction conflict".into()));
                    }
                }
                Err(sdk(e))
            }
        }
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        self.get_with(pk, sk, true).await
    }

    async fn get_with(&self, pk: String, sk: &str, consistent: bool) -> Result<Option<Item>, StoreError> {
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(sdk)?;
        Ok(resp.item)
    }

    /// Releases the (agent, user) pair if it still points at `id`. Best
    /// effort: a stale pair is recognised (its conversation is not active)
    /// and replaced by the next create.
    async fn release_pair(&self, c: &Conversation) {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(pair_pk(c), "ACTIVE")))
            .condition_expression("conversationId = :id")
            .expression_attribute_values(":id", s(&c.conversation_id))
            .send()
            .await;
        if let Err(e) = result
            && !e
                .as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception())
        {
            tracing::warn!(conversation_id = %c.conversation_id, error = %DisplayErrorContext(e), "could not release the active pair");
        }
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
        self.get(conv_pk(conversation_id), META)
            .await?
            .map(record_from)
            .transpose()
    }

    /// Half a read unit instead of one (an eventually consistent read);
    /// only a miss, which may be a conversation created a moment ago, is
    /// read again strongly consistent.
    async fn get_conversation_for_read(&self, conversation_id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        match self.get_with(conv_pk(conversation_id), META, false).await? {
            Some(item) => record_from(item).map(Some),
            None => self.get_conversation(conversation_id).await,
        }
    }

    async fn put_conversation(&self, record: &ConversationRecord, expected_version: u64) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(meta_item(record)?))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(expected_version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict(format!("version is no longer {expected_version}")))
            }
            Err(e) => Err(sdk(e)),
        }
    }

    async fn list_conversations(
        &self,
        owner_id: &str,
        user_id: &str,
        cursor_in: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        let index = (BY_USER_INDEX, BY_USER_PK, BY_USER_SK);
        let (ids, next_cursor) = self
            .index_page(index, &by_user_pk(owner_id, user_id), cursor_in, limit)
            .await?;
        let items = self.conversations(&ids).await?;
        Ok(Page { items, next_cursor })
    }

    async fn list_messages(&self, conversation_id: &str, q: &MessageQuery) -> Result<Page<Message>, StoreError> {
        let pk = conv_pk(conversation_id);
        let scope = format!("M#{conversation_id}");
        let start: Option<u64> = match &q.cursor {
            Some(c) => Some(
                cursor::decode(&scope, c)?
                    .parse()
                    .map_err(|_| StoreError::InvalidCursor)?,
            ),
            None => None,
        };
        let (lo, hi) = match (q.order, start) {
            (Order::Asc, s) => (message_sk(s.unwrap_or(0)), message_sk(u64::MAX)),
            (Order::Desc, Some(s)) => (message_sk(0), message_sk(s)),
            (Order::Desc, None) => (message_sk(0), message_sk(u64::MAX)),
        };
        let mut items = Vec::new();
        let mut next = None;
        let mut exclusive_start = None;
        'pages: loop {
            let want = (q.limit + 1 - items.len()).max(1) as i32;
            let resp = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":lo", s(&lo))
                .expression_attribute_values(":hi", s(&hi))
                .scan_index_forward(q.order == Order::Asc)
                .limit(want)
                .set_exclusive_start_key(exclusive_start)
                .send()
                .await
                .map_err(sdk)?;
            for item in resp.items.unwrap_or_default() {
                let m: Message = serde_dynamo::from_item(item).map_err(corrupt)?;
                match q.window(&m) {
                    Window::Inside => {}
                    Window::Skip => continue,
                    Window::Past => break 'pages,
                }
                if items.len() == q.limit {
                    next = Some(m.message_index);
                    break 'pages;
                }
                items.push(m);
            }
            match resp.last_evaluated_key {
                Some(k) => exclusive_start = Some(k),
                None => break,
            }
        }
        Ok(Page {
            items,
            next_cursor: next.map(|n| cursor::encode(&scope, &n.to_string())),
        })
    }

    async fn list_flagged_messages(
        &self,
        conversation_id: &str,
        cursor_in: Option<&str>,
        limit: usize,
    ) -> Result<Page<Message>, StoreError> {
        let pk = conv_pk(conversation_id);
        let scope = format!("F#{conversation_id}");
        let start: u64 = match cursor_in {
            Some(c) => cursor::decode(&scope, c)?
                .parse()
                .map_err(|_| StoreError::InvalidCursor)?,
            None => 0,
        };
        let resp = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":lo", s(flag_sk(start)))
            .expression_attribute_values(":hi", s(flag_sk(u64::MAX)))
            .limit((limit + 1) as i32)
            .send()
            .await
            .map_err(sdk)?;
        let indexes: Vec<u64> = resp
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|i| str_attr(i, SK)?.strip_prefix("F#")?.parse().ok())
            .collect();
        let next = indexes.get(limit).copied();
        let keys = indexes
            .iter()
            .take(limit)
            .map(|i| key(pk.clone(), &message_sk(*i)))
            .collect();
        let mut items: Vec<Message> = self
            .batch_get(keys, false)
            .await?
            .into_iter()
            .map(|i| serde_dynamo::from_item(i).map_err(corrupt))
            .collect::<Result<_, _>>()?;
        items.sort_by_key(|m| m.message_index);
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
    ) -> Result<Page<Conversation>, StoreError> {
        let index = (FLAGGED_INDEX, FLAGGED_PK, FLAGGED_SK);
        let (ids, next_cursor) = self
            .index_page(index, &flagged_pk(owner_id, status), cursor_in, limit)
            .await?;
        // The index is eventually consistent: drop entries whose conversation
        // has moved to another state since.
        let items = self
            .conversations(&ids)
            .await?
            .into_iter()
            .map(|r| r.conversation)
            .filter(|c| c.flag_status == Some(status))
            .collect();
        Ok(Page { items, next_cursor })
    }

    async fn existing_external_ids(
        &self,
        conversation_id: &str,
        external_ids: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        let pk = conv_pk(conversation_id);
        let unique: HashSet<&String> = external_ids.iter().collect();
        let keys = unique.into_iter().map(|e| key(pk.clone(), &format!("X#{e}"))).collect();
        let found = self.batch_get(keys, true).await?;
        Ok(found
            .iter()
            .filter_map(|i| str_attr(i, SK)?.strip_prefix("X#").map(str::to_string))
            .collect())
    }

    async fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let c = &commit.record.conversation;
        let mut items = Vec::with_capacity(2 + 2 * commit.messages.len());
        let meta = Put::builder()
            .table_name(&self.table)
            .set_item(Some(meta_item(&commit.record)?))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(commit.expected_version))
            .build()
            .map_err(corrupt)?;
        items.push(TransactWriteItem::builder().put(meta).build());
        for m in &commit.messages {
            let put = self.put(message_item(m, c.expires_at)?, Some("attribute_not_exists(pk)"))?;
            items.push(TransactWriteItem::builder().put(put).build());
            if m.flagged {
                // A keys-only pointer: flagged messages list without reading
                // the whole conversation.
                let mut flag = key(conv_pk(&c.conversation_id), &flag_sk(m.message_index));
                if let Some(t) = c.expires_at {
                    flag.insert(TTL_ATTRIBUTE.into(), n(t.timestamp()));
                }
                items.push(TransactWriteItem::builder().put(self.put(flag, None)?).build());
            }
            if let Some(ext) = &m.external_id {
                let mut claim = key(conv_pk(&c.conversation_id), &format!("X#{ext}"));
                claim.insert("messageId".into(), s(&m.message_id));
                if let Some(t) = c.expires_at {
                    claim.insert(TTL_ATTRIBUTE.into(), n(t.timestamp()));
                }
                items.push(
                    TransactWriteItem::builder()
                        .put(self.put(claim, Some("attribute_not_exists(pk)"))?)
                        .build(),
                );
            }
        }
        if let Some(delta) = commit.stats {
            let mut update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(stats_pk(&c.owner_id, &c.user_id), "STATS")))
                .update_expression(if delta.at.is_some() {
                    "ADD conversations :c, messages :m, totalSeconds :s SET userId = :u, lastConversationAt = :at"
                } else {
                    "ADD conversations :c, messages :m, totalSeconds :s SET userId = :u"
                })
                .expression_attribute_values(":c", n(delta.conversations))
                .expression_attribute_values(":m", n(delta.messages))
                .expression_attribute_values(":s", n(delta.seconds))
                .expression_attribute_values(":u", s(&c.user_id));
            if let Some(t) = delta.at {
                update = update
                    .expression_attribute_values(":at", s(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)));
            }
            items.push(
                TransactWriteItem::builder()
                    .update(update.build().map_err(corrupt)?)
                    .build(),
            );
        }
        self.transact(items).await?;
        if commit.release_pair {
            self.release_pair(c).await;
        }
        Ok(())
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
        let mut items = vec![TransactWriteItem::builder().delete(meta).build()];
        if let Some(delta) = stats {
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(stats_pk(&c.owner_id, &c.user_id), "STATS")))
                .update_expression("ADD conversations :c, messages :m, totalSeconds :s")
                .expression_attribute_values(":c", n(delta.conversations))
                .expression_attribute_values(":m", n(delta.messages))
                .expression_attribute_values(":s", n(delta.seconds))
                .build()
                .map_err(corrupt)?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        self.transact(items).await?;
        self.release_pair(c).await;
        Ok(())
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
        limit: usize,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let hi = millis(started_before);
        let mut candidates: Vec<(String, String)> = Vec::new();
        for shard in 0..ACTIVE_SHARDS {
            let mut exclusive_start = None;
            loop {
                let resp = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(ACTIVE_INDEX)
                    .key_condition_expression("#pk = :pk AND #sk < :hi")
                    .expression_attribute_names("#pk", ACTIVE_PK)
                    .expression_attribute_names("#sk", ACTIVE_SK)
                    .expression_attribute_values(":pk", s(format!("A#{shard}")))
                    .expression_attribute_values(":hi", s(&hi))
                    .limit(limit.min(1000) as i32)
                    .set_exclusive_start_key(exclusive_start)
                    .send()
                    .await
                    .map_err(sdk)?;
                for k in resp.items.unwrap_or_default() {
                    if let (Some(sk), Some(pk)) = (str_attr(&k, ACTIVE_SK), str_attr(&k, PK)) {
                        candidates.push((sk.to_string(), pk.trim_start_matches("C#").to_string()));
                    }
                }
                match resp.last_evaluated_key {
                    Some(k) if candidates.len() < limit * (shard as usize + 1) => exclusive_start = Some(k),
                    _ => break,
                }
            }
        }
        candidates.sort();
        candidates.truncate(limit);
        let ids: Vec<String> = candidates.into_iter().map(|(_, id)| id).collect();
        self.conversations(&ids).await
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

    async fn take_rate_token(
        &self,
        rate_key: &str,
        window_start: Timestamp,
        expires_at: Timestamp,
        limit: u64,
    ) -> Result<bool, StoreError> {
        // One small item per key and window, counted atomically, gone by TTL.
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("R#{rate_key}"), &millis(window_start))))
            .update_expression("ADD hits :one SET #ttl = :ttl")
            .condition_expression("attribute_not_exists(hits) OR hits < :limit")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(limit))
            .expression_attribute_values(":ttl", n(expires_at.timestamp() + 60))
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
                figures.insert("error".into(), DisplayErrorContext(e).to_string().into());
                false
            }
        };
        ComponentHealth {
            name: "store".into(),
            ok,
            figures,
        }
    }

    fn max_messages_per_commit(&self) -> usize {
        MAX_MESSAGES_PER_COMMIT
    }
}
