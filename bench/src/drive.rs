//! Drives convo through its real AWS adapters (DynamoDB and SQS, on the
//! moto server `AWS_ENDPOINT_URL` names), the way the Lambda functions do:
//! the API's domain code accepts an append and sends it to the writes queue;
//! the worker's code receives it, persists it and deletes it. Every request
//! is captured (see [`crate::capture`]) and written out as JSON lines, one
//! per logical operation, in the same shape as the peer's (`bench/peer.py`),
//! so that [`crate::report`] bills both the same way.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use aws_config::BehaviorVersion;
use convo_aws::{AwsSettings, resources};
use convo_domain::persist::{Delivery, persist_batch};
use convo_domain::{Config, Deps, service};
use convo_schema::api::{AppendRequest, CreateConversationRequest, NewMessage};
use convo_schema::{Message, Role};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::atomic::Ordering;

use crate::capture::{Capture, Captured};

/// One logical operation and the requests it made.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Operation {
    pub system: String,
    /// `setup`, `append`, `tail`, `tail-after` (the same read with
    /// `after=` the last append's command) or `end` (the session's end and
    /// the title jobs of the whole conversation).
    pub kind: String,
    #[serde(default)]
    pub messages_before: usize,
    /// Messages stored by an append.
    #[serde(default)]
    pub messages: usize,
    /// Wall time of the operation as its caller waits for it: for convo's
    /// append, the API's answer (202).
    #[serde(default)]
    pub ms: f64,
    /// convo only: the worker's time to persist the append.
    #[serde(default)]
    pub worker_ms: Option<f64>,
    #[serde(default)]
    pub requests: Vec<Captured>,
    /// convo only: SQS requests (send, receive, delete).
    #[serde(default)]
    pub queue_requests: Vec<Captured>,
    /// convo only: how many of `requests` the API made (the rest are the
    /// worker's).
    #[serde(default)]
    pub api_requests: Option<usize>,
    #[serde(default)]
    pub returned: Option<usize>,
    #[serde(default)]
    pub error: Option<String>,
    /// The `table` record: the table's description (wire JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<serde_json::Value>,
}

impl Operation {
    pub(crate) fn convo(kind: &str, messages_before: usize) -> Self {
        Self {
            system: "convo".into(),
            kind: kind.into(),
            messages_before,
            ..Default::default()
        }
    }
}

/// The exchanges both systems store: a user turn and an assistant reply of
/// about 200 characters each, different every time.
pub fn exchanges(count: usize) -> Vec<[String; 2]> {
    const USER: [&str; 4] = [
        "Can you tell me a story about a brave little dragon who learns to share her treasure with the other animals in the forest?",
        "Why is the sky blue in the day and dark at night, and where does the sun go when it is not shining on our house?",
        "I built a tower of blocks taller than my cat today and then it fell down, can we count how many blocks there were?",
        "What do whales eat and how do they sleep in the ocean without drowning, do they have beds under the water?",
    ];
    const AGENT: [&str; 4] = [
        "Once upon a time a little dragon named Ember kept a pile of shiny buttons in her cave, and one day a rabbit asked to borrow one.",
        "Sunlight bounces off tiny bits of air and the blue light scatters the most, so the whole sky glows blue until the sun sets.",
        "What a tall tower! Let us count together: one, two, three, and every block you stacked made it taller than a curious cat.",
        "Many whales eat tiny shrimp called krill, and they rest half of their brain at a time so they can still swim up to breathe.",
    ];
    let fit = |s: &str, i: usize| -> String {
        let mut text = format!("({i}) {s} ");
        while text.len() < 200 {
            text.push_str(s);
        }
        text.chars().take(200).collect()
    };
    (0..count)
        .map(|i| [fit(USER[i % 4], i), fit(AGENT[(i / 4) % 4], i)])
        .collect()
}

/// The clients, resources and domain dependencies of one benchmark run.
pub struct Harness {
    /// The API's (and the title generator's): with encryption on, through
    /// the sealing store.
    pub deps: convo_domain::ApiDeps,
    /// The write worker's: the plain store, no key (as on Lambda).
    pub worker: Deps,
    /// The data keys' ring, with encryption on (its KMS calls are counted).
    pub keys: Option<Arc<convo_aws::KmsKeyRing>>,
    pub dynamo: Capture,
    pub sqs: Capture,
    pub sqs_client: aws_sdk_sqs::Client,
    /// The table's description, wire JSON (for the ledger).
    pub table_description: serde_json::Value,
    pub settings: AwsSettings,
}

