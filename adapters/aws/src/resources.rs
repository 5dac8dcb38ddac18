//! The table and queues convo runs on, defined once. `convo-local init-aws`
//! creates them from here, the tests create them from here, and the SAM
//! template is checked against here.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};

pub const PK: &str = "pk";
pub const SK: &str = "sk";
/// Conversations by (owner, user), newest first.
pub const BY_USER_INDEX: &str = "byUser";
pub const BY_USER_PK: &str = "gsi1pk";
pub const BY_USER_SK: &str = "gsi1sk";
/// Active conversations by start time (sparse: the keys are removed when a
/// session ends), sharded so no index partition runs hot.
pub const ACTIVE_INDEX: &str = "activeByStart";
pub const ACTIVE_PK: &str = "gsi2pk";
pub const ACTIVE_SK: &str = "gsi2sk";
pub const ACTIVE_SHARDS: u32 = 8;
/// Flagged conversations by (owner, review state), most recently flagged
/// first (sparse: only flagged conversations carry the keys).
pub const FLAGGED_INDEX: &str = "flagged";
pub const FLAGGED_PK: &str = "gsi3pk";
pub const FLAGGED_SK: &str = "gsi3sk";
/// The owner's conversations newest first by creation, partitioned by
/// status and by whether they are flagged: every conversation is in one
/// partition, and the listing reads the partitions it needs (all six for
/// an unfiltered list) and merges them.
pub const BY_OWNER_INDEX: &str = "byOwner";
pub const BY_OWNER_PK: &str = "gsi4pk";
/// The same attribute as `byUser`'s sort key (creation time + id): one
/// attribute on the item serves the three lists.
pub const BY_OWNER_SK: &str = BY_USER_SK;
/// The owner's conversations with one agent, newest first by creation.
pub const BY_AGENT_INDEX: &str = "byAgent";
pub const BY_AGENT_PK: &str = "gsi5pk";
pub const BY_AGENT_SK: &str = BY_USER_SK;
/// Epoch seconds; DynamoDB's TTL deletes expired items.
pub const TTL_ATTRIBUTE: &str = "ttl";

