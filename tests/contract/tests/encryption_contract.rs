//! Issue 16 on both stores: what the queue carries is sealed, a sealed value
//! moved or cut is refused (never returned), a destroyed key makes its
//! conversations read as erased, and conversations stored in clear before
//! encryption stay readable.

use std::sync::Arc;

use convo_contract_tests::*;
use convo_domain::DomainError;
use convo_domain::persist::{Delivery, persist_batch};
use convo_domain::service::{self, ListParams, MessageParams};
use convo_schema::api::*;
use convo_schema::commands::{WriteCommand, WriteKind};
use convo_schema::*;

const CANARY: &str = "canary-7f3a9c";

fn create_req(user: &str) -> CreateConversationRequest {
    serde_json::from_value(serde_json::json!({
        "userId": user, "userName": format!("Mia {CANARY}"), "agentId": "toy-1", "agentName": "Teddy",
        "type": "story", "metadata": {"school": CANARY}
    }))
    .unwrap()
}

fn canary_exchange() -> AppendRequest {
    serde_json::from_value(serde_json::json!({"messages": [
        {"role": "user", "content": format!("my secret is {CANARY}"), "metadata": {"note": CANARY},
         "audioUrl": format!("https://audio.example/{CANARY}.ogg")},
        {"role": "assistant", "content": "let me look",
         "toolCalls": [{"id": "call_1", "name": "lookup", "arguments": format!("{{\"q\":\"{CANARY}\"}}")}]},
    ]}))
    .unwrap()
}

fn gone<T: std::fmt::Debug>(r: Result<T, DomainError>) -> ErrorCode {
    r.unwrap_err().code()
}

async fn messages(w: &World, owner: &str, id: &str) -> Result<Vec<Message>, DomainError> {
    reads::list_messages(&w.deps, owner, id, MessageParams::default())
        .await
        .map(|p| p.messages)
}

fn sqs_body_check(body: &str) -> WriteCommand {
    assert!(!body.contains(CANARY), "clear text on the queue: {body}");
    let command: WriteCommand = serde_json::from_str(body).unwrap();
    let WriteKind::Append { messages } = &command.kind else {
        panic!("an append")
    };
    for m in messages {
        assert!(
            m.content.is_empty() && m.metadata.is_empty() && m.audio_url.is_none(),
            "{m:?}"
        );
        assert!(m.sealed.contains_key("preview"), "{m:?}");
        assert!(m.tool_calls.iter().all(|c| c.arguments.is_empty()));
    }
    command
}

/// The write command on a real SQS queue (moto) holds ciphertext only, and
/// the keyless worker stores it so that the API reads every value back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_carries_only_ciphertext() {
    let mut w = world(StoreKind::DynamoDb, convo_domain::Config::default()).await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let prefix = format!("enc-{}", ulid::Ulid::new().to_string().to_lowercase());
    let spec = convo_aws::resources::writes_queue(&prefix);
    let (url, _) = convo_aws::resources::create_queue(&sqs, &spec).await.unwrap();
    w.deps.writes = Arc::new(convo_aws::SqsQueue::new(
        sqs.clone(),
        convo_aws::SqsQueueConfig {
            name: "writes".into(),
            url: url.clone(),
            dlq_url: None,
            fifo: true,
        },
    ));
    let c = service::create_conversation(&w.deps, "alice", create_req("child-q"))
        .await
        .unwrap()
        .0;
    service::append_messages(&w.deps, "alice", &c.conversation_id, canary_exchange(), None)
        .await
        .unwrap();
    let got = sqs
        .receive_message()
        .queue_url(&url)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap();
    assert_eq!(got.len(), 1);
    let body = got[0].body.clone().unwrap();
    sqs_body_check(&body);
    let outcome = persist_batch(
        &w.worker,
        vec![Delivery::decode("r1".into(), Some(c.conversation_id.clone()), &body)],
    )
    .await;
    assert!(outcome.failed.is_empty());
    let stored = messages(&w, "alice", &c.conversation_id).await.unwrap();
    assert_eq!(stored[0].content, format!("my secret is {CANARY}"));
    assert_eq!(stored[0].metadata["note"], CANARY);
    assert_eq!(
        stored[0].audio_url.as_deref(),
        Some(&*format!("https://audio.example/{CANARY}.ogg"))
    );
    assert_eq!(stored[1].tool_calls[0].arguments, format!("{{\"q\":\"{CANARY}\"}}"));
    let read = service::get_conversation(&w.deps, "alice", &c.conversation_id)
        .await
        .unwrap();
    assert_eq!(read.first_message_preview, Some(format!("my secret is {CANARY}")));
    assert_eq!(read.last_message_preview.as_deref(), Some("let me look"));
    assert_eq!(read.user_name, Some(format!("Mia {CANARY}")));
    assert_eq!(read.metadata["school"], CANARY);
    // …and the table holds none of it in clear.
    assert!(w.leftovers(CANARY).await.is_empty());
    assert!(!w.leftovers(&c.conversation_id).await.is_empty());
}

