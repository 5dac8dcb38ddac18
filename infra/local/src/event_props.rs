//! Property tests over every Lambda event shape convo takes: any request to
//! any route (arbitrary path parameters, query strings, headers, bodies and
//! token subjects) and any SQS batch the writes worker can receive. No
//! input panics; every HTTP answer is one the OpenAPI document lists for
//! its route, in the documented error body; a worker never reports a record
//! it was not given.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use convo_domain::titles::ExtractiveTitler;
use convo_domain::{Config, Deps, SystemClock, UlidSource};
use convo_embedded::{EmbeddedQueue, EmbeddedStore, QueueKind, open_database};
use proptest::prelude::*;

use crate::gateway::{ROUTES, build_event, call};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
});

/// One in-memory deployment shared by every case (state left by one case
/// is input to the next, as on a real server).
static DEPS: LazyLock<convo_domain::ApiDeps> = LazyLock::new(|| {
    let db = open_database(None).expect("in-memory database");
    let moderator = Arc::new(convo_domain::screening::moderator(None).expect("built-in word lists"));
    Deps {
        store: convo_domain::deps::Stores::new(Arc::new(EmbeddedStore::new(db.clone()).expect("store"))),
        writes: EmbeddedQueue::open(db.clone(), "writes", QueueKind::Fifo, 5).expect("writes queue"),
        titles: EmbeddedQueue::open(db.clone(), "titles", QueueKind::Standard, 5).expect("titles queue"),
        events: EmbeddedQueue::open(db, "events", QueueKind::Standard, 5).expect("events queue"),
        clock: Arc::new(SystemClock),
        ids: Arc::new(UlidSource::default()),
        titler: Arc::new(ExtractiveTitler::new(moderator.clone())),
        moderator,
        metrics: Arc::new(convo_domain::ports::NoMetrics),
        config: Config::default(),
    }
    .sealed_with(Arc::new(
        convo_embedded::keys::LocalKeyRing::open(None, convo_domain::crypto::DataKey::generate().expect("key").0)
            .expect("key ring"),
    ))
});

/// The statuses the document lists per (method, path).
static DOCUMENTED: LazyLock<HashMap<(String, String), HashSet<u16>>> = LazyLock::new(|| {
    let doc = serde_json::to_value(convo_http::openapi::document()).expect("document");
    let mut out = HashMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            let statuses = op["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .filter_map(|k| k.parse().ok())
                .collect();
            out.insert((method.to_uppercase(), path.clone()), statuses);
        }
    }
    out
});

/// A value a client might put anywhere: a well-formed id, a near miss, or
/// any text at all.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("01JD0000000000000000000000".to_string()),
        "[0-9A-Z]{26}",
        "[a-z0-9+#/ .-]{0,12}",
        "\\PC{0,24}",
        any::<String>(),
    ]
}

