//! Every event fixture under `tests/events/` (the files `cargo lambda invoke
//! --data-file` takes) fed to its function's handler, as Lambda would.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::SqsEvent;
use convo_contract_tests::{StoreKind, World, world};
use convo_domain::Config;
use convo_domain::ports::ConversationRecord;
use convo_domain::service;
use convo_schema::api::CreateConversationRequest;
use convo_schema::{ConversationStatus, TitleSource};
use lambda_runtime::{Context, LambdaEvent};

const CID: &str = "01JD0000000000000000000000";
const OWNER: &str = "owner-fixture";

fn fixture(name: &str) -> String {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn request(name: &str) -> lambda_http::Request {
    lambda_http::request::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn status(resp: &lambda_http::Response<lambda_http::Body>) -> u16 {
    resp.status().as_u16()
}

/// The conversation the fixtures name, owned by the fixtures' `sub`.
async fn seed(w: &World) {
    let req: CreateConversationRequest =
        serde_json::from_value(serde_json::json!({"userId": "child-42", "agentId": "toy-1"})).unwrap();
    let (mut conversation, _) = service::create_conversation(&w.deps, OWNER, req).await.unwrap();
    conversation.conversation_id = CID.to_string();
    let record = ConversationRecord::new(conversation);
    w.store.conversations.create_conversation(&record, false).await.unwrap();
}

#[tokio::test]
async fn every_fixture_runs_through_its_handler() {
    let w = world(StoreKind::Embedded, Config::default()).await;
    seed(&w).await;
    let d = &w.deps;

    let created = create_conversation::handle(d, request("apigw-create-conversation.json"))
        .await
        .unwrap();
    assert_eq!(status(&created), 201);
    let body: serde_json::Value = serde_json::from_slice(created.body()).unwrap();
    assert_eq!(body["userId"], "+14155552671");

    assert_eq!(
        status(
            &append_message::handle(d, request("apigw-append-message.json"))
                .await
                .unwrap()
        ),
        202
    );
    assert_eq!(w.writes.stats().visible, 1);
    for (name, want) in [
        ("apigw-get-conversation.json", 200),
        ("apigw-list-messages.json", 200),
        ("apigw-context.json", 200),
        ("apigw-list-conversations.json", 200),
        ("apigw-user-stats.json", 200),
        ("apigw-health.json", 200),
        ("apigw-missing-token.json", 401),
    ] {
        assert_eq!(
            status(&read_api::handle(d, request(name)).await.unwrap()),
            want,
            "{name}"
        );
    }
    let patched = create_conversation::handle(d, request("apigw-patch-conversation.json"))
        .await
        .unwrap();
    assert_eq!(status(&patched), 200);
    assert_eq!(
        status(&end_session::handle(d, request("apigw-end-session.json")).await.unwrap()),
        202
    );

    // The worker, fed the recorded batch: an exchange, then the end.
    let batch: SqsEvent = serde_json::from_str(&fixture("sqs-persist-writes.json")).unwrap();
    let resp = persist_writes::handle(d, LambdaEvent::new(batch, Context::default()))
        .await
        .unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let c = w.conversation(CID).await;
    assert_eq!((c.message_count, c.status), (2, ConversationStatus::Ended));

    // A poison record is reported alone; the replayed command beside it is
    // recognised and changes nothing.
    let batch: SqsEvent = serde_json::from_str(&fixture("sqs-persist-writes-poison.json")).unwrap();
    let resp = persist_writes::handle(d, LambdaEvent::new(batch, Context::default()))
        .await
        .unwrap();
    let failed: Vec<_> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["a1b2c3d4-0002-4000-8000-000000000001"]);
    assert_eq!(w.conversation(CID).await.message_count, 2);

    let jobs: SqsEvent = serde_json::from_str(&fixture("sqs-generate-title.json")).unwrap();
    let resp = generate_title::handle(d, LambdaEvent::new(jobs, Context::default()))
        .await
        .unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let c = w.conversation(CID).await;
    assert_eq!(
        (c.title.as_deref(), c.title_source),
        (Some("Volcano questions"), Some(TitleSource::User))
    );

    let tick: EventBridgeEvent<serde_json::Value> =
        serde_json::from_str(&fixture("eventbridge-sweep-sessions.json")).unwrap();
    let summary = sweep_sessions::handle(d, LambdaEvent::new(tick, Context::default()))
        .await
        .unwrap();
    assert_eq!(summary.sessions_ended, 0);
}
