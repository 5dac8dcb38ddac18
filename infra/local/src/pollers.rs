//! What Lambda's SQS event source mapping and EventBridge schedule do, in
//! process: receive a batch, invoke the worker's handler with the same
//! `SqsEvent` Lambda would build, delete the records that succeeded and
//! leave the failed ones for redelivery; run the sweeper on a timer.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use convo_domain::Deps;
use convo_embedded::{EmbeddedQueue, Received};
use lambda_runtime::{Context, Error, LambdaEvent};
use tokio::sync::watch;

/// Lambda's SQS batch size for convo's triggers.
pub const BATCH_SIZE: usize = 10;

fn to_sqs_event(queue_name: &str, batch: &[Received]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = batch
        .iter()
        .map(|r| {
            let mut m = SqsMessage::default();
            m.message_id = Some(r.message_id.clone());
            m.receipt_handle = Some(r.receipt.to_string());
            m.body = Some(r.body.clone());
            m.attributes
                .insert("ApproximateReceiveCount".into(), r.receive_count.to_string());
            m.attributes
                .insert("SentTimestamp".into(), r.sent_at.timestamp_millis().to_string());
            if let Some(g) = &r.group {
                m.attributes.insert("MessageGroupId".into(), g.clone());
            }
            m.event_source = Some("aws:sqs".into());
            m.event_source_arn = Some(format!("arn:aws:sqs:local:000000000000:{queue_name}"));
            m.aws_region = Some("local".into());
            m
        })
        .collect();
    event
}

/// Feeds `queue` to `handler` until `stop` turns true.
pub async fn poll<H, Fut>(
    queue: Arc<EmbeddedQueue>,
    name: &'static str,
    deps: Deps,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Deps, LambdaEvent<SqsEvent>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<SqsBatchResponse, Error>> + Send,
{
    loop {
        let batch = tokio::select! {
            b = queue.receive(BATCH_SIZE, Duration::from_secs(1)) => b,
            _ = stop.changed() => return,
        };
        if batch.is_empty() {
            if *stop.borrow() {
                return;
            }
            continue;
        }
        let event = LambdaEvent::new(to_sqs_event(name, &batch), Context::default());
        let failed: HashSet<String> = match handler(deps.clone(), event).await {
            Ok(resp) => resp
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Err(e) => {
                // A failed invocation retries the whole batch, as on Lambda.
                tracing::error!(queue = name, error = %e, "worker invocation failed");
                batch.iter().map(|r| r.message_id.clone()).collect()
            }
        };
        for r in &batch {
            let result = if failed.contains(&r.message_id) {
                queue.nack(r.receipt).await
            } else {
                queue.ack(r.receipt).await
            };
            if let Err(e) = result {
                tracing::error!(queue = name, error = %e, "could not settle a record");
            }
        }
    }
}

/// Runs the sweeper every `every` until `stop` turns true.
pub async fn sweep_on_timer(deps: Deps, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let mut event: EventBridgeEvent<serde_json::Value> = EventBridgeEvent::default();
        event.detail_type = "Scheduled Event".into();
        event.source = "aws.events".into();
        if let Err(e) = sweep_sessions::handle(&deps, LambdaEvent::new(event, Context::default())).await {
            tracing::warn!(error = %e, "sweep failed");
        }
    }
}
