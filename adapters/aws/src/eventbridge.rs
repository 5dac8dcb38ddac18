//! Events delivered to an EventBridge bus with `PutEvents`: ten entries a
//! call, `Source` = the CloudEvent's source, `DetailType` = its type,
//! `Detail` = the whole CloudEvent (rules match on `detail-type`, or on
//! `detail.data.severity`, …). Entries EventBridge refuses are retried here
//! with exponential backoff and full jitter; what still fails is reported
//! for the events queue to retry.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use convo_domain::ports::{EventPublisher, OutgoingEvent};

/// Tries of one entry within a call of the function (then SQS redelivers).
const TRIES: u32 = 4;
const BASE_DELAY: Duration = Duration::from_millis(100);

pub struct EventBridgePublisher {
    client: aws_sdk_eventbridge::Client,
    /// The bus's name or ARN.
    bus: String,
    source: String,
}

impl EventBridgePublisher {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
            source: source.into(),
        }
    }

    fn entry(&self, e: &OutgoingEvent) -> PutEventsRequestEntry {
        PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(&self.source)
            .detail_type(e.event_type.as_str())
            .detail(&e.body)
            .time(aws_sdk_eventbridge::primitives::DateTime::from_millis(
                e.time.timestamp_millis(),
            ))
            .build()
    }

    /// One `PutEvents` call for up to ten events: per event, delivered or
    /// why not.
    async fn put(&self, events: &[&OutgoingEvent]) -> Vec<Result<(), String>> {
        let call = self
            .client
            .put_events()
            .set_entries(Some(events.iter().map(|e| self.entry(e)).collect()))
            .send()
            .await;
        match call {
            Ok(out) => {
                let entries = out.entries.unwrap_or_default();
                (0..events.len())
                    .map(|i| match entries.get(i) {
                        Some(r) if r.error_code.is_none() && r.event_id.is_some() => Ok(()),
                        Some(r) => Err(format!(
                            "{}: {}",
                            r.error_code.as_deref().unwrap_or("refused"),
                            r.error_message.as_deref().unwrap_or("")
                        )),
                        None => Err("EventBridge answered no entry for it".into()),
                    })
                    .collect()
            }
            Err(e) => {
                let why = aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string();
                events.iter().map(|_| Err(why.clone())).collect()
            }
        }
    }
}

#[async_trait]
impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, events: &[OutgoingEvent]) -> Vec<Result<(), String>> {
        let mut results: Vec<Result<(), String>> = vec![Err("not sent".into()); events.len()];
        let mut pending: Vec<usize> = (0..events.len()).collect();
        for attempt in 0..TRIES {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                // Full jitter: a random wait up to base × 2^attempt.
                let cap = BASE_DELAY.saturating_mul(1 << attempt);
                tokio::time::sleep(cap.mul_f64(rand::random::<f64>())).await;
            }
            let mut still = Vec::new();
            for chunk in pending.chunks(10) {
                let batch: Vec<&OutgoingEvent> = chunk.iter().filter_map(|i| events.get(*i)).collect();
                for (i, r) in chunk.iter().zip(self.put(&batch).await) {
                    if r.is_err() {
                        still.push(*i);
                    }
                    if let Some(slot) = results.get_mut(*i) {
                        *slot = r;
                    }
                }
            }
            pending = still;
        }
        results
    }
}