pub const OWNER: &str = "bench-owner";

impl Harness {
    /// Creates a table and queues named `prefix` on the endpoint and the
    /// domain's dependencies on them, with recording clients; with
    /// encryption as the product's default (`CONVO_ENCRYPTION`, on unless
    /// `off`).
    pub async fn new(prefix: &str) -> Result<Self, String> {
        Self::with_encryption(prefix, std::env::var("CONVO_ENCRYPTION").as_deref() != Ok("off")).await
    }

    /// As [`Harness::new`], with encryption on or off: on, a key table and
    /// a KMS key are made too, and the data keys' ring reaches them with
    /// clients that are not recorded (the data table's bill stays the data
    /// table's; the key ring's calls are counted apart).
    pub async fn with_encryption(prefix: &str, encryption: bool) -> Result<Self, String> {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        let plain_dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let plain_sqs = aws_sdk_sqs::Client::new(&sdk);
        resources::create_table(&plain_dynamo, prefix).await?;
        let (writes_url, writes_dlq) = resources::create_queue(&plain_sqs, &resources::writes_queue(prefix)).await?;
        let (titles_url, titles_dlq) = resources::create_queue(&plain_sqs, &resources::titles_queue(prefix)).await?;
        let (events_url, events_dlq) = resources::create_queue(&plain_sqs, &resources::events_queue(prefix)).await?;
        let dynamo = Capture::default();
        let sqs = Capture::default();
        let dynamo_client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(dynamo.clone())
                .build(),
        );
        let sqs_client = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&sdk)
                .interceptor(sqs.clone())
                .build(),
        );
        dynamo_client
            .describe_table()
            .table_name(prefix)
            .send()
            .await
            .map_err(|e| format!("describe table: {e}"))?;
        let table_description = dynamo
            .take()
            .pop()
            .map(|c| c.response["Table"].clone())
            .ok_or("describe table was not captured")?;
        let settings = AwsSettings {
            table: prefix.to_string(),
            writes_queue_url: writes_url,
            titles_queue_url: titles_url,
            events_queue_url: events_url,
            writes_dlq_url: Some(writes_dlq),
            titles_dlq_url: Some(titles_dlq),
            events_dlq_url: Some(events_dlq),
            moderation_dir: None,
            keys_table: resources::keys_table_name(prefix),
            kms_key_id: String::new(),
            config: Config {
                // The rate limit stays on, as by default, so that its one
                // write per append is billed; it is set high enough never to
                // refuse the benchmark's pace.
                appends_per_minute: 1_000_000,
                encryption,
                ..Config::default()
            },
        };
        let mut settings = settings;
        let mut worker = settings
            .deps_with(dynamo_client, sqs_client.clone())
            .map_err(|e| e.to_string())?;
        // Metrics go to stdout on Lambda (EMF); here they would only be noise.
        worker.metrics = std::sync::Arc::new(convo_domain::NoMetrics);
        // The API's functions always hold the key ring (with encryption off
        // too, for what is already sealed); with it off nothing is sealed
        // and the ring is never asked.
        convo_aws::keys::create_key_table(&plain_dynamo, &settings.keys_table).await?;
        let kms = aws_sdk_kms::Client::new(&sdk);
        settings.kms_key_id = resources::create_kms_key(&kms, &format!("alias/{prefix}")).await?;
        let ring = Arc::new(convo_aws::KmsKeyRing::new(
            plain_dynamo.clone(),
            &settings.keys_table,
            kms,
            &settings.kms_key_id,
        ));
        let deps = worker.clone().sealed_with(ring.clone());
        let keys = Some(ring);
        Ok(Self {
            deps,
            worker,
            keys,
            dynamo,
            sqs,
            sqs_client,
            table_description,
            settings,
        })
    }

    pub async fn create_conversation(&self, user: &str) -> Result<String, String> {
        let req: CreateConversationRequest =
            serde_json::from_value(json!({"userId": user, "agentId": "toy-7", "type": "story"}))
                .map_err(|e| e.to_string())?;
        let (c, _) = service::create_conversation(&self.deps, OWNER, req)
            .await
            .map_err(|e| format!("create: {e:?}"))?;
        Ok(c.conversation_id)
    }

    /// Receives `expected` records from the writes queue, persists them
    /// with the worker's code and deletes what the worker acknowledged (as
    /// Lambda's event source mapping does). Returns the worker's time in
    /// milliseconds.
    pub async fn drain(&self, expected: usize) -> Result<f64, String> {
        let mut worker_ms = 0.0;
        let mut handled = 0;
        let mut empty_polls = 0;
        while handled < expected {
            let received = self
                .sqs_client
                .receive_message()
                .queue_url(&self.settings.writes_queue_url)
                .max_number_of_messages(10)
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
                .wait_time_seconds(if empty_polls == 0 { 0 } else { 1 })
                .send()
                .await
                .map_err(|e| format!("receive: {e}"))?;
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                empty_polls += 1;
                if empty_polls > 30 {
                    return Err(format!("the writes queue gave {handled} of {expected} records"));
                }
                continue;
            }
            empty_polls = 0;
            let deliveries: Vec<Delivery> = messages
                .iter()
                .map(|m| {
                    let group = m
                        .attributes
                        .as_ref()
                        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId))
                        .cloned();
                    Delivery::decode(
                        m.message_id.clone().unwrap_or_default(),
                        group,
                        m.body.as_deref().unwrap_or_default(),
                    )
                })
                .collect();
            let started = Instant::now();
            let outcome = persist_batch(&self.worker, deliveries).await;
            worker_ms += started.elapsed().as_secs_f64() * 1000.0;
            let done: Vec<_> = messages
                .iter()
                .filter(|m| !outcome.failed.contains(m.message_id.as_ref().unwrap_or(&String::new())))
                .enumerate()
                .map(|(i, m)| {
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                        .build()
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?;
            handled += done.len();
            if !done.is_empty() {
                self.sqs_client
                    .delete_message_batch()
                    .queue_url(&self.settings.writes_queue_url)
                    .set_entries(Some(done))
                    .send()
                    .await
                    .map_err(|e| format!("delete: {e}"))?;
            }
        }
        Ok(worker_ms)
    }

    /// Applies every title job on the titles queue with generate-title's
    /// code, deleting each (as its event source mapping would).
    pub async fn drain_titles(&self) -> Result<usize, String> {
        let mut done = 0;
        loop {
            let received = self
                .sqs_client
                .receive_message()
                .queue_url(&self.settings.titles_queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .map_err(|e| format!("receive titles: {e}"))?;
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                return Ok(done);
            }
            for m in messages {
                let job: convo_schema::commands::TitleJob =
                    serde_json::from_str(m.body.as_deref().unwrap_or_default()).map_err(|e| e.to_string())?;
                convo_domain::titles::generate_title(&self.deps, &job)
                    .await
                    .map_err(|e| format!("title: {e:?}"))?;
                self.sqs_client
                    .delete_message()
                    .queue_url(&self.settings.titles_queue_url)
                    .receipt_handle(m.receipt_handle.unwrap_or_default())
                    .send()
                    .await
                    .map_err(|e| format!("delete title job: {e}"))?;
                done += 1;
            }
        }
    }

    /// Every message of a conversation, in index order.
    pub async fn all_messages(&self, conversation_id: &str) -> Result<Vec<Message>, String> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = service::list_messages(
                &self.deps,
                OWNER,
                conversation_id,
                &service::MessagesQuery {
                    limit: 200,
                    cursor: cursor.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("list: {e:?}"))?;
            out.extend(page.messages);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }
}

