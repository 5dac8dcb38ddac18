//! The requests every operation is made of: conditional puts, batched
//! gets and deletes with their retries, transactions with their
//! cancellation reasons, single gets.

use super::*;

impl DynamoStore {
    pub(super) fn put(&self, item: Item, condition: Option<&str>) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_string))
            .build()
            .map_err(corrupt)
    }

    /// Gets items by key, retrying unprocessed keys (bounded, jittered).
    pub(super) async fn batch_get(&self, keys: Vec<Item>, consistent: bool) -> Result<Vec<Item>, StoreError> {
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
    pub(super) async fn batch_delete(&self, keys: Vec<Item>) -> Result<(), StoreError> {
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

    /// A transaction whose cancellation is an answer: `Ok(Err(codes))`, one
    /// reason code per item (`None` for an item that was fine).
    pub(super) async fn try_transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<String>>, StoreError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(e) => {
                if let Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() {
                    return Ok(Err(c
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None").to_string())
                        .collect()));
                }
                if e.as_service_error().and_then(|s| s.code()) == Some("TransactionConflictException") {
                    return Err(StoreError::Conflict("transaction conflict".into()));
                }
                Err(sdk(e))
            }
        }
    }

    pub(super) async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        self.try_transact(items).await?.map_err(cancelled)
    }

    pub(super) async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        self.get_with(pk, sk, true).await
    }

    pub(super) async fn get_with(&self, pk: String, sk: &str, consistent: bool) -> Result<Option<Item>, StoreError> {
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
}

pub(super) fn sdk<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable(DisplayErrorContext(e).to_string())
}

/// Whether an SDK error is a failed condition.
pub(super) fn condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}

pub(super) async fn backoff(attempt: u32) {
    let cap = 20u64 << attempt.min(6);
    let ms = rand::rng().random_range(0..=cap);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// A cancelled two-item transaction whose first item was fine and whose
/// second failed its condition.
pub(super) fn only_second_failed(reasons: &[String]) -> bool {
    matches!(reasons, [first, second] if first == "None" && second == "ConditionalCheckFailed")
}

/// What a cancelled transaction means to the domain.
pub(super) fn cancelled(reasons: Vec<String>) -> StoreError {
    let named: Vec<String> = reasons.into_iter().filter(|r| r != "None").collect();
    if named
        .iter()
        .any(|r| r == "ConditionalCheckFailed" || r == "TransactionConflict")
    {
        StoreError::Conflict(named.join(", "))
    } else {
        StoreError::Unavailable(format!("transaction cancelled: {}", named.join(", ")))
    }
}

/// A time in the totals row, in one fixed format (milliseconds, `Z`), so
/// that two of them compare as strings in a condition.
pub(super) fn stats_time(t: Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
