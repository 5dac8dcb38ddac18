//! AWS mode: the same functions on DynamoDB and SQS (real AWS, or any
//! endpoint in `AWS_ENDPOINT_URL` such as moto), with pollers standing in
//! for Lambda's SQS event source mappings.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName as Attr};
use convo_aws::AwsSettings;
use convo_aws::resources;
use convo_domain::Config;

use crate::pollers::{BATCH_SIZE, Record, Source};

/// The resources of one deployment, by name prefix.
pub struct Names {
    pub table: String,
    /// The data keys' table (issue 16).
    pub keys_table: String,
    /// The alias of the KMS key the data keys are made under.
    pub kms_alias: String,
    pub writes: resources::QueueSpec,
    pub titles: resources::QueueSpec,
    pub events: resources::QueueSpec,
}

pub fn names(prefix: &str) -> Names {
    Names {
        table: prefix.to_string(),
        keys_table: resources::keys_table_name(prefix),
        kms_alias: format!("alias/{prefix}"),
        writes: resources::writes_queue(prefix),
        titles: resources::titles_queue(prefix),
        events: resources::events_queue(prefix),
    }
}

pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// `convo-local init-aws`: creates the table and queues (idempotent) and
/// prints the environment the functions read.
pub async fn init(prefix: &str, visibility_timeout_seconds: u32) -> Result<(), String> {
    let sdk = sdk_config().await;
    let mut n = names(prefix);
    n.writes.visibility_timeout_seconds = visibility_timeout_seconds;
    n.titles.visibility_timeout_seconds = visibility_timeout_seconds;
    // The events queue keeps its own (60 s): a failed delivery waits it
    // out before the next try, as on Lambda.
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let created = resources::create_table(&dynamo, &n.table).await?;
    convo_aws::keys::create_key_table(&dynamo, &n.keys_table).await?;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let key_arn = resources::create_kms_key(&kms, &n.kms_alias).await?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let (writes, writes_dlq) = resources::create_queue(&sqs, &n.writes).await?;
    let (titles, titles_dlq) = resources::create_queue(&sqs, &n.titles).await?;
    let (events, events_dlq) = resources::create_queue(&sqs, &n.events).await?;
    eprintln!(
        "table {} {}; queues ready",
        n.table,
        if created { "created" } else { "already existed" }
    );
    println!("CONVO_TABLE={}", n.table);
    println!("CONVO_KEYS_TABLE={}", n.keys_table);
    println!("CONVO_KMS_KEY_ID={key_arn}");
    println!("CONVO_WRITES_QUEUE_URL={writes}");
    println!("CONVO_WRITES_DLQ_URL={writes_dlq}");
    println!("CONVO_TITLES_QUEUE_URL={titles}");
    println!("CONVO_TITLES_DLQ_URL={titles_dlq}");
    println!("CONVO_EVENTS_QUEUE_URL={events}");
    println!("CONVO_EVENTS_DLQ_URL={events_dlq}");
    Ok(())
}

async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String, String> {
    sqs.get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| {
            format!(
                "queue {name} not found ({}); run `convo-local init-aws` first",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })?
        .queue_url
        .ok_or_else(|| format!("queue {name} has no URL"))
}

/// The settings for `prefix`, unless `CONVO_TABLE` and the queue URLs are
/// set in the environment (then those win, as on Lambda).
pub async fn settings(prefix: &str, config: Config, sdk: &aws_config::SdkConfig) -> Result<AwsSettings, String> {
    if let Ok(mut s) = AwsSettings::from_env() {
        s.config = config;
        return Ok(s);
    }
    let n = names(prefix);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    Ok(AwsSettings {
        table: n.table,
        writes_queue_url: queue_url(&sqs, &n.writes.name).await?,
        titles_queue_url: queue_url(&sqs, &n.titles.name).await?,
        events_queue_url: queue_url(&sqs, &n.events.name).await?,
        writes_dlq_url: queue_url(&sqs, &n.writes.dlq_name()).await.ok(),
        titles_dlq_url: queue_url(&sqs, &n.titles.dlq_name()).await.ok(),
        events_dlq_url: queue_url(&sqs, &n.events.dlq_name()).await.ok(),
        moderation_dir: None,
        keys_table: n.keys_table,
        kms_key_id: n.kms_alias,
        config,
    })
}

/// An SQS queue drained the way Lambda's event source mapping drains it.
pub struct SqsSource {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
    /// How long a failed record stays invisible before redelivery. Lambda
    /// leaves it for the queue's visibility timeout; locally a short delay
    /// keeps retries quick.
    pub retry_delay: Duration,
}

#[async_trait]
impl Source for SqsSource {
    fn arn(&self) -> String {
        self.url.clone()
    }

    async fn receive(&self) -> Vec<Record> {
        let resp = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(BATCH_SIZE as i32)
            // Short polls: moto answers a long poll only when it ends, which
            // would hold each FIFO batch for the whole wait.
            .wait_time_seconds(0)
            .message_system_attribute_names(Attr::All)
            .send()
            .await;
        let messages = match resp {
            Ok(r) => r.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "receive failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Vec::new();
            }
        };
        if messages.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        messages
            .into_iter()
            .map(|m| {
                let attrs = m.attributes.unwrap_or_default();
                Record {
                    message_id: m.message_id.unwrap_or_default(),
                    receipt: m.receipt_handle.unwrap_or_default(),
                    group: attrs.get(&Attr::MessageGroupId).cloned(),
                    body: m.body.unwrap_or_default(),
                    receive_count: attrs
                        .get(&Attr::ApproximateReceiveCount)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1),
                    sent_at_ms: attrs
                        .get(&Attr::SentTimestamp)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                }
            })
            .collect()
    }

    async fn settle(&self, succeeded: Vec<Record>, failed: Vec<Record>) {
        if !succeeded.is_empty() {
            let entries: Vec<DeleteMessageBatchRequestEntry> = succeeded
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&r.receipt)
                        .build()
                        .ok()
                })
                .collect();
            let result = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await;
            match result {
                Ok(out) if !out.failed.is_empty() => {
                    tracing::warn!(
                        failed = out.failed.len(),
                        "some deletes failed; those records will be redelivered"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "delete failed"),
            }
        }
        if failed.is_empty() {
            return;
        }
        // After the delay, all of them visible at once, in order (setting a
        // non-zero visibility per record lets moto hand out a later record of
        // a FIFO group first; zero keeps the order on SQS and on moto).
        let client = self.client.clone();
        let url = self.url.clone();
        let delay = self.retry_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for r in failed {
                let _ = client
                    .change_message_visibility()
                    .queue_url(&url)
                    .receipt_handle(&r.receipt)
                    .visibility_timeout(0)
                    .send()
                    .await;
            }
        });
    }
}