/// Every index projects keys only and is keyed by the conversation item
/// alone: an index entry is written when its keys change (a creation, an
/// end, a first flag, a review), never when other attributes of the
/// conversation do, and an append does not write the conversation item.
pub fn indexes() -> [(&'static str, &'static str, &'static str); 5] {
    [
        (BY_USER_INDEX, BY_USER_PK, BY_USER_SK),
        (ACTIVE_INDEX, ACTIVE_PK, ACTIVE_SK),
        (FLAGGED_INDEX, FLAGGED_PK, FLAGGED_SK),
        (BY_OWNER_INDEX, BY_OWNER_PK, BY_OWNER_SK),
        (BY_AGENT_INDEX, BY_AGENT_PK, BY_AGENT_SK),
    ]
}

/// The attributes the indexes are keyed on, each once (indexes share one
/// sort key attribute).
pub fn index_attributes() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (_, pk, sk) in indexes() {
        for a in [pk, sk] {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .expect("key schema element")
}

fn attr(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("attribute definition")
}

/// Creates the table (on demand) and turns TTL on; an existing table is left
/// as it is.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<bool, String> {
    let mut req = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PK, KeyType::Hash))
        .key_schema(key(SK, KeyType::Range))
        .attribute_definitions(attr(PK))
        .attribute_definitions(attr(SK));
    for name in index_attributes() {
        req = req.attribute_definitions(attr(name));
    }
    for (name, pk, sk) in indexes() {
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(pk, KeyType::Hash))
                .key_schema(key(sk, KeyType::Range))
                .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    match req.send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {
            return Ok(false);
        }
        Err(e) => {
            return Err(format!(
                "create table {table}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            ));
        }
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .send()
        .await
        .map_err(|e| {
            format!(
                "enable TTL on {table}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            )
        })?;
    Ok(true)
}

/// The table as CloudFormation `AWS::DynamoDB::Table` properties: the keys,
/// indexes, billing mode and TTL attribute that [`create_table`] creates.
/// `convo-local manifest` prints it; tests/infra compares it with the SAM
/// template.
pub fn table_cloudformation() -> serde_json::Value {
    use serde_json::json;
    let key_schema = |pk: &str, sk: &str| json!([{"AttributeName": pk, "KeyType": "HASH"}, {"AttributeName": sk, "KeyType": "RANGE"}]);
    let mut attributes = vec![PK, SK];
    attributes.extend(index_attributes());
    let mut gsis = Vec::new();
    for (name, pk, sk) in indexes() {
        gsis.push(json!({
            "IndexName": name,
            "KeySchema": key_schema(pk, sk),
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }));
    }
    json!({
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": attributes
            .iter()
            .map(|a| json!({"AttributeName": a, "AttributeType": "S"}))
            .collect::<Vec<_>>(),
        "KeySchema": key_schema(PK, SK),
        "GlobalSecondaryIndexes": gsis,
        "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": true},
    })
}

/// The data keys' table of a deployment (issue 16): apart from the data
/// table, without point-in-time recovery (its backups would keep the keys
/// an erasure destroys), with deletion protection.
pub fn keys_table_name(prefix: &str) -> String {
    format!("{prefix}-keys")
}

/// The key table as CloudFormation properties (what
/// [`crate::keys::create_key_table`] creates), for `convo-local manifest`.
pub fn keys_table_cloudformation() -> serde_json::Value {
    serde_json::json!({
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "DeletionProtectionEnabled": true,
    })
}

/// The KMS key under `alias` (made with the alias when there is none), for
/// `convo-local init-aws`; returns its ARN. The stack makes its own.
pub async fn create_kms_key(kms: &aws_sdk_kms::Client, alias: &str) -> Result<String, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    if let Ok(found) = kms.describe_key().key_id(alias).send().await
        && let Some(arn) = found.key_metadata.and_then(|m| m.arn)
    {
        return Ok(arn);
    }
    let made = kms
        .create_key()
        .description(format!("convo data keys ({alias})"))
        .send()
        .await
        .map_err(|e| err(&aws_sdk_kms::error::DisplayErrorContext(e)))?;
    let meta = made.key_metadata.ok_or("KMS made no key")?;
    kms.create_alias()
        .alias_name(alias)
        .target_key_id(&meta.key_id)
        .send()
        .await
        .map_err(|e| err(&aws_sdk_kms::error::DisplayErrorContext(e)))?;
    meta.arn.ok_or_else(|| "KMS key has no ARN".to_string())
}

/// A queue and its dead-letter queue.
pub struct QueueSpec {
    pub name: String,
    pub fifo: bool,
    /// Receives before SQS moves a message to the dead-letter queue.
    pub max_receive_count: u32,
    pub visibility_timeout_seconds: u32,
    /// How long an unprocessed message is kept.
    pub message_retention_seconds: u32,
}

/// The longest SQS keeps a message: 14 days. Dead letters wait this long
/// for someone to look.
pub const MAX_RETENTION_SECONDS: u32 = 14 * 24 * 3600;

impl QueueSpec {
    /// `x-dlq` for `x`, `x-dlq.fifo` for `x.fifo`.
    pub fn dlq_name(&self) -> String {
        match self.name.strip_suffix(".fifo") {
            Some(base) => format!("{base}-dlq.fifo"),
            None => format!("{}-dlq", self.name),
        }
    }