pub(crate) fn new_message(role: Role, content: &str) -> NewMessage {
    NewMessage {
        role,
        content: content.to_string(),
        created_at: None,
        external_id: None,
        direction: None,
        audio_url: None,
        metadata: None,
        tool_calls: None,
        tool_call_id: None,
    }
}

fn write_line(out: &mut impl std::io::Write, op: &Operation) -> Result<(), String> {
    serde_json::to_writer(&mut *out, op).map_err(|e| e.to_string())?;
    out.write_all(b"\n").map_err(|e| e.to_string())
}

/// Grows one conversation to the largest of `lengths`, one exchange per
/// append, with `tail_reads` reads of the last 20 messages each time it
/// reaches one of them. Writes the operations to `out` (JSON lines) and
/// the exchanges to `exchanges_out` (for the peer).
pub async fn cost(
    prefix: &str,
    lengths: &[usize],
    tail_reads: usize,
    out: &Path,
    exchanges_out: &Path,
) -> Result<(), String> {
    let max = lengths.iter().copied().max().unwrap_or(0);
    let texts = exchanges(max.div_ceil(2));
    std::fs::write(exchanges_out, serde_json::to_vec(&texts).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let h = Harness::new(prefix).await?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?);
    write_line(
        &mut file,
        &Operation {
            table: Some(h.table_description.clone()),
            ..Operation::convo("table", 0)
        },
    )?;
    let cid = h.create_conversation("child-42").await?;
    let setup = Operation {
        requests: h.dynamo.take(),
        queue_requests: h.sqs.take(),
        ..Operation::convo("setup", 0)
    };
    write_line(&mut file, &setup)?;
    let mut stored = 0usize;
    for [user, agent] in &texts {
        if stored >= max {
            break;
        }
        let req = AppendRequest {
            messages: vec![new_message(Role::User, user), new_message(Role::Assistant, agent)],
        };
        let started = Instant::now();
        let result = service::append_messages(&h.deps, OWNER, &cid, req, None).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let api_requests = h.dynamo.len();
        let (command_id, error) = match result {
            Ok(accepted) => (Some(accepted.command_id), None),
            Err(e) => (None, Some(format!("{e:?}"))),
        };
        let worker_ms = h.drain(1).await?;
        let op = Operation {
            messages: 2,
            ms,
            worker_ms: Some(worker_ms),
            requests: h.dynamo.take(),
            queue_requests: h.sqs.take(),
            api_requests: Some(api_requests),
            error: error.clone(),
            ..Operation::convo("append", stored)
        };
        write_line(&mut file, &op)?;
        if let Some(e) = error {
            return Err(format!("convo append failed at {stored} messages: {e}"));
        }
        stored += 2;
        if lengths.contains(&stored) {
            // Then the agent's read right after its own write: `after=` the
            // command just applied costs what the plain read does.
            let reads = std::iter::repeat_n(("tail", None), tail_reads).chain([("tail-after", command_id.as_deref())]);
            for (kind, after) in reads {
                let started = Instant::now();
                let query = service::ContextQuery {
                    max_messages: 20,
                    after: after.map(str::to_string),
                    ..Default::default()
                };
                let context = service::context(&h.deps, OWNER, &cid, &query)
                    .await
                    .map_err(|e| format!("{kind}: {e:?}"))?;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                if after.is_some() && context.after != Some(convo_schema::api::AfterStatus::Applied) {
                    return Err(format!("after= at {stored} messages found {:?}", context.after));
                }
                write_line(
                    &mut file,
                    &Operation {
                        ms,
                        requests: h.dynamo.take(),
                        queue_requests: h.sqs.take(),
                        returned: Some(context.messages.len()),
                        ..Operation::convo(kind, stored)
                    },
                )?;
            }
            eprintln!("convo: {stored} messages");
        }
    }
    // The session's end (its transaction with the user's totals) and the
    // title jobs the conversation queued, as generate-title applies them.
    let started = Instant::now();
    service::end_session(&h.deps, OWNER, &cid, None)
        .await
        .map_err(|e| format!("end: {e:?}"))?;
    let api_requests = h.dynamo.len();
    h.drain(1).await?;
    h.drain_titles().await?;
    write_line(
        &mut file,
        &Operation {
            ms: started.elapsed().as_secs_f64() * 1000.0,
            requests: h.dynamo.take(),
            queue_requests: h.sqs.take(),
            api_requests: Some(api_requests),
            ..Operation::convo("end", stored)
        },
    )?;
    file.flush().map_err(|e| e.to_string())
}