/// A sealed value swapped into another message, or cut short, is refused;
/// a destroyed key makes the user's conversations read as erased, and a new
/// conversation of that user gets a new key.
async fn moved_cut_or_shredded_values_are_never_returned(w: World) {
    let c = service::create_conversation(&w.deps, "alice", create_req("child-s"))
        .await
        .unwrap()
        .0;
    let id = c.conversation_id.clone();
    service::append_messages(&w.deps, "alice", &id, canary_exchange(), None)
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(messages(&w, "alice", &id).await.unwrap().len(), 2);
    let original = w.raw.chunks_desc(&id, None, 10).await.unwrap().remove(0);
    assert!(original.messages.iter().all(|m| m.content.is_empty()));

    // The user's content moved to the agent's message: corrupt, refused.
    let mut swapped = original.clone();
    let user_content = swapped.messages[0].sealed["content"].clone();
    swapped.messages[1].sealed.insert("content".into(), user_content);
    w.raw.rewrite_chunk(&swapped).await.unwrap();
    let err = messages(&w, "alice", &id).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal, "{err:?}");
    // Cut short: refused too.
    let mut cut = original.clone();
    let short = cut.messages[0].sealed["content"].0[..20].to_vec();
    cut.messages[0].sealed.insert("content".into(), Sealed(short));
    w.raw.rewrite_chunk(&cut).await.unwrap();
    assert_eq!(
        messages(&w, "alice", &id).await.unwrap_err().code(),
        ErrorCode::Internal
    );
    // Put back: readable again.
    w.raw.rewrite_chunk(&original).await.unwrap();
    assert_eq!(
        messages(&w, "alice", &id).await.unwrap()[0].content,
        format!("my secret is {CANARY}")
    );

    // The key destroyed (what an erasure does first): the conversation reads
    // as erased, in every read and list, with nothing of it returned.
    w.keys.destroy("alice", "child-s").await.unwrap();
    assert_eq!(gone(messages(&w, "alice", &id).await), ErrorCode::ConversationNotFound);
    assert_eq!(
        gone(service::get_conversation(&w.deps, "alice", &id).await),
        ErrorCode::ConversationNotFound
    );
    assert!(listed(&w, "child-s").await.is_empty());
    assert_eq!(
        gone(service::append_messages(&w.deps, "alice", &id, canary_exchange(), None).await),
        ErrorCode::ConversationNotFound
    );
    // A new conversation of the same child: a new key, readable; the old
    // one still is not, and an erasure finishes it.
    let again = service::create_conversation(&w.deps, "alice", create_req("child-s"))
        .await
        .unwrap()
        .0;
    service::append_messages(&w.deps, "alice", &again.conversation_id, canary_exchange(), None)
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(messages(&w, "alice", &again.conversation_id).await.unwrap().len(), 2);
    assert_eq!(gone(messages(&w, "alice", &id).await), ErrorCode::ConversationNotFound);
    assert_eq!(w.erase_user("alice", "child-s").await.conversations_deleted, 2);
    w.settle().await;
    assert!(w.leftovers(&id).await.is_empty());
    assert!(w.leftovers(&again.conversation_id).await.is_empty());
}

