//! Warm CPU of convo's hot paths (issue 6, item 4), with criterion:
//!
//! - `append_handler`: `append-message`'s handler from the API Gateway
//!   request to the enqueued command (into an in-process sink), for one
//!   200-character message;
//! - `moderator`: screening the moderation corpus, in bytes per second
//!   (the word lists alone, then with the learned stage);
//! - `learned_stage`: what the learned stage adds to an exchange of two
//!   200-character messages (criterion, then p50 and p99 printed) and the
//!   model's load time;
//! - `persist_worker`: the write worker committing a batch of 10 records
//!   (one exchange each) to the in-memory embedded store, per record;
//! - `context_tokens`: what `/context?maxTokens=` adds, counting the tokens
//!   of 20 messages of 200 characters, per message, with each tokenizer.
//!
//! `cargo bench -p convo-bench --bench cpu`; figures in BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use convo_bench::{Sink, in_memory_deps, message_text};
use convo_domain::persist::{Delivery, persist_batch};
use convo_domain::ports::ConversationRecord;
use convo_domain::{ApiDeps, Config, service};
use convo_schema::Conversation;
use convo_schema::api::{AppendRequest, CreateConversationRequest};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const FIXTURE_CID: &str = "01JD0000000000000000000000";
const FIXTURE_OWNER: &str = "owner-fixture";

fn events_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/events")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn config() -> Config {
    // No rate limit: on Lambda it is one DynamoDB UpdateItem (network, not
    // CPU); here it would time an embedded-store write instead.
    Config {
        appends_per_minute: 0,
        ..Default::default()
    }
}

/// A stored conversation of `owner`.
async fn create(deps: &ApiDeps, owner: &str) -> Conversation {
    let req: CreateConversationRequest =
        serde_json::from_value(serde_json::json!({"userId": "child-42", "agentId": "toy-7"})).expect("request");
    service::create_conversation(deps, owner, req).await.expect("create").0
}

fn append_handler(c: &mut Criterion) {
    let rt = runtime();
    let mut event: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(events_dir().join("apigw-append-message.json")).expect("fixture"),
    )
    .expect("fixture json");
    event["body"] = serde_json::json!({"messages": [{"role": "user", "content": message_text(200)}]})
        .to_string()
        .into();
    let event = event.to_string();

    let mut group = c.benchmark_group("append_handler");
    group.throughput(Throughput::Elements(1));
    // In clear (encryption off), and sealed (issue 16: the data key warm in
    // the cache, as on a warm Lambda; the cache is the key ring's either way).
    for sealed in [false, true] {
        let sink = Arc::new(Sink::default());
        let deps = in_memory_deps(
            sink.clone(),
            Config {
                encryption: sealed,
                ..config()
            },
        );
        // The conversation the API Gateway fixture names, owned by its `sub`.
        rt.block_on(async {
            let mut conversation = create(&deps, FIXTURE_OWNER).await;
            conversation.conversation_id = FIXTURE_CID.into();
            let mut record = ConversationRecord::new(conversation);
            if sealed {
                record.key_id = Some(deps.keys.current_key(FIXTURE_OWNER, "child-42").await.expect("key").0);
            }
            deps.store
                .conversations
                .create_conversation(&record, false)
                .await
                .expect("seed");
        });
        let name = if sealed {
            "one 200-char message, sealed"
        } else {
            "one 200-char message"
        };
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    sink.take_writes();
                    lambda_http::request::from_str(&event).expect("request")
                },
                |req| {
                    let resp = rt.block_on(append_message::handle(&deps, req)).expect("handler");
                    assert_eq!(resp.status(), 202);
                    resp
                },
                BatchSize::SmallInput,
            )
        });
        // What was queued is sealed (or not): the benchmark times what it says.
        // (Nothing was queued when a filter left this benchmark out.)
        if let Some(last) = sink.take_writes().last() {
            let body = serde_json::to_string(last).expect("json");
            assert_eq!(body.contains("\"sealed\""), sealed, "{body}");
        }
    }
    group.finish();
}

fn moderator(c: &mut Criterion) {
    let corpus = std::fs::read_to_string(events_dir().join("../moderation/corpus.jsonl")).expect("corpus");
    let texts: Vec<String> = corpus
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("line")["text"]
                .as_str()
                .expect("text")
                .to_string()
        })
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    // The word-list stage alone (its throughput is the one tracked since
    // issue 6), then both stages.
    let rules = convo_domain::wordlists::rule_moderator(None).expect("word lists");
    let both = convo_domain::screening::moderator(None).expect("moderator");
    use convo_domain::Moderator;

    let mut group = c.benchmark_group("moderator");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(format!("corpus ({} texts, {bytes} bytes)", texts.len()), |b| {
        b.iter(|| {
            for t in &texts {
                black_box(rules.screen(black_box(t)));
            }
        })
    });
    group.bench_function(
        format!("corpus, word lists and learned stage ({} texts)", texts.len()),
        |b| {
            b.iter(|| {
                for t in &texts {
                    black_box(both.screen_turn(black_box(t)));
                }
            })
        },
    );
    group.finish();
}