/// What a concurrency run found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConcurrencyResult {
    pub system: String,
    pub writers: usize,
    pub appends_per_writer: usize,
    pub sent: usize,
    pub stored: usize,
    pub errors: usize,
    /// convo: the stored indexes are 0..n-1 and every sent message is
    /// stored exactly once.
    #[serde(default)]
    pub gapless_and_unique: Option<bool>,
}

/// `writers` concurrent writers each append `appends` single messages to one
/// conversation through the API's code; the worker then drains the queue.
pub async fn concurrency(prefix: &str, writers: usize, appends: usize) -> Result<ConcurrencyResult, String> {
    let h = Harness::new(prefix).await?;
    let cid = h.create_conversation("child-7").await?;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let deps = h.deps.clone();
        let cid = cid.clone();
        tasks.spawn(async move {
            let mut errors = 0;
            for i in 0..appends {
                let req = AppendRequest {
                    messages: vec![new_message(Role::User, &format!("writer {w} message {i}"))],
                };
                if service::append_messages(&deps, OWNER, &cid, req, None).await.is_err() {
                    errors += 1;
                }
            }
            errors
        });
    }
    let errors: usize = tasks.join_all().await.into_iter().sum();
    h.drain(writers * appends - errors).await?;
    let stored = h.all_messages(&cid).await?;
    let mut contents: Vec<&str> = stored.iter().map(|m| m.content.as_str()).collect();
    contents.sort_unstable();
    contents.dedup();
    let gapless = stored.iter().enumerate().all(|(i, m)| m.message_index == i as u64);
    Ok(ConcurrencyResult {
        system: "convo".into(),
        writers,
        appends_per_writer: appends,
        sent: writers * appends,
        stored: stored.len(),
        errors,
        gapless_and_unique: Some(
            gapless && contents.len() == stored.len() && stored.len() == writers * appends - errors,
        ),
    })
}

