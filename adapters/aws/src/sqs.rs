//! The queues on SQS. The writes queue is FIFO: group = conversation id,
//! deduplication id = command id, so SQS drops a resent command within five
//! minutes and delivers each conversation's writes in order.

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName as A;
use convo_domain::ports::{ComponentHealth, EventQueue, QueueError, TitleQueue, WriteQueue};
use convo_schema::commands::{TitleJob, WriteCommand};
use convo_schema::events::CloudEvent;

/// SQS's limit on one message body.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct SqsQueueConfig {
    /// A short name for health reports ("writes", "titles").
    pub name: String,
    pub url: String,
    pub dlq_url: Option<String>,
    pub fifo: bool,
}

pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    config: SqsQueueConfig,
}

fn unavailable(e: impl std::error::Error) -> QueueError {
    QueueError::Unavailable(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, config: SqsQueueConfig) -> Self {
        Self { client, config }
    }

    async fn send(&self, body: String, group: Option<&str>, dedup: Option<&str>) -> Result<(), QueueError> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(QueueError::TooLarge(body.len()));
        }
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.config.url)
            .message_body(body);
        if self.config.fifo {
            req = req
                .set_message_group_id(group.map(str::to_string))
                .set_message_deduplication_id(dedup.map(str::to_string));
        }
        req.send().await.map_err(unavailable)?;
        Ok(())
    }

    async fn depth(&self, url: &str) -> Result<(u64, u64), QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(unavailable)?;
        let attrs = out.attributes.unwrap_or_default();
        let n = |k: &A| attrs.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((
            n(&A::ApproximateNumberOfMessages),
            n(&A::ApproximateNumberOfMessagesNotVisible),
        ))
    }

    async fn component_health(&self) -> ComponentHealth {
        let mut figures = serde_json::Map::new();
        figures.insert(
            "kind".into(),
            if self.config.fifo { "sqs fifo" } else { "sqs standard" }.into(),
        );
        let mut ok = true;
        match self.depth(&self.config.url).await {
            Ok((visible, in_flight)) => {
                figures.insert("visible".into(), visible.into());
                figures.insert("inFlight".into(), in_flight.into());
            }
            Err(e) => {
                ok = false;
                tracing::warn!(queue = %self.config.name, error = %e, "health: GetQueueAttributes failed");
                figures.insert("error".into(), "the queue's attributes could not be read".into());
            }
        }
        if let Some(dlq) = &self.config.dlq_url {
            match self.depth(dlq).await {
                Ok((visible, in_flight)) => {
                    figures.insert("deadLetters".into(), (visible + in_flight).into());
                }
                Err(e) => {
                    tracing::warn!(queue = %self.config.name, error = %e, "health: the dead-letter queue's GetQueueAttributes failed");
                    figures.insert(
                        "deadLetterError".into(),
                        "the dead-letter queue's attributes could not be read".into(),
                    );
                }
            }
        }
        ComponentHealth {
            name: format!("{}Queue", self.config.name),
            ok,
            figures,
        }
    }
}

#[async_trait]
impl WriteQueue for SqsQueue {
    async fn send_write(&self, command: &WriteCommand) -> Result<(), QueueError> {
        let body = serde_json::to_string(command).map_err(|e| QueueError::Unavailable(e.to_string()))?;
        self.send(body, Some(&command.conversation_id), Some(&command.command_id))
            .await
    }

    async fn health(&self) -> ComponentHealth {
        self.component_health().await
    }
}

#[async_trait]
impl TitleQueue for SqsQueue {
    async fn send_title(&self, job: &TitleJob) -> Result<(), QueueError> {
        let body = serde_json::to_string(job).map_err(|e| QueueError::Unavailable(e.to_string()))?;
        self.send(body, None, None).await
    }

    async fn health(&self) -> ComponentHealth {
        self.component_health().await
    }
}

#[async_trait]
impl EventQueue for SqsQueue {
    /// In batches of ten (SendMessageBatch); an entry SQS refuses fails the
    /// whole call, which the producer retries (ids repeat, so a consumer
    /// drops what was sent twice).
    async fn send_events(&self, events: &[CloudEvent]) -> Result<(), QueueError> {
        for batch in events.chunks(10) {
            let mut req = self.client.send_message_batch().queue_url(&self.config.url);
            for (i, e) in batch.iter().enumerate() {
                let body = serde_json::to_string(e).map_err(|e| QueueError::Unavailable(e.to_string()))?;
                if body.len() > MAX_MESSAGE_BYTES {
                    return Err(QueueError::TooLarge(body.len()));
                }
                let entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .map_err(unavailable)?;
                req = req.entries(entry);
            }
            let out = req.send().await.map_err(unavailable)?;
            if let Some(f) = out.failed.first() {
                return Err(QueueError::Unavailable(format!(
                    "SQS refused {} of {} events: {} {}",
                    out.failed.len(),
                    batch.len(),
                    f.code,
                    f.message.as_deref().unwrap_or("")
                )));
            }
        }
        Ok(())
    }

    async fn health(&self) -> ComponentHealth {
        self.component_health().await
    }
}