/// What the learned stage adds to an append of one exchange (two
/// 200-character messages): criterion's median, then p50 and p99 of 5,000
/// timed exchanges on this thread (printed; BENCHMARKS.md, "Safety").
fn learned_stage(c: &mut Criterion) {
    use convo_domain::Moderator;
    let rules = convo_domain::wordlists::rule_moderator(None).expect("word lists");
    let both = convo_domain::screening::moderator(None).expect("moderator");
    let user = message_text(200);
    let assistant: String = "Once upon a time a little dragon lived in a castle by the sea, and every morning she \
                             flew over the waves to say hello to the fishing boats and the gulls. "
        .chars()
        .cycle()
        .take(200)
        .collect();
    let mut group = c.benchmark_group("learned_stage");
    group.bench_function("exchange of two 200-char messages, word lists only", |b| {
        b.iter(|| (rules.screen(black_box(&user)), rules.screen(black_box(&assistant))))
    });
    group.bench_function("exchange of two 200-char messages, both stages", |b| {
        b.iter(|| {
            (
                both.screen_turn(black_box(&user)),
                both.screen_turn(black_box(&assistant)),
            )
        })
    });
    group.finish();
    let mut added: Vec<f64> = (0..5000)
        .map(|_| {
            let t = std::time::Instant::now();
            black_box((
                both.screen_turn(black_box(&user)),
                both.screen_turn(black_box(&assistant)),
            ));
            let full = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            black_box((rules.screen(black_box(&user)), rules.screen(black_box(&assistant))));
            full - t.elapsed().as_secs_f64()
        })
        .collect();
    added.sort_by(f64::total_cmp);
    let at = |q: f64| added[((added.len() - 1) as f64 * q) as usize] * 1e3;
    println!(
        "learned_stage: added per exchange over 5000 runs: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    let t = std::time::Instant::now();
    black_box(convo_safety::Model::builtin().expect("model"));
    println!("learned_stage: model load {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
}

fn persist_worker(c: &mut Criterion) {
    const RECORDS: usize = 10;
    let rt = runtime();
    let sink = Arc::new(Sink::default());
    // In clear, as this benchmark always ran (the worker never opens what
    // it stores, sealed or not).
    let deps = in_memory_deps(
        sink.clone(),
        Config {
            encryption: false,
            ..config()
        },
    );
    let exchange = || -> AppendRequest {
        serde_json::from_value(serde_json::json!({"messages": [
            {"role": "user", "content": message_text(200)},
            {"role": "assistant", "content": message_text(200)},
        ]}))
        .expect("append")
    };

    let mut group = c.benchmark_group("persist_worker");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("batch of 10 records (one exchange each)", |b| {
        b.iter_batched(
            || {
                // A fresh conversation and 10 accepted appends, as bodies off
                // the queue.
                rt.block_on(async {
                    let cid = create(&deps, "bench-owner").await.conversation_id;
                    sink.take_writes();
                    for _ in 0..RECORDS {
                        service::append_messages(&deps, "bench-owner", &cid, exchange(), None)
                            .await
                            .expect("append");
                    }
                    sink.take_writes()
                        .iter()
                        .enumerate()
                        .map(|(i, cmd)| {
                            let body = serde_json::to_string(cmd).expect("body");
                            Delivery::decode(format!("r{i}"), Some(cid.clone()), &body)
                        })
                        .collect::<Vec<_>>()
                })
            },
            |deliveries| {
                let outcome = rt.block_on(persist_batch(&deps, deliveries));
                assert!(outcome.failed.is_empty());
                outcome
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn context_tokens(c: &mut Criterion) {
    use convo_domain::tokens::{Count, Tokenizer};
    use convo_schema::Role;
    use convo_schema::api::ContextMessage;
    let messages: Vec<ContextMessage> = (0..20)
        .map(|i| ContextMessage {
            role: if i % 2 == 0 { Role::User } else { Role::Assistant },
            content: format!("{i} {}", message_text(200)),
            tool_calls: vec![],
            tool_call_id: None,
        })
        .collect();
    let mut group = c.benchmark_group("context_tokens");
    group.throughput(Throughput::Elements(messages.len() as u64));
    for tokenizer in Tokenizer::ALL {
        // Loads the encoding once, as a warm function has.
        black_box(tokenizer.count("warm up"));
        group.bench_function(format!("20 messages of 200 chars ({})", tokenizer.as_str()), |b| {
            b.iter(|| messages.iter().map(|m| tokenizer.message(black_box(m))).sum::<usize>())
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    append_handler,
    moderator,
    learned_stage,
    persist_worker,
    context_tokens
);
criterion_main!(benches);