/// Issue 16's figures: what sealing costs.
#[derive(Debug, Serialize)]
pub struct EncryptionResult {
    /// Whole conversations of 10 and 100 messages (exchanges of two
    /// 200-character messages), in clear and sealed.
    pub conversations: Vec<SealedCost>,
    /// KMS calls for `kms_appends` appends spread over `users` users'
    /// conversations by one warm process (after the conversations' creation,
    /// which made one data key per user).
    pub users: usize,
    pub kms_appends: usize,
    pub kms_calls_creating: u64,
    pub kms_calls_warm: u64,
    /// The same appends, each in a new execution environment (an empty
    /// key cache every time).
    pub kms_calls_cold: u64,
}

#[derive(Debug, Serialize)]
pub struct SealedCost {
    pub messages: usize,
    pub sealed: bool,
    /// Table write units per stored message over the appends (the
    /// worker's chunk writes and the API's rate-limit write).
    pub append_write_units_per_message: f64,
    /// The whole conversation (its creation, the appends, its end and the
    /// title jobs), table and index write units per message.
    pub cumulative_write_units_per_message: f64,
    /// The largest chunk item written, in bytes (DynamoDB's size: names and
    /// values).
    pub largest_chunk_bytes: usize,
    /// The conversation item as the end left it, in bytes.
    pub conversation_item_bytes: usize,
}

/// DynamoDB's size of an attribute value (its published rules, roughly
/// for numbers: a byte per two digits and one).
fn attribute_size(v: &aws_sdk_dynamodb::types::AttributeValue) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    match v {
        A::S(s) => s.len(),
        A::N(n) => n.len().div_ceil(2) + 1,
        A::B(b) => b.as_ref().len(),
        A::Bool(_) | A::Null(_) => 1,
        A::M(m) => 3 + m.iter().map(|(k, v)| k.len() + attribute_size(v) + 1).sum::<usize>(),
        A::L(l) => 3 + l.iter().map(|v| attribute_size(v) + 1).sum::<usize>(),
        _ => 0,
    }
}

fn chunk_sizes(requests: &[Captured]) -> Vec<usize> {
    requests
        .iter()
        .filter(|r| r.op == "PutItem")
        .filter_map(|r| r.request.get("Item").and_then(|i| i.as_object()))
        .filter(|item| {
            item.get("sk")
                .and_then(|v| v["S"].as_str())
                .is_some_and(|sk| sk.starts_with("M#"))
        })
        .map(crate::capacity::item_size)
        .collect()
}

