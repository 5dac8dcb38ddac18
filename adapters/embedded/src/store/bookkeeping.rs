//! The store's bookkeeping beside the conversations: idempotency records,
//! erasure jobs, the sweeper's cursor, the flagged lists, the users'
//! totals, and the store's health; and the roles `UserTotals`,
//! `IdempotencyStore`, `SessionIndex`, `ErasureJobs` and `StoreHealth`.

use super::*;

impl EmbeddedStore {
    pub(super) async fn list_flagged_messages_in(
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

    pub(super) async fn list_flagged_conversations_in(
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
}

#[async_trait]
impl UserTotals for EmbeddedStore {
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
}

#[async_trait]
impl IdempotencyStore for EmbeddedStore {
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
}

#[async_trait]
impl SessionIndex for EmbeddedStore {
    async fn expired_conversations(&self, now: Timestamp, limit: usize) -> Result<Vec<ConversationRecord>, StoreError> {
        Ok(self
            .records_before(EXPIRING, None, format!("{}{SEP}", millis(now)), limit)
            .await?
            .items)
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
}

#[async_trait]
impl ErasureJobs for EmbeddedStore {
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
}

#[async_trait]
impl StoreHealth for EmbeddedStore {
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