/// A conversation stored in clear (before encryption, or with it off) stays
/// readable and writable with encryption on, and stays in clear.
async fn conversations_stored_in_clear_stay_readable(w: World) {
    let mut clear = w.deps.clone();
    clear.config.encryption = false;
    let c = service::create_conversation(&clear, "alice", create_req("child-c"))
        .await
        .unwrap()
        .0;
    service::append_messages(&clear, "alice", &c.conversation_id, canary_exchange(), None)
        .await
        .unwrap();
    service::append_messages(&w.deps, "alice", &c.conversation_id, canary_exchange(), None)
        .await
        .unwrap();
    w.settle().await;
    let stored = messages(&w, "alice", &c.conversation_id).await.unwrap();
    assert_eq!(stored.len(), 4);
    assert!(
        stored
            .iter()
            .step_by(2)
            .all(|m| m.content == format!("my secret is {CANARY}"))
    );
    assert!(!w.leftovers(CANARY).await.is_empty(), "stored in clear, as it was");
    let read = service::get_conversation(&w.deps, "alice", &c.conversation_id)
        .await
        .unwrap();
    assert_eq!(read.user_name, Some(format!("Mia {CANARY}")));
}

/// A function composed without a key ring (the worker's dependencies,
/// `Deps`) cannot call a use case that reads or accepts content: those take
/// `ApiDeps`, and a `compile_fail` test in `convo_domain::deps` holds it.
/// What it may do, end a sealed conversation, needs no content and works.
async fn a_keyless_function_ends_a_sealed_conversation_without_its_content(w: World) {
    let c = service::create_conversation(&w.deps, "alice", create_req("child-k"))
        .await
        .unwrap()
        .0;
    let id = c.conversation_id.clone();
    service::append_messages(&w.deps, "alice", &id, canary_exchange(), None)
        .await
        .unwrap();
    w.settle().await;
    service::end_session(&w.worker, "alice", &id, None).await.unwrap();
    w.settle().await;
    assert!(w.leftovers(CANARY).await.is_empty(), "nothing was stored in clear");
    let read = service::get_conversation(&w.deps, "alice", &id).await.unwrap();
    assert_eq!(read.status, ConversationStatus::Ended);
    assert_eq!(
        read.user_name,
        Some(format!("Mia {CANARY}")),
        "its sealed fields open as before"
    );
}

/// An ended conversation's list entry shows its last preview though the
/// worker, which wrote the end, cannot read it (the title job refreshes it).
async fn an_ended_sealed_conversation_lists_its_previews(w: World) {
    let c = service::create_conversation(&w.deps, "alice", create_req("child-l"))
        .await
        .unwrap()
        .0;
    service::append_messages(&w.deps, "alice", &c.conversation_id, canary_exchange(), None)
        .await
        .unwrap();
    w.settle().await;
    let patch: PatchConversationRequest = serde_json::from_value(serde_json::json!({"title": CANARY})).unwrap();
    service::patch_conversation(&w.deps, "alice", &c.conversation_id, patch)
        .await
        .unwrap();
    let last: AppendRequest =
        serde_json::from_value(serde_json::json!({"messages": [{"role": "user", "content": "good night"}]})).unwrap();
    service::append_messages(&w.deps, "alice", &c.conversation_id, last, None)
        .await
        .unwrap();
    w.settle().await;
    service::end_session(&w.deps, "alice", &c.conversation_id, None)
        .await
        .unwrap();
    w.settle().await;
    let l = &listed(&w, "child-l").await[0];
    assert_eq!(l.status, ConversationStatus::Ended);
    assert_eq!(l.title.as_deref(), Some(CANARY));
    assert_eq!(l.first_message_preview, Some(format!("my secret is {CANARY}")));
    assert_eq!(l.last_message_preview.as_deref(), Some("good night"));
    assert!(w.leftovers(CANARY).await.is_empty());
}