async fn encryption_cost(prefix: &str, exchanges_count: usize, sealed: bool) -> Result<SealedCost, String> {
    let h = Harness::with_encryption(prefix, sealed).await?;
    let mut ops = vec![Operation {
        table: Some(h.table_description.clone()),
        ..Operation::convo("table", 0)
    }];
    let cid = h.create_conversation("child-42").await?;
    ops.push(Operation {
        requests: h.dynamo.take(),
        queue_requests: h.sqs.take(),
        ..Operation::convo("setup", 0)
    });
    let mut largest = 0;
    for (i, [user, agent]) in exchanges(exchanges_count).iter().enumerate() {
        let req = AppendRequest {
            messages: vec![new_message(Role::User, user), new_message(Role::Assistant, agent)],
        };
        service::append_messages(&h.deps, OWNER, &cid, req, None)
            .await
            .map_err(|e| format!("append: {e:?}"))?;
        h.drain(1).await?;
        let requests = h.dynamo.take();
        largest = largest.max(chunk_sizes(&requests).into_iter().max().unwrap_or(0));
        ops.push(Operation {
            messages: 2,
            requests,
            queue_requests: h.sqs.take(),
            ..Operation::convo("append", 2 * i)
        });
    }
    service::end_session(&h.deps, OWNER, &cid, None)
        .await
        .map_err(|e| format!("end: {e:?}"))?;
    h.drain(1).await?;
    h.drain_titles().await?;
    ops.push(Operation {
        requests: h.dynamo.take(),
        queue_requests: h.sqs.take(),
        ..Operation::convo("end", 2 * exchanges_count)
    });
    let item = convo_aws::dynamo::codec::meta_item(
        &h.worker
            .store
            .conversations
            .get_conversation(&cid)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the conversation is gone")?,
    )
    .map_err(|e| e.to_string())?;
    let billed = crate::report::bill(&ops)?;
    let messages = (2 * exchanges_count) as f64;
    let appends: f64 = ops
        .iter()
        .zip(&billed.costs)
        .filter(|(o, _)| o.kind == "append")
        .map(|(_, (c, _))| c.write_units)
        .sum();
    let all: f64 = billed.costs.iter().map(|(c, _)| c.all_writes()).sum();
    Ok(SealedCost {
        messages: 2 * exchanges_count,
        sealed,
        append_write_units_per_message: appends / messages,
        cumulative_write_units_per_message: all / messages,
        largest_chunk_bytes: largest,
        conversation_item_bytes: item.iter().map(|(k, v)| k.len() + attribute_size(v)).sum(),
    })
}

/// Measures [`EncryptionResult`] on the endpoint (moto in `bench/run`).
pub async fn encryption(
    prefix: &str,
    lengths: &[usize],
    users: usize,
    appends: usize,
) -> Result<EncryptionResult, String> {
    let mut conversations = Vec::new();
    for &n in lengths {
        for sealed in [false, true] {
            let name = format!("{prefix}-{n}-{}", if sealed { "sealed" } else { "clear" });
            conversations.push(encryption_cost(&name, n.div_ceil(2), sealed).await?);
        }
    }
    // KMS calls: one harness is one warm process.
    let h = Harness::with_encryption(&format!("{prefix}-kms"), true).await?;
    let ring = h.keys.clone().ok_or("no key ring")?;
    let mut ids = Vec::new();
    for u in 0..users {
        ids.push(h.create_conversation(&format!("child-{u}")).await?);
    }
    let creating = ring.kms_calls.load(Ordering::Relaxed);
    let one = |i: usize| AppendRequest {
        messages: vec![new_message(Role::User, &format!("message {i}"))],
    };
    for i in 0..appends {
        service::append_messages(&h.deps, OWNER, &ids[i % users], one(i), None)
            .await
            .map_err(|e| format!("warm append: {e:?}"))?;
    }
    let warm = ring.kms_calls.load(Ordering::Relaxed) - creating;
    // Cold: a new ring (an empty cache) for every append.
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let mut cold = 0;
    for i in 0..appends {
        let fresh = Arc::new(convo_aws::KmsKeyRing::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            &h.settings.keys_table,
            aws_sdk_kms::Client::new(&sdk),
            &h.settings.kms_key_id,
        ));
        let deps = h.worker.clone().sealed_with(fresh.clone());
        service::append_messages(&deps, OWNER, &ids[i % users], one(i), None)
            .await
            .map_err(|e| format!("cold append: {e:?}"))?;
        cold += fresh.kms_calls.load(Ordering::Relaxed);
    }
    Ok(EncryptionResult {
        conversations,
        users,
        kms_appends: appends,
        kms_calls_creating: creating,
        kms_calls_warm: warm,
        kms_calls_cold: cold,
    })
}