/// A body: nothing, JSON of any shape (near the API's or not), or bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        text().prop_map(serde_json::Value::from),
    ];
    let json = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("messages".to_string()),
                        Just("role".to_string()),
                        Just("content".to_string()),
                        Just("userId".to_string()),
                        Just("agentId".to_string()),
                        Just("createdAt".to_string()),
                        Just("flagStatus".to_string()),
                        Just("metadata".to_string()),
                        Just("title".to_string()),
                        "[a-zA-Z]{1,8}",
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    });
    prop_oneof![
        Just(Vec::new()),
        json.prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("userId"),
        Just("agentId"),
        Just("status"),
        Just("flagged"),
        Just("cursor"),
        Just("limit"),
        Just("order"),
        Just("since"),
        Just("until"),
        Just("after"),
        Just("maxMessages"),
        Just("maxAge"),
        Just("bogus"),
    ];
    proptest::collection::vec((name, text()), 0..4).prop_map(|pairs| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            q.append_pair(k, &v);
        }
        q.finish()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Any request to any route gets a documented answer, never a panic.
    #[test]
    fn every_request_gets_a_documented_answer(
        route in 0..ROUTES.len(),
        params in proptest::collection::vec(text(), 2),
        raw_query in query(),
        body in body(),
        sub in proptest::option::of(prop_oneof![Just("alice".to_string()), text()]),
        key in proptest::option::of(text()),
    ) {
        let (method, template, function, guarded) = ROUTES[route];
        let mut path_params = HashMap::new();
        let mut path = template.to_string();
        for (name, value) in ["id", "userId"].iter().zip(&params) {
            let slot = format!("{{{name}}}");
            if path.contains(&slot) {
                path = path.replace(&slot, &form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>());
                path_params.insert(name.to_string(), value.clone());
            }
        }
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", http::HeaderValue::from_static("application/json"));
        if let Some(k) = key.and_then(|k| http::HeaderValue::from_bytes(k.as_bytes()).ok()) {
            headers.insert("idempotency-key", k);
        }
        // The JWT authorizer answers 401 before a guarded function runs.
        let claims = match (guarded, sub) {
            (true, None) => return Ok(()),
            (true, Some(sub)) => Some(HashMap::from([("sub".to_string(), sub)])),
            (false, _) => None,
        };
        let event = build_event(
            method, &path, &raw_query, &headers, &format!("{method} {template}"), "req-1", claims, path_params, &body,
        );
        let req = lambda_http::request::from_str(&event.to_string()).expect("a payload-2.0 event");
        let resp = RUNTIME.block_on(call(function, &DEPS, req)).expect("handlers answer");
        let status = resp.status().as_u16();
        let documented = &DOCUMENTED[&(method.to_string(), template.to_string())];
        prop_assert!(documented.contains(&status), "{method} {template} answered {status}, not in {documented:?}");
        let body: serde_json::Value = match resp.body() {
            lambda_http::Body::Text(t) => serde_json::from_str(t).expect("a JSON answer"),
            other => panic!("a text body, not {other:?}"),
        };
        if status >= 400 {
            prop_assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string(), "{body}");
        }
    }

    /// Any batch the writes worker can receive, however malformed its
    /// records, is handled without a panic; it asks again only for records
    /// it was given.
    #[test]
    fn every_sqs_batch_is_handled(
        records in proptest::collection::vec(
            (proptest::option::of(text()), proptest::option::of(text()), body()),
            0..6,
        ),
    ) {
        let mut event = SqsEvent::default();
        let mut given = HashSet::new();
        for (i, (group, conversation, raw)) in records.into_iter().enumerate() {
            let id = format!("m-{i}");
            given.insert(id.clone());
            let mut m = SqsMessage::default();
            m.message_id = Some(id);
            if let Some(g) = group.or(conversation) {
                m.attributes.insert("MessageGroupId".into(), g);
            }
            m.body = Some(String::from_utf8_lossy(&raw).into_owned());
            event.records.push(m);
        }
        let ctx = lambda_runtime::Context::default();
        let response = RUNTIME
            .block_on(persist_writes::handle(&DEPS, lambda_runtime::LambdaEvent::new(event, ctx)))
            .expect("the worker answers");
        for failure in response.batch_item_failures {
            prop_assert!(given.contains(&failure.item_identifier), "{}", failure.item_identifier);
        }
    }

    /// Any batch the titles worker can receive is handled without a panic.
    #[test]
    fn every_title_batch_is_handled(bodies in proptest::collection::vec(body(), 0..4)) {
        let mut event = SqsEvent::default();
        for (i, raw) in bodies.into_iter().enumerate() {
            let mut m = SqsMessage::default();
            m.message_id = Some(format!("t-{i}"));
            m.body = Some(String::from_utf8_lossy(&raw).into_owned());
            event.records.push(m);
        }
        let given = event.records.len();
        let ctx = lambda_runtime::Context::default();
        let response = RUNTIME
            .block_on(generate_title::handle(&DEPS, lambda_runtime::LambdaEvent::new(event, ctx)))
            .expect("the worker answers");
        prop_assert!(response.batch_item_failures.len() <= given);
    }
}
