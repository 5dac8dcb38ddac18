//! What Lambda's SQS event source mapping and EventBridge schedule do, in
//! process: receive a batch, invoke the worker's handler with the same
//! `SqsEvent` Lambda would build, delete the records that succeeded and
//! leave the failed ones for redelivery; run the sweeper on a timer.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use convo_domain::Deps;
use convo_embedded::EmbeddedQueue;
use lambda_runtime::{Context, Error, LambdaEvent};
use tokio::sync::watch;

/// Lambda's SQS batch size for convo's triggers.
pub const BATCH_SIZE: usize = 10;

/// One received queue message, whatever the queue.
#[derive(Debug, Clone)]
pub struct Record {
    pub message_id: String,
    pub receipt: String,
    pub group: Option<String>,
    pub body: String,
    pub receive_count: u32,
    pub sent_at_ms: i64,
}

/// A queue the poller can drain: the embedded one or SQS.
#[async_trait]
pub trait Source: Send + Sync {
    fn arn(&self) -> String;
    /// Up to [`BATCH_SIZE`] records, waiting up to a second for one.
    async fn receive(&self) -> Vec<Record>;
    /// Deletes the records that succeeded; the failed ones stay for
    /// redelivery (and, after too many receives, the dead-letter queue).
    async fn settle(&self, succeeded: Vec<Record>, failed: Vec<Record>);
}

pub struct EmbeddedSource(pub Arc<EmbeddedQueue>, pub &'static str);

#[async_trait]
impl Source for EmbeddedSource {
    fn arn(&self) -> String {
        format!("arn:aws:sqs:local:000000000000:{}", self.1)
    }

    async fn receive(&self) -> Vec<Record> {
        self.0
            .receive(BATCH_SIZE, Duration::from_secs(1))
            .await
            .into_iter()
            .map(|r| Record {
                message_id: r.message_id,
                receipt: r.receipt.to_string(),
                group: r.group,
                body: r.body,
                receive_count: r.receive_count,
                sent_at_ms: r.sent_at.timestamp_millis(),
            })
            .collect()
    }

    async fn settle(&self, succeeded: Vec<Record>, failed: Vec<Record>) {
        for (records, ok) in [(succeeded, true), (failed, false)] {
            for r in records {
                let Ok(receipt) = r.receipt.parse() else { continue };
                let result = if ok {
                    self.0.ack(receipt).await
                } else {
                    self.0.nack(receipt).await
                };
                if let Err(e) = result {
                    tracing::error!(queue = self.1, error = %e, "could not settle a record");
                }
            }
        }
    }
}

fn to_sqs_event(arn: &str, batch: &[Record]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = batch
        .iter()
        .map(|r| {
            let mut m = SqsMessage::default();
            m.message_id = Some(r.message_id.clone());
            m.receipt_handle = Some(r.receipt.clone());
            m.body = Some(r.body.clone());
            m.attributes
                .insert("ApproximateReceiveCount".into(), r.receive_count.to_string());
            m.attributes.insert("SentTimestamp".into(), r.sent_at_ms.to_string());
            if let Some(g) = &r.group {
                m.attributes.insert("MessageGroupId".into(), g.clone());
            }
            m.event_source = Some("aws:sqs".into());
            m.event_source_arn = Some(arn.to_string());
            m.aws_region = Some("local".into());
            m
        })
        .collect();
    event
}

/// Feeds `source` to `handler` until `stop` turns true.
/// A receive is never abandoned half-way (a dropped SQS receive would leave
/// its records invisible until their timeout): `stop` is checked between
/// batches, and a receive returns within about a second.
pub async fn poll<D, H, Fut>(source: Arc<dyn Source>, deps: D, handler: H, stop: watch::Receiver<bool>)
where
    D: Clone + Send + Sync + 'static,
    H: Fn(D, LambdaEvent<SqsEvent>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<SqsBatchResponse, Error>> + Send,
{
    loop {
        if *stop.borrow() {
            return;
        }
        let batch = source.receive().await;
        if batch.is_empty() {
            continue;
        }
        let event = LambdaEvent::new(to_sqs_event(&source.arn(), &batch), Context::default());
        let failed: HashSet<String> = match handler(deps.clone(), event).await {
            Ok(resp) => resp
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Err(e) => {
                // A failed invocation retries the whole batch, as on Lambda.
                tracing::error!(queue = %source.arn(), error = %e, "worker invocation failed");
                batch.iter().map(|r| r.message_id.clone()).collect()
            }
        };
        let (bad, good): (Vec<Record>, Vec<Record>) = batch.into_iter().partition(|r| failed.contains(&r.message_id));
        source.settle(good, bad).await;
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