/// The owner's list of one user's conversations, as the API answers it.
async fn listed(w: &World, user: &str) -> Vec<Conversation> {
    reads::list_conversations(
        &w.deps,
        "alice",
        ListParams {
            user_id: Some(user),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .conversations
}

/// Removing an ended sealed conversation's last message: no list shows its
/// preview afterwards (the keyless worker drops the snapshot it cannot
/// check, and the refresh it queues rebuilds it from what is left).
async fn a_removed_last_message_leaves_no_preview_behind(w: World) {
    let c = service::create_conversation(&w.deps, "alice", create_req("child-r"))
        .await
        .unwrap()
        .0;
    let id = c.conversation_id.clone();
    let say = |text: &str| -> AppendRequest {
        serde_json::from_value(serde_json::json!({"messages": [{"role": "user", "content": text}]})).unwrap()
    };
    service::append_messages(&w.deps, "alice", &id, say("first words"), None)
        .await
        .unwrap();
    let last = service::append_messages(&w.deps, "alice", &id, say(&format!("last words {CANARY}")), None)
        .await
        .unwrap();
    w.settle().await;
    service::end_session(&w.deps, "alice", &id, None).await.unwrap();
    w.settle().await;
    assert_eq!(
        listed(&w, "child-r").await[0].last_message_preview,
        Some(format!("last words {CANARY}"))
    );
    service::remove_message(&w.deps, "alice", &id, &last.messages[0].message_id, None)
        .await
        .unwrap();
    w.settle().await;
    let after = listed(&w, "child-r").await.remove(0);
    assert!(
        after
            .last_message_preview
            .as_deref()
            .is_none_or(|p| !p.contains(CANARY)),
        "{after:?}"
    );
    assert_eq!(after.first_message_preview.as_deref(), Some("first words"));
    let read = service::get_conversation(&w.deps, "alice", &id).await.unwrap();
    assert!(read.last_message_preview.as_deref().is_none_or(|p| !p.contains(CANARY)));
}

/// A command of a later format is refused by this worker, never applied
/// with what it does not know dropped (an older worker during a rollout).
#[test]
fn a_newer_command_format_is_refused() {
    let body = serde_json::json!({
        "v": convo_schema::commands::WRITE_COMMAND_VERSION + 1, "commandId": "c", "conversationId": "x",
        "ownerId": "o", "acceptedAt": "2026-12-01T10:00:00Z", "kind": "end", "reason": "client"
    })
    .to_string();
    assert!(Delivery::decode("r".into(), None, &body).command.is_err());
    let known = body.replace(
        &format!("\"v\":{}", convo_schema::commands::WRITE_COMMAND_VERSION + 1),
        &format!("\"v\":{}", convo_schema::commands::WRITE_COMMAND_VERSION),
    );
    assert!(Delivery::decode("r".into(), None, &known).command.is_ok(), "{known}");
    // An accepted message with a field this worker does not know: refused.
    let unknown = serde_json::json!({
        "v": 2, "commandId": "c", "conversationId": "x", "ownerId": "o", "acceptedAt": "2026-12-01T10:00:00Z",
        "kind": "append", "messages": [{"messageId": "m", "role": "user", "content": "", "createdAt": "2026-12-01T10:00:00Z",
        "safety": {"score": 1.0, "action": "safe"}, "future": 1}]
    })
    .to_string();
    assert!(Delivery::decode("r".into(), None, &unknown).command.is_err());
}

/// A key ring whose user's key is destroyed by an erasure at the worst
/// moment of a creation: right after the creation read it (`Before`: the
/// seal finds it gone), or right after the conversation was stored (`After`:
/// the check finds it gone).
struct RacingErasure {
    inner: Arc<dyn convo_domain::ports::KeyRing>,
    after: bool,
}

#[async_trait::async_trait]
impl convo_domain::ports::KeyRing for RacingErasure {
    async fn current_key(
        &self,
        owner: &str,
        user: &str,
    ) -> Result<(u64, Arc<convo_domain::crypto::DataKey>), convo_domain::ports::KeyError> {
        let found = self.inner.current_key(owner, user).await?;
        if !self.after {
            self.inner.destroy(owner, user).await?;
        }
        Ok(found)
    }
    async fn key(
        &self,
        owner: &str,
        user: &str,
        id: u64,
    ) -> Result<Option<Arc<convo_domain::crypto::DataKey>>, convo_domain::ports::KeyError> {
        self.inner.key(owner, user, id).await
    }
    async fn destroy(&self, owner: &str, user: &str) -> Result<(), convo_domain::ports::KeyError> {
        self.inner.destroy(owner, user).await
    }
    async fn confirm(&self, owner: &str, user: &str, id: u64) -> Result<bool, convo_domain::ports::KeyError> {
        if self.after {
            self.inner.destroy(owner, user).await?;
        }
        self.inner.confirm(owner, user, id).await
    }
}

/// A key ring that counts the key lookups made through it.
struct CountingKeys {
    inner: Arc<dyn convo_domain::ports::KeyRing>,
    lookups: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl convo_domain::ports::KeyRing for CountingKeys {
    async fn current_key(
        &self,
        owner: &str,
        user: &str,
    ) -> Result<(u64, Arc<convo_domain::crypto::DataKey>), convo_domain::ports::KeyError> {
        self.inner.current_key(owner, user).await
    }
    async fn key(
        &self,
        owner: &str,
        user: &str,
        id: u64,
    ) -> Result<Option<Arc<convo_domain::crypto::DataKey>>, convo_domain::ports::KeyError> {
        self.lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.key(owner, user, id).await
    }
    async fn destroy(&self, owner: &str, user: &str) -> Result<(), convo_domain::ports::KeyError> {
        self.inner.destroy(owner, user).await
    }
    async fn confirm(&self, owner: &str, user: &str, id: u64) -> Result<bool, convo_domain::ports::KeyError> {
        self.inner.confirm(owner, user, id).await
    }
}

/// A page of conversations is opened with one key lookup per distinct
/// key, not one per conversation (a cold list of 200 was 200 in a row).
async fn a_page_of_conversations_looks_each_key_up_once(w: World) {
    for agent in ["t1", "t2", "t3", "t4", "t5", "t6"] {
        let mut req = create_req("child-page");
        req.agent_id = agent.into();
        service::create_conversation(&w.deps, "alice", req).await.unwrap();
    }
    let counting = Arc::new(CountingKeys {
        inner: w.keys.clone(),
        lookups: std::sync::atomic::AtomicUsize::new(0),
    });
    let deps = w.worker.clone().sealed_with(counting.clone());
    let page = reads::list_conversations(
        &deps,
        "alice",
        service::ListParams {
            user_id: Some("child-page"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page.conversations.len(), 6);
    assert!(
        page.conversations
            .iter()
            .all(|c| c.user_name.as_deref() == Some(&format!("Mia {CANARY}")[..]))
    );
    assert_eq!(counting.lookups.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A creation racing its user's erasure is refused (503, to be retried)
/// and leaves nothing behind, whichever side of the store write the key
/// went: nothing is ever accepted under a dead key.
async fn a_creation_racing_its_users_erasure_leaves_nothing(w: World) {
    for after in [false, true] {
        let racing = Arc::new(RacingErasure {
            inner: w.keys.clone(),
            after,
        });
        let deps = w.worker.clone().sealed_with(racing);
        let user = if after { "child-after" } else { "child-before" };
        let err = service::create_conversation(&deps, "alice", create_req(user))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::DependencyUnavailable, "{err:?}");
        w.settle().await;
        let found = listed(&w, user).await;
        assert!(found.is_empty(), "after={after}: {found:?}");
        // Not even hidden: the store holds no conversation of that user.
        let raw = w
            .raw
            .list_conversations(
                "alice",
                &convo_domain::ports::ConversationList::User(user.into()),
                None,
                10,
            )
            .await
            .unwrap();
        assert!(raw.items.is_empty(), "after={after}: {:?}", raw.items);
        assert!(w.leftovers(CANARY).await.is_empty());
        // The retry makes a new key, and the conversation is usable.
        let c = service::create_conversation(&w.deps, "alice", create_req(user))
            .await
            .unwrap()
            .0;
        service::append_messages(&w.deps, "alice", &c.conversation_id, canary_exchange(), None)
            .await
            .unwrap();
        w.settle().await;
        assert_eq!(messages(&w, "alice", &c.conversation_id).await.unwrap().len(), 2);
    }
}

contract!(
    a_creation_racing_its_users_erasure_leaves_nothing,
    a_removed_last_message_leaves_no_preview_behind,
    moved_cut_or_shredded_values_are_never_returned,
    conversations_stored_in_clear_stay_readable,
    a_keyless_function_ends_a_sealed_conversation_without_its_content,
    a_page_of_conversations_looks_each_key_up_once,
    an_ended_sealed_conversation_lists_its_previews,
);
