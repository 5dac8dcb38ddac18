//! `publish-events`: the events queue's worker. Delivers each queued event
//! (CloudEvents JSON, queued by the functions that made the change, after
//! committing it) through the [`EventPublisher`]: the EventBridge bus on
//! AWS, signed webhooks locally. A delivery that fails is reported as a
//! batch item failure: SQS retries it after the visibility timeout, and
//! parks it in the dead-letter queue after its tries. It never touches the
//! conversations, so a delivery problem never holds up their writes.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use convo_domain::events::deliver;
use convo_domain::ports::{EventPublisher, Metrics};
use lambda_runtime::{Error, LambdaEvent};

pub async fn handle(
    publisher: &dyn EventPublisher,
    metrics: &dyn Metrics,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let records: Vec<(String, String)> = event
        .payload
        .records
        .into_iter()
        .map(|r| (r.message_id.unwrap_or_default(), r.body.unwrap_or_default()))
        .collect();
    let mut response = SqsBatchResponse::default();
    for id in deliver(publisher, metrics, &records).await {
        response.add_failure(id);
    }
    Ok(response)
}
