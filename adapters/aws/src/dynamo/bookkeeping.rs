//! The store's bookkeeping beside the conversations: idempotency records,
//! erasure jobs, the sweeper's index and cursor, the flagged lists, the
//! users' totals, and the store's health; and the roles `UserTotals`,
//! `IdempotencyStore`, `SessionIndex`, `ErasureJobs` and `StoreHealth`.

use super::*;

impl DynamoStore {
    pub(super) async fn list_flagged_messages_in(
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

    pub(super) async fn list_flagged_conversations_in(
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
}

#[async_trait]
impl UserTotals for DynamoStore {
    async fn user_stats(&self, owner_id: &str, user_id: &str) -> Result<Option<UserStats>, StoreError> {
        match self.get(stats_pk(owner_id, user_id), "STATS").await? {
            Some(item) => Ok(Some(serde_dynamo::from_item(item).map_err(corrupt)?)),
            None => Ok(None),
        }
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
}

#[async_trait]
impl IdempotencyStore for DynamoStore {
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
}

#[async_trait]
impl SessionIndex for DynamoStore {
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
}

#[async_trait]
impl ErasureJobs for DynamoStore {
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
}

#[async_trait]
impl StoreHealth for DynamoStore {
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
