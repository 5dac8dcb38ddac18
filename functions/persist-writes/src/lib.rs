//! `persist-writes`: the FIFO writes queue's worker. Applies each batch in
//! order, exactly once, and answers an `SqsBatchResponse` naming only the
//! records to retry (the trigger enables `ReportBatchItemFailures`).

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use convo_domain::Deps;
use convo_domain::persist::{Delivery, persist_batch};
use lambda_runtime::{Error, LambdaEvent};

pub async fn handle(deps: &Deps, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let deliveries: Vec<Delivery> = event
        .payload
        .records
        .into_iter()
        .map(|r| {
            let id = r.message_id.unwrap_or_default();
            let group = r.attributes.get("MessageGroupId").cloned();
            Delivery::decode(id, group, r.body.as_deref().unwrap_or(""))
        })
        .collect();
    let records = deliveries.len();
    let outcome = persist_batch(deps, deliveries).await;
    tracing::info!(
        records,
        failed = outcome.failed.len(),
        commands_applied = outcome.commands_applied,
        messages_persisted = outcome.messages_persisted,
        duplicates_skipped = outcome.duplicates_skipped,
        "write batch"
    );
    let mut response = SqsBatchResponse::default();
    for id in outcome.failed {
        response.add_failure(id);
    }
    Ok(response)
}
