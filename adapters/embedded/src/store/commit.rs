//! A conversation item's writes: the index entries that follow its state,
//! the versioned write with the user's totals.

use super::*;

impl EmbeddedStore {
    /// Writes the index entries that follow a conversation's state.
    pub(super) fn write_indexes(
        txn: &redb::WriteTransaction,
        old: Option<&Conversation>,
        new: &Conversation,
    ) -> Result<(), StoreError> {
        let mut active = txn.open_table(ACTIVE).map_err(unavailable)?;
        if let Some(old) = old
            && memberships(old).active
        {
            active.remove(active_key(old).as_str()).map_err(unavailable)?;
        }
        if memberships(new).active {
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
    pub(super) async fn write_meta(
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
                table.insert(sk.as_str(), encode(&s).as_slice()).map_err(unavailable)?;
            }
            if releases_pair(&old.conversation, c) {
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

    pub(super) fn check_version(
        txn: &redb::WriteTransaction,
        id: &str,
        expected: u64,
    ) -> Result<ConversationRecord, StoreError> {
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