    /// The queue as CloudFormation `AWS::SQS::Queue` properties (what
    /// [`create_queue`] sets), plus `DeadLetterQueueName`.
    pub fn cloudformation(&self) -> serde_json::Value {
        let mut props = serde_json::json!({
            "QueueName": self.name,
            "DeadLetterQueueName": self.dlq_name(),
            "VisibilityTimeout": self.visibility_timeout_seconds,
            "MessageRetentionPeriod": self.message_retention_seconds,
            "DeadLetterMessageRetentionPeriod": MAX_RETENTION_SECONDS,
            "RedrivePolicy": {"maxReceiveCount": self.max_receive_count},
        });
        if self.fifo {
            props["FifoQueue"] = true.into();
            props["DeduplicationScope"] = "messageGroup".into();
            props["FifoThroughputLimit"] = "perMessageGroupId".into();
        }
        props
    }
}

/// The writes queue: FIFO, high-throughput mode (deduplication and
/// throughput per message group), content deduplication off (the command id
/// is the deduplication id).
pub fn writes_queue(prefix: &str) -> QueueSpec {
    QueueSpec {
        name: format!("{prefix}-writes.fifo"),
        fifo: true,
        max_receive_count: 5,
        visibility_timeout_seconds: 180,
        // Accepted writes are kept as long as SQS allows while the worker
        // is down: nothing accepted is lost to a short outage.
        message_retention_seconds: MAX_RETENTION_SECONDS,
    }
}

pub fn titles_queue(prefix: &str) -> QueueSpec {
    QueueSpec {
        name: format!("{prefix}-titles"),
        fifo: false,
        max_receive_count: 5,
        visibility_timeout_seconds: 180,
        // A title can be regenerated: SQS's default retention.
        message_retention_seconds: 4 * 24 * 3600,
    }
}

pub fn events_queue(prefix: &str) -> QueueSpec {
    QueueSpec {
        name: format!("{prefix}-events"),
        fifo: false,
        // A delivery gets 60 tries, each after the visibility timeout (and
        // the function's own retries with backoff): an hour of a bus that
        // refuses everything before an event is parked in the dead-letter
        // queue (kept 14 days, alarmed, and redriven to the queue with SQS's
        // DLQ redrive).
        max_receive_count: 60,
        visibility_timeout_seconds: 60,
        // Kept as long as SQS allows: an outage of the bus loses nothing.
        message_retention_seconds: MAX_RETENTION_SECONDS,
    }
}

/// Creates a queue and its dead-letter queue; returns (queue URL, DLQ URL).
pub async fn create_queue(client: &aws_sdk_sqs::Client, spec: &QueueSpec) -> Result<(String, String), String> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let dlq_name = spec.dlq_name();
    let mut dlq = client
        .create_queue()
        .queue_name(&dlq_name)
        .attributes(A::MessageRetentionPeriod, MAX_RETENTION_SECONDS.to_string());
    if spec.fifo {
        dlq = dlq.attributes(A::FifoQueue, "true");
    }
    let dlq_url = dlq
        .send()
        .await
        .map_err(|e| {
            format!(
                "create queue {dlq_name}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })?
        .queue_url
        .unwrap_or_default();
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(A::QueueArn)
        .send()
        .await
        .map_err(|e| format!("read {dlq_name}: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?
        .attributes
        .and_then(|a| a.get(&A::QueueArn).cloned())
        .unwrap_or_default();
    let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receive_count});
    let mut q = client
        .create_queue()
        .queue_name(&spec.name)
        .attributes(A::VisibilityTimeout, spec.visibility_timeout_seconds.to_string())
        .attributes(A::MessageRetentionPeriod, spec.message_retention_seconds.to_string())
        .attributes(A::RedrivePolicy, redrive.to_string());
    if spec.fifo {
        q = q
            .attributes(A::FifoQueue, "true")
            .attributes(A::DeduplicationScope, "messageGroup")
            .attributes(A::FifoThroughputLimit, "perMessageGroupId");
    }
    let url = q
        .send()
        .await
        .map_err(|e| {
            format!(
                "create queue {}: {}",
                spec.name,
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })?
        .queue_url
        .unwrap_or_default();
    Ok((url, dlq_url))
}
