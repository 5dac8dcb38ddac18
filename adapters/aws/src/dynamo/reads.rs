//! Reading conversations: index pages merged across partitions, records
//! by id with their active heads, one conversation's item and newest chunk,
//! a page of messages from the chunks.

use super::*;

impl DynamoStore {
    /// One page of conversation ids, newest first, from partitions `gpks`
    /// of a keys-only index whose sort key is `<time>#<id>`, merged; and
    /// the cursor after it (bound to `scope`: a cursor from another list is
    /// refused). Each partition is one `Query` below the cursor, run
    /// concurrently; a conversation seen in two (an index that is moving it
    /// from one partition to another) is listed once.
    pub(super) async fn merged_index_page(
        &self,
        (index, pk_attr, sk_attr): (&str, &str, &str),
        gpks: &[String],
        scope: &str,
        cursor_in: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        let below = match cursor_in {
            Some(c) => {
                let gsk = cursor::decode(scope, c)?;
                if gsk
                    .rsplit_once('#')
                    .is_none_or(|(at, id)| at.is_empty() || id.is_empty())
                {
                    return Err(StoreError::InvalidCursor);
                }
                Some(gsk)
            }
            None => None,
        };
        let queries = gpks.iter().map(|gpk| {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .expression_attribute_names("#pk", pk_attr)
                .expression_attribute_values(":pk", s(gpk))
                .scan_index_forward(false)
                .limit((limit + 1) as i32);
            q = match &below {
                Some(gsk) => q
                    .key_condition_expression("#pk = :pk AND #sk < :below")
                    .expression_attribute_names("#sk", sk_attr)
                    .expression_attribute_values(":below", s(gsk)),
                None => q.key_condition_expression("#pk = :pk"),
            };
            q.send()
        });
        let mut found: Vec<(String, String)> = Vec::new();
        for resp in futures::future::join_all(queries).await {
            for k in resp.map_err(sdk)?.items.unwrap_or_default() {
                if let (Some(id), Some(gsk)) = (
                    str_attr(&k, PK).and_then(|p| p.strip_prefix("C#")),
                    str_attr(&k, sk_attr),
                ) {
                    found.push((gsk.to_string(), id.to_string()));
                }
            }
        }
        found.sort_unstable_by(|a, b| b.cmp(a));
        found.dedup();
        let more = found.len() > limit;
        found.truncate(limit);
        let next_cursor = if more {
            found.last().map(|(gsk, _)| cursor::encode(scope, gsk))
        } else {
            None
        };
        Ok((found.into_iter().map(|(_, id)| id).collect(), next_cursor))
    }

    /// Conversations by id, in the order given (missing ones skipped).
    pub(super) async fn conversations(&self, ids: &[String]) -> Result<Vec<ConversationRecord>, StoreError> {
        let keys = ids.iter().map(|id| key(conv_pk(id), META)).collect();
        let mut by_id: HashMap<String, ConversationRecord> = HashMap::new();
        for item in self.batch_get(keys, false).await? {
            let rec = record_from(item)?;
            by_id.insert(rec.conversation.conversation_id.clone(), rec);
        }
        let records: Vec<ConversationRecord> = ids.iter().filter_map(|id| by_id.remove(id)).collect();
        self.hydrate_active(records).await
    }

    /// The conversation item of an ended conversation is complete (its end,
    /// and any message stored after it, wrote it); an active one's counters
    /// and previews live in its newest chunk, read here for the active ones
    /// only (a user's list holds few at a time).
    pub(super) async fn hydrate_active(
        &self,
        records: Vec<ConversationRecord>,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let reads = records.into_iter().map(|r| async move {
            if r.conversation.status != ConversationStatus::Active {
                return Ok(Some(r));
            }
            self.load(r.id(), false).await
        });
        let loaded = futures::future::try_join_all(reads).await?;
        Ok(loaded.into_iter().flatten().collect())
    }

    /// The conversation item and its newest chunk, in one query (see
    /// [`CHUNK_PREFIX`]): a conversation item under 1 KB and a chunk of an
    /// exchange read as one 4 KB unit.
    pub(super) async fn load(
        &self,
        conversation_id: &str,
        consistent: bool,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let resp = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", s(conv_pk(conversation_id)))
            .expression_attribute_values(":lo", s(CHUNK_PREFIX))
            .expression_attribute_values(":hi", s(META))
            .scan_index_forward(false)
            .limit(2)
            .consistent_read(consistent)
            .send()
            .await
            .map_err(sdk)?;
        let mut items = resp.items.unwrap_or_default().into_iter();
        let Some(meta) = items.next().filter(|i| str_attr(i, SK) == Some(META)) else {
            return Ok(None);
        };
        let mut record = record_from(meta)?;
        match items.next() {
            Some(chunk) => {
                let (first, _, head) = chunk_from(&chunk, conversation_id)?;
                record.apply_head(first, head);
            }
            None => record.apply_no_chunk(),
        }
        Ok(Some(record))
    }

    /// One page of messages from the chunks, or `None` when an eventually
    /// consistent read saw fewer messages than the query knows of.
    pub(super) async fn read_messages(
        &self,
        conversation_id: &str,
        q: &MessageQuery,
        consistent: bool,
    ) -> Result<Option<Page<Message>>, StoreError> {
        let mut pager = MessagePager::new(q, format!("M#{conversation_id}"))?;
        let (lo, hi) = match (q.order, pager.start_chunk()) {
            (Order::Asc, Some(from)) => (chunk_sk(from), chunk_sk(u64::MAX)),
            (Order::Desc, Some(from)) => (chunk_sk(0), chunk_sk(from)),
            (_, None) => (chunk_sk(0), chunk_sk(u64::MAX)),
        };
        let mut exclusive_start = None;
        let mut exhausted = false;
        // Messages per chunk: an exchange (two) until the chunks read say
        // otherwise. A query is billed on the items it returns, so it asks
        // for about as many chunks as the messages still wanted need, and
        // pages on when that was too few.
        let (mut seen_chunks, mut seen_messages) = (1usize, 2usize);
        while !pager.done() {
            let per_chunk = seen_messages.div_ceil(seen_chunks).max(1);
            let chunks = pager.wanted().div_ceil(per_chunk).clamp(1, 100) as i32;
            let resp = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(conv_pk(conversation_id)))
                .expression_attribute_values(":lo", s(&lo))
                .expression_attribute_values(":hi", s(&hi))
                .scan_index_forward(q.order == Order::Asc)
                .limit(chunks)
                .consistent_read(consistent)
                .set_exclusive_start_key(exclusive_start)
                .send()
                .await
                .map_err(sdk)?;
            for item in resp.items.unwrap_or_default() {
                let (first, messages, _) = chunk_from(&item, conversation_id)?;
                seen_chunks += 1;
                seen_messages += messages.len();
                if !pager.push(first, messages) {
                    break;
                }
            }
            match resp.last_evaluated_key {
                Some(k) => exclusive_start = Some(k),
                None => {
                    exhausted = true;
                    break;
                }
            }
        }
        if !consistent && pager.lagged(exhausted) {
            return Ok(None);
        }
        Ok(Some(pager.finish()))
    }
}
