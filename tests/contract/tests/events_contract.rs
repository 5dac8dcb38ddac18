//! The event publishers behind the one `EventPublisher` port: signed
//! webhooks (the local default) against a receiver on loopback, and
//! EventBridge on moto (`tests/run` starts it), read back through a rule
//! whose target is an SQS queue, as an integrator would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use convo_domain::ports::{EventPublisher, OutgoingEvent};
use convo_schema::events::{CloudEvent, EventData, EventType};

fn events(n: usize) -> Vec<OutgoingEvent> {
    (0..n)
        .map(|i| {
            let t = if i % 2 == 0 {
                EventType::MessageFlagged
            } else {
                EventType::SessionEnded
            };
            let e = CloudEvent::new(
                t,
                format!("{t}:{}-{i}", ulid::Ulid::new()),
                chrono::Utc::now(),
                format!("conv-{i}"),
                EventData {
                    owner_id: "alice".into(),
                    conversation_id: Some(format!("conv-{i}")),
                    user_id: "child-1".into(),
                    ..EventData::default()
                },
            );
            OutgoingEvent::new(&e).unwrap()
        })
        .collect()
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>,
    status: Arc<Mutex<u16>>,
}

async fn receiver() -> (Receiver, String) {
    let r = Receiver {
        status: Arc::new(Mutex::new(200)),
        ..Receiver::default()
    };
    let state = r.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let state = state.clone();
            async move {
                state.got.lock().unwrap().push((headers, body));
                let code = *state.status.lock().unwrap();
                axum::http::StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

fn webhooks(
    urls: Vec<String>,
    key: &[u8],
    types: Option<Vec<EventType>>,
) -> convo_embedded::webhooks::WebhookPublisher {
    convo_embedded::webhooks::WebhookPublisher {
        urls,
        key: key.to_vec(),
        types: types.map(|t| t.into_iter().collect()),
        timeout: Duration::from_millis(500),
        client: convo_embedded::net::client().unwrap(),
    }
}

#[tokio::test]
async fn webhooks_deliver_each_event_signed_and_report_what_failed() {
    let (rx, url) = receiver().await;
    let key = b"a key of at least twenty-four bytes".to_vec();
    let p = webhooks(vec![url.clone()], &key, None);
    let sent = events(3);
    let results = p.publish(&sent).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    for (headers, body) in &got {
        let id = headers["webhook-id"].to_str().unwrap();
        let ts = headers["webhook-timestamp"].to_str().unwrap();
        let e = sent.iter().find(|e| e.id == id).expect("an event sent");
        assert_eq!(body, &e.body);
        assert_eq!(headers["content-type"], "application/json");
        // Verified with HMAC-SHA256 directly, as a receiver would.
        let sig = headers["webhook-signature"]
            .to_str()
            .unwrap()
            .strip_prefix("v1,")
            .unwrap();
        let tag = base64::engine::general_purpose::STANDARD.decode(sig).unwrap();
        let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
        aws_lc_rs::hmac::verify(&k, format!("{id}.{ts}.{body}").as_bytes(), &tag).expect("a valid signature");
        let now = chrono::Utc::now().timestamp();
        assert!((now - ts.parse::<i64>().unwrap()).abs() < 60);
    }

    // A receiver answering 500: each event fails (to be retried).
    *rx.status.lock().unwrap() = 500;
    let results = p.publish(&events(2)).await;
    assert!(
        results.iter().all(|r| r.as_ref().is_err_and(|e| e.contains("500"))),
        "{results:?}"
    );

    // Nobody listening: an error too, not a hang or a panic.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let results = webhooks(vec![closed], &key, None).publish(&events(1)).await;
    assert!(results[0].is_err());

    // A receiver that takes the connection and never answers: the timeout
    // ends the try.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            open.push(sock);
        }
    });
    let started = std::time::Instant::now();
    let results = webhooks(vec![silent_url], &key, None).publish(&events(1)).await;
    assert!(
        results[0].as_ref().is_err_and(|e| e.contains("did not answer")),
        "{results:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    held.abort();

    // A type filter: what it leaves out is done with, not sent.
    *rx.status.lock().unwrap() = 200;
    let before = rx.got.lock().unwrap().len();
    let results = webhooks(vec![url], &key, Some(vec![EventType::SessionEnded]))
        .publish(&events(4))
        .await;
    assert!(results.iter().all(Result::is_ok));
    let after: Vec<String> = rx.got.lock().unwrap()[before..]
        .iter()
        .map(|(_, b)| serde_json::from_str::<CloudEvent>(b).unwrap().event_type.to_string())
        .collect();
    assert_eq!(after, vec!["session.ended", "session.ended"]);
}

#[tokio::test]
async fn eventbridge_delivers_through_a_rule_to_a_queue() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: run the suite through ./tests/run, which starts moto"
    );
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let eb = aws_sdk_eventbridge::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let name = format!("contract-{}", ulid::Ulid::new().to_string().to_lowercase());
    eb.create_event_bus().name(&name).send().await.unwrap();
    let queue = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    eb.put_rule()
        .event_bus_name(&name)
        .name("all")
        .event_pattern(r#"{"source": ["convo"]}"#)
        .send()
        .await
        .unwrap();
    eb.put_targets()
        .event_bus_name(&name)
        .rule("all")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("q")
                .arn(arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let p = convo_aws::EventBridgePublisher::new(eb.clone(), name.clone(), "convo");
    // More than one PutEvents call's worth (10 entries a call).
    let sent = events(13);
    let results = p.publish(&sent).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut seen = Vec::new();
    for _ in 0..20 {
        let out = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        for m in out.messages.unwrap_or_default() {
            let envelope: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            assert_eq!(envelope["source"], "convo");
            let detail: CloudEvent = serde_json::from_value(envelope["detail"].clone()).unwrap();
            assert_eq!(envelope["detail-type"], detail.event_type.as_str());
            seen.push(detail.id);
            sqs.delete_message()
                .queue_url(&queue)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        if seen.len() >= sent.len() {
            break;
        }
    }
    seen.sort();
    let mut want: Vec<String> = sent.iter().map(|e| e.id.clone()).collect();
    want.sort();
    assert_eq!(seen, want, "each event once");

    // A bus that does not exist: every event fails (retried by the queue).
    let missing = convo_aws::EventBridgePublisher::new(eb, format!("{name}-gone"), "convo");
    let results = missing.publish(&events(2)).await;
    assert!(results.iter().all(Result::is_err), "{results:?}");
}
