//! Writing a conversation item under its version with the user's totals,
//! and releasing the (agent, user) pair.

use super::*;

impl DynamoStore {
    /// Writes the conversation item conditional on its version, and with
    /// `stats` the user's totals in the same transaction.
    pub(super) async fn write_meta(
        &self,
        record: &ConversationRecord,
        expected_version: u64,
        stats: Option<StatsDelta>,
    ) -> Result<(), StoreError> {
        let c = &record.conversation;
        let Some(delta) = stats else {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(meta_item(record)?))
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(expected_version))
                .send()
                .await;
            return match result {
                Ok(_) => Ok(()),
                Err(e) if condition_failed(&e) => {
                    Err(StoreError::Conflict(format!("version is no longer {expected_version}")))
                }
                Err(e) => Err(sdk(e)),
            };
        };
        let meta = Put::builder()
            .table_name(&self.table)
            .set_item(Some(meta_item(record)?))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(expected_version))
            .build()
            .map_err(corrupt)?;
        // `store_rules::apply_delta` as an update expression.
        // `lastConversationAt` is a max (as on the embedded store): it is set
        // only when it moves forward. An end applied late, of a conversation
        // older than the last one counted, fails that condition alone; the
        // transaction is then made again without the SET.
        let stats_update = |with_at: bool| -> Result<Update, StoreError> {
            let mut update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(stats_pk(&c.owner_id, &c.user_id), "STATS")))
                .expression_attribute_values(":c", n(delta.conversations))
                .expression_attribute_values(":m", n(delta.messages))
                .expression_attribute_values(":s", n(delta.seconds))
                .expression_attribute_values(":u", s(&c.user_id));
            match delta.at.filter(|_| with_at) {
                Some(t) => {
                    update = update
                        .update_expression(
                            "ADD conversations :c, messages :m, totalSeconds :s SET userId = :u, lastConversationAt = :at",
                        )
                        .condition_expression("attribute_not_exists(lastConversationAt) OR lastConversationAt <= :at")
                        .expression_attribute_values(":at", s(stats_time(t)));
                }
                None => {
                    update =
                        update.update_expression("ADD conversations :c, messages :m, totalSeconds :s SET userId = :u")
                }
            }
            update.build().map_err(corrupt)
        };
        let items = |update: Update| {
            vec![
                TransactWriteItem::builder().put(meta.clone()).build(),
                TransactWriteItem::builder().update(update).build(),
            ]
        };
        match self.try_transact(items(stats_update(true)?)).await? {
            Ok(()) => {}
            Err(reasons) if delta.at.is_some() && only_second_failed(&reasons) => {
                self.transact(items(stats_update(false)?)).await?;
            }
            Err(reasons) => return Err(cancelled(reasons)),
        }
        // `store_rules::releases_pair` without the old item: the write that
        // ends a session is the one whose delta counts the conversation.
        if delta.conversations > 0 {
            self.release_pair(c).await;
        }
        Ok(())
    }

    /// Releases the (agent, user) pair if it still points at `id`. Best
    /// effort: a stale pair is recognised (its conversation is not active)
    /// and replaced by the next create.
    pub(super) async fn release_pair(&self, c: &Conversation) {
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
