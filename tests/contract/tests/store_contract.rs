//! The store contract suite: the domain's rules (every promise that does not
//! need HTTP) run against each store implementation, the embedded one and
//! DynamoDB (moto in `tests/run`), so the two cannot drift.

use chrono::Duration;
use convo_contract_tests::*;
use convo_domain::DomainError;
use convo_domain::persist::{Delivery, persist_batch};
use convo_domain::ports::*;
use convo_domain::service::{self, IdempotencyKey, ListParams, MessageParams};
use convo_domain::sweep::sweep_idle_sessions;
use convo_domain::tokens::Count;
use convo_schema::api::*;
use convo_schema::commands::WriteCommand;
use convo_schema::*;

fn create_req(user: &str, agent: &str) -> CreateConversationRequest {
    serde_json::from_value(serde_json::json!({
        "userId": user, "userName": "Mia", "agentId": agent, "agentName": "Teddy",
        "type": "story", "metadata": {"lang": "en"}
    }))
    .unwrap()
}

fn exchange(user: &str, agent: &str) -> AppendRequest {
    serde_json::from_value(serde_json::json!({"messages": [
        {"role": "user", "content": user},
        {"role": "assistant", "content": agent}
    ]}))
    .unwrap()
}

fn one(role: &str, content: &str, external_id: Option<&str>) -> AppendRequest {
    let mut m = serde_json::json!({"role": role, "content": content});
    if let Some(e) = external_id {
        m["externalId"] = e.into();
    }
    serde_json::from_value(serde_json::json!({ "messages": [m] })).unwrap()
}

async fn new_conversation(w: &World, owner: &str) -> Conversation {
    service::create_conversation(&w.deps, owner, create_req("child-1", "toy-1"))
        .await
        .unwrap()
        .0
}

fn code(e: DomainError) -> ErrorCode {
    e.code()
}

async fn create_sets_the_seed_fields(w: World) {
    let (c, created) = service::create_conversation(&w.deps, "alice", create_req("child-1", "toy-1"))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(c.status, ConversationStatus::Active);
    assert_eq!((c.user_id.as_str(), c.user_name.as_deref()), ("child-1", Some("Mia")));
    assert_eq!((c.agent_id.as_str(), c.agent_name.as_deref()), ("toy-1", Some("Teddy")));
    assert_eq!((c.kind.as_str(), c.channel.as_str()), ("story", "web"));
    assert_eq!(c.owner_id, "alice");
    assert_eq!(c.created_at, w.clock.now());
    assert_eq!(c.start_time, c.created_at);
    assert_eq!(c.message_count, 0);
    assert_eq!(c.metadata["lang"], "en");
    assert_eq!(w.conversation(&c.conversation_id).await, c);
}

/// The read routes' cheaper read finds a conversation the moment it exists,
/// sees what the worker stored, and misses what does not exist.
async fn the_read_routes_find_a_new_conversation_at_once(w: World) {
    let c = new_conversation(&w, "alice").await;
    let read = w
        .store
        .conversations
        .get_conversation_for_read(&c.conversation_id)
        .await
        .unwrap();
    assert_eq!(read.map(|r| r.conversation), Some(c.clone()));
    service::append_messages(&w.deps, "alice", &c.conversation_id, exchange("hi", "hello"), None)
        .await
        .unwrap();
    w.settle().await;
    let read = w
        .store
        .conversations
        .get_conversation_for_read(&c.conversation_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.conversation.message_count, 2);
    assert!(
        w.store
            .conversations
            .get_conversation_for_read("01JD0000000000000000000000")
            .await
            .unwrap()
            .is_none()
    );
}

async fn sms_numbers_are_normalized_and_bad_ones_refused(w: World) {
    let mut req = create_req("+1 (415) 555-2671", "+1 224 242 3142");
    req.channel = Some("sms".into());
    let (c, _) = service::create_conversation(&w.deps, "alice", req).await.unwrap();
    assert_eq!(
        (c.user_id.as_str(), c.agent_id.as_str()),
        ("+14155552671", "+12242423142")
    );
    // A national number is not a phone number under the identity rule.
    for national in ["not a number", "(415) 555-2671"] {
        let mut bad = create_req(national, "+12242423142");
        bad.channel = Some("sms".into());
        let err = service::create_conversation(&w.deps, "alice", bad).await.unwrap_err();
        assert_eq!(code(err), ErrorCode::InvalidPhoneNumber);
    }
    // The spelling it was created under and any other find it.
    for spelling in ["+1 (415) 555-2671", "\u{ff0b}14155552671"] {
        let stats = service::user_stats(&w.deps, "alice", spelling).await.unwrap();
        assert_eq!(stats.user_id, "+14155552671");
    }
}

/// `store_rules::reusable` and `releases_pair` on both stores: an ended
/// session and one being erased are never handed out by `reuseActive`
/// (each store once had its own check: the embedded store's in its
/// create, DynamoDB's in the read that hides a marked conversation).
async fn reuse_active_never_hands_out_an_ended_or_erasing_conversation(w: World) {
    let find = || {
        let mut req = create_req("child-r", "toy-r");
        req.reuse_active = true;
        service::create_conversation(&w.deps, "alice", req)
    };
    let (first, new) = find().await.unwrap();
    assert!(new);
    service::end_session(&w.deps, "alice", &first.conversation_id, None)
        .await
        .unwrap();
    w.settle().await;
    let (second, new) = find().await.unwrap();
    assert!(new, "an ended session releases its pair");
    assert_ne!(second.conversation_id, first.conversation_id);
    let (again, new) = find().await.unwrap();
    assert!(!new);
    assert_eq!(again.conversation_id, second.conversation_id);
    // An erasure that marked the conversation and stopped there (a crash
    // before its removal): the mark alone makes the pair stale.
    let mut record = w.raw.get_conversation(&second.conversation_id).await.unwrap().unwrap();
    let expected = record.version;
    record.deleting = true;
    record.version = expected + 1;
    w.raw.put_conversation(&record, expected).await.unwrap();
    let (third, new) = find().await.unwrap();
    assert!(new, "a conversation being erased is not reused");
    assert_ne!(third.conversation_id, second.conversation_id);
    let (again, new) = find().await.unwrap();
    assert!(!new, "the new one holds the pair");
    assert_eq!(again.conversation_id, third.conversation_id);
}

/// `GET /users/{userId}/context` (issue 25): the user's newest messages
/// across their conversations, oldest first, each naming its conversation;
/// one agent's only when asked; within the context's bounds; nothing of
/// another owner or of a conversation being erased.
async fn a_users_context_spans_their_conversations(w: World) {
    let start = |agent: &'static str| {
        let w = &w;
        async move {
            service::create_conversation(&w.deps, "alice", create_req("child-u", agent))
                .await
                .unwrap()
                .0
                .conversation_id
        }
    };
    // The morning's conversation, ended; the afternoon's, with the same toy;
    // and one with another agent in between.
    let morning = start("toy-u").await;
    service::append_messages(
        &w.deps,
        "alice",
        &morning,
        exchange("I have swimming today", "Have fun!"),
        None,
    )
    .await
    .unwrap();
    service::end_session(&w.deps, "alice", &morning, None).await.unwrap();
    w.settle().await;
    w.clock.advance(Duration::hours(3));
    let other = start("tutor-u").await;
    service::append_messages(&w.deps, "alice", &other, exchange("what is 7 x 8", "56"), None)
        .await
        .unwrap();
    w.clock.advance(Duration::hours(3));
    let afternoon = start("toy-u").await;
    let accepted = service::append_messages(
        &w.deps,
        "alice",
        &afternoon,
        exchange("hi again", "How was swimming?"),
        None,
    )
    .await
    .unwrap();
    let read = |agent: Option<&'static str>, max_messages: Option<&'static str>, max_age: Option<&'static str>| {
        let w = &w;
        async move {
            reads::user_context(
                &w.deps,
                "alice",
                "child-u",
                agent,
                service::ContextParams {
                    max_messages,
                    max_age,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
        }
    };
    // Read-your-writes: the newest conversation is read once the write is
    // applied (the worker runs here when the suite says so).
    w.settle().await;
    let ctx = reads::user_context(
        &w.deps,
        "alice",
        "child-u",
        Some("toy-u"),
        service::ContextParams {
            after: Some(&accepted.command_id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ctx.after, Some(AfterStatus::Applied));
    let texts = |ctx: &UserContextResponse| -> Vec<(String, String)> {
        ctx.messages
            .iter()
            .map(|m| (m.conversation_id.clone(), m.message.content.clone()))
            .collect()
    };
    assert_eq!(
        texts(&ctx),
        vec![
            (morning.clone(), "I have swimming today".to_string()),
            (morning.clone(), "Have fun!".to_string()),
            (afternoon.clone(), "hi again".to_string()),
            (afternoon.clone(), "How was swimming?".to_string()),
        ],
        "one agent's conversations, oldest first"
    );
    assert_eq!(ctx.conversations, vec![morning.clone(), afternoon.clone()]);
    assert_eq!(ctx.user_id, "child-u");
    // Every agent: the tutor's conversation sits between them.
    let all = read(None, None, None).await;
    assert_eq!(
        all.conversations,
        vec![morning.clone(), other.clone(), afternoon.clone()]
    );
    // The bounds: the newest three messages; the last four hours.
    let three = read(None, Some("3"), None).await;
    assert_eq!(
        texts(&three),
        vec![
            (other.clone(), "56".to_string()),
            (afternoon.clone(), "hi again".to_string()),
            (afternoon.clone(), "How was swimming?".to_string()),
        ]
    );
    let recent = read(Some("toy-u"), None, Some("4h")).await;
    assert_eq!(
        recent.conversations,
        vec![afternoon.clone()],
        "the morning is over 4 hours old"
    );
    // Nothing of another owner's; nothing of a conversation being erased.
    let theirs = reads::user_context(&w.deps, "bob", "child-u", None, Default::default())
        .await
        .unwrap();
    assert!(theirs.messages.is_empty());
    service::delete_conversation(&w.deps, "alice", &morning).await.unwrap();
    let after_erasure = read(Some("toy-u"), None, None).await;
    assert_eq!(after_erasure.conversations, vec![afternoon.clone()]);
    // A bad bound is refused, naming it.
    let err = reads::user_context(
        &w.deps,
        "alice",
        "child-u",
        None,
        service::ContextParams {
            max_messages: Some("0"),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code(err), ErrorCode::ValidationFailed);
}

async fn reuse_active_returns_one_conversation_under_a_race(w: World) {
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let deps = w.deps.clone();
            tokio::spawn(async move {
                let mut req = create_req("child-9", "toy-9");
                req.reuse_active = true;
                service::create_conversation(&deps, "alice", req).await.unwrap()
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for t in tasks {
        let (c, new) = t.await.unwrap();
        ids.insert(c.conversation_id);
        created += new as usize;
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(created, 1);
    // Without reuse, a second conversation starts.
    let (other, _) = service::create_conversation(&w.deps, "alice", create_req("child-9", "toy-9"))
        .await
        .unwrap();
    assert!(!ids.contains(&other.conversation_id));
}

async fn append_answers_before_storing_and_the_worker_assigns_indexes(w: World) {
    let c = new_conversation(&w, "alice").await;
    let id = &c.conversation_id;
    let r1 = service::append_messages(
        &w.deps,
        "alice",
        id,
        exchange("Tell me about dragons", "Dragons fly."),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r1.messages.len(), 2);
    assert!(r1.messages.iter().all(|m| m.safety.action == SafetyAction::Safe));
    assert!(
        w.all_messages(id).await.is_empty(),
        "nothing is stored before the worker runs"
    );
    service::append_messages(&w.deps, "alice", id, exchange("And castles?", "Castles are big."), None)
        .await
        .unwrap();
    w.settle().await;
    let msgs = w.all_messages(id).await;
    assert_eq!(
        msgs.iter().map(|m| m.message_index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(msgs[0].message_id, r1.messages[0].message_id);
    assert_eq!(msgs[2].content, "And castles?");
    let c = w.conversation(id).await;
    assert_eq!(c.message_count, 4);
    assert_eq!(c.first_message_preview.as_deref(), Some("Tell me about dragons"));
    assert_eq!(c.last_message_preview.as_deref(), Some("Castles are big."));
}

async fn a_redelivered_command_changes_nothing(w: World) {
    let c = new_conversation(&w, "alice").await;
    let id = c.conversation_id.clone();
    service::append_messages(&w.deps, "alice", &id, exchange("one", "two"), None)
        .await
        .unwrap();
    let batch = w.writes.receive(10, std::time::Duration::ZERO).await;
    let body = batch[0].body.clone();
    let deliver = || vec![Delivery::decode("r1".into(), Some(id.clone()), &body)];
    let first = persist_batch(&w.deps, deliver()).await;
    assert_eq!((first.commands_applied, first.messages_persisted), (1, 2));
    let before = w.conversation(&id).await;
    // The same command again (a crash before the delete, a replayed batch).
    let again = persist_batch(&w.deps, deliver()).await;
    assert!(again.failed.is_empty());
    assert_eq!((again.commands_applied, again.duplicates_skipped), (0, 1));
    assert_eq!(w.conversation(&id).await, before);
    assert_eq!(w.all_messages(&id).await.len(), 2);
}

async fn a_repeated_external_id_is_stored_once(w: World) {
    let c = new_conversation(&w, "alice").await;
    let id = &c.conversation_id;
    // Re-sent across requests: every 202 names the one message stored.
    let mut answered = Vec::new();
    for _ in 0..3 {
        let ack = service::append_messages(&w.deps, "alice", id, one("user", "hi there", Some("SM123")), None)
            .await
            .unwrap();
        answered.push(ack.messages[0].message_id.clone());
    }
    assert!(answered.iter().all(|m| *m == answered[0]), "{answered:?}");
    service::append_messages(&w.deps, "alice", id, one("user", "other", Some("SM124")), None)
        .await
        .unwrap();
    // Repeated within one request too: the first is stored, and every
    // repeat is answered with its id.
    let within: AppendRequest = serde_json::from_value(serde_json::json!({"messages": [
        {"role": "user", "content": "one", "externalId": "SM125"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "one again", "externalId": "SM125"},
    ]}))
    .unwrap();
    let answer = service::append_messages(&w.deps, "alice", id, within, None)
        .await
        .unwrap();
    let ids: Vec<_> = answer.messages.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], ids[2]);
    assert_ne!(ids[0], ids[1]);
    w.settle().await;
    let msgs = w.all_messages(id).await;
    let ext: Vec<_> = msgs.iter().map(|m| m.external_id.clone().unwrap_or_default()).collect();
    assert_eq!(ext, vec!["SM123", "SM124", "SM125", ""]);
    assert_eq!(msgs[2].content, "one");
    assert_eq!(msgs[2].message_id, ids[0]);
    assert_eq!(msgs[0].message_id, answered[0]);
    assert_eq!(w.conversation(id).await.message_count, 4);
    // The id any 202 gave is one a delete finds.
    let removed = service::remove_message(&w.deps, "alice", id, &answered[2], None)
        .await
        .unwrap();
    assert_eq!(removed.message.message_id, answered[0]);
}

async fn failed_records_are_reported_exactly_and_retried_in_order(w: World) {
    let a = new_conversation(&w, "alice").await.conversation_id;
    let b = service::create_conversation(&w.deps, "alice", create_req("child-2", "toy-2"))
        .await
        .unwrap()
        .0
        .conversation_id;
    service::append_messages(&w.deps, "alice", &a, one("user", "a1", None), None)
        .await
        .unwrap();
    service::append_messages(&w.deps, "alice", &b, one("user", "b1", None), None)
        .await
        .unwrap();
    service::append_messages(&w.deps, "alice", &a, one("user", "a2", None), None)
        .await
        .unwrap();
    service::append_messages(&w.deps, "alice", &b, one("user", "b2", None), None)
        .await
        .unwrap();
    w.faulty.fail_commits_for.lock().unwrap().insert(b.clone());
    let (ids, outcome) = w.persist_once().await.unwrap();
    assert_eq!(ids.len(), 4);
    // Exactly b's two records, in order; a's are stored.
    assert_eq!(outcome.failed, vec![ids[1].clone(), ids[3].clone()]);
    assert_eq!(
        w.all_messages(&a)
            .await
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["a1", "a2"]
    );
    assert!(w.all_messages(&b).await.is_empty());
    w.faulty.fail_commits_for.lock().unwrap().clear();
    w.settle().await;
    let bs = w.all_messages(&b).await;
    assert_eq!(
        bs.iter()
            .map(|m| (m.message_index, m.content.as_str()))
            .collect::<Vec<_>>(),
        [(0, "b1"), (1, "b2")]
    );
    assert_eq!(w.conversation(&a).await.message_count, 2);
}

/// `lastConversationAt` is a max on both stores: the end of an older
/// conversation applied after a newer one's does not move it back.
async fn the_last_conversation_is_a_max_under_out_of_order_ends(w: World) {
    let older = service::create_conversation(&w.deps, "alice", create_req("child-ooo", "toy-1"))
        .await
        .unwrap()
        .0;
    w.clock.advance(chrono::Duration::minutes(5));
    let newer = service::create_conversation(&w.deps, "alice", create_req("child-ooo", "toy-2"))
        .await
        .unwrap()
        .0;
    service::end_session(&w.deps, "alice", &newer.conversation_id, None)
        .await
        .unwrap();
    w.settle().await;
    service::end_session(&w.deps, "alice", &older.conversation_id, None)
        .await
        .unwrap();
    w.settle().await;
    let stats = service::user_stats(&w.deps, "alice", "child-ooo").await.unwrap();
    assert_eq!(stats.conversations, 2);
    assert_eq!(stats.last_conversation_at, Some(newer.start_time));
}

/// Removing a counted conversation whose user's totals are gone (erased
/// meanwhile) creates no totals row, least of all a negative one that no
/// longer decodes: the totals read as zero and the route answers.
async fn a_removal_without_a_totals_row_creates_none(w: World) {
    let c = service::create_conversation(&w.deps, "alice", create_req("child-nostats", "toy-1"))
        .await
        .unwrap()
        .0;
    service::end_session(&w.deps, "alice", &c.conversation_id, None)
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(
        service::user_stats(&w.deps, "alice", "child-nostats")
            .await
            .unwrap()
            .conversations,
        1
    );
    w.store
        .totals
        .delete_user_stats("alice", "child-nostats")
        .await
        .unwrap();
    service::delete_conversation(&w.deps, "alice", &c.conversation_id)
        .await
        .unwrap();
    assert!(
        w.store
            .totals
            .user_stats("alice", "child-nostats")
            .await
            .unwrap()
            .is_none()
    );
    let stats = service::user_stats(&w.deps, "alice", "child-nostats").await.unwrap();
    assert_eq!((stats.conversations, stats.messages), (0, 0));
    assert_eq!(
        code(
            service::get_conversation(&w.deps, "alice", &c.conversation_id)
                .await
                .unwrap_err()
        ),
        ErrorCode::ConversationNotFound
    );
}

/// An erasure does not stop at a page of the user's index that holds only
/// conversations already erased (a lagging index): it follows the cursor
/// and ends when a whole pass finds nothing.
async fn an_erasure_reads_past_a_lagging_index(w: World) {
    let mut ids = Vec::new();
    for agent in ["toy-1", "toy-2", "toy-3"] {
        ids.push(
            service::create_conversation(&w.deps, "alice", create_req("child-lag", agent))
                .await
                .unwrap()
                .0
                .conversation_id,
        );
    }
    w.faulty.lagging_index.store(true, std::sync::atomic::Ordering::SeqCst);
    let erased = w.erase_user("alice", "child-lag").await.conversations_deleted;
    w.faulty.lagging_index.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(erased, 3);
    for id in &ids {
        assert_eq!(
            code(service::get_conversation(&w.deps, "alice", id).await.unwrap_err()),
            ErrorCode::ConversationNotFound
        );
    }
}

/// A user's erasure is a job that survives a crash anywhere: a step that
/// fails after erasing part of its page, or after its work but before it is
/// recorded, is redelivered and resumes; the job ends with everything of
/// the user gone, counted exactly once, and nothing of anyone else touched.
async fn an_erasure_job_survives_crashes_and_counts_once(w: World) {
    let mut ids = Vec::new();
    let mut messages = 0;
    for i in 0..30 {
        let c = service::create_conversation(&w.deps, "alice", create_req("child-big", &format!("toy-{i}")))
            .await
            .unwrap()
            .0;
        if i % 10 == 0 {
            service::append_messages(&w.deps, "alice", &c.conversation_id, exchange("hi", "hello"), None)
                .await
                .unwrap();
            messages += 2;
        }
        ids.push(c.conversation_id);
    }
    let kept = service::create_conversation(&w.deps, "alice", create_req("child-other", "toy-1"))
        .await
        .unwrap()
        .0;
    let bobs = service::create_conversation(&w.deps, "bob", create_req("child-big", "toy-1"))
        .await
        .unwrap()
        .0;
    w.settle().await;
    // The start's record goes through; the first step's record fails (after
    // its page was found), then a mark in the middle of a page, then a
    // later step's record.
    w.faulty.crash_at(Step::ErasureJob, 1);
    w.faulty.crash_at(Step::Meta, 12);
    w.faulty.crash_at(Step::ErasureJob, 1);
    let report = w.erase_user("alice", "child-big").await;
    assert!(w.faulty.crash.lock().unwrap().is_empty(), "every crash was injected");
    assert_eq!(report.status, ErasureStatus::Done);
    assert_eq!(report.outcome, Some(ErasureOutcome::Erased));
    assert_eq!((report.conversations_deleted, report.messages_deleted), (30, messages));
    for id in &ids {
        assert_eq!(w.leftovers(id).await, Vec::<String>::new(), "{id}");
        assert_eq!(
            code(service::get_conversation(&w.deps, "alice", id).await.unwrap_err()),
            ErrorCode::ConversationNotFound
        );
    }
    service::get_conversation(&w.deps, "alice", &kept.conversation_id)
        .await
        .unwrap();
    service::get_conversation(&w.deps, "bob", &bobs.conversation_id)
        .await
        .unwrap();
}

/// On an index that lags (DynamoDB's global index), one pass that finds
/// nothing does not end the erasure: it waits for the index to settle and
/// ends only when a second pass agrees, so a conversation the index showed
/// late is erased too.
async fn an_erasure_waits_for_a_lagging_index_to_settle(w: World) {
    let mut ids = Vec::new();
    for agent in ["toy-1", "toy-2", "toy-3"] {
        ids.push(
            service::create_conversation(&w.deps, "alice", create_req("child-late", agent))
                .await
                .unwrap()
                .0
                .conversation_id,
        );
    }
    // The index shows the third conversation only from its third list on:
    // the first pass erases two, the second finds nothing.
    *w.faulty.unindexed.lock().unwrap() = (std::collections::HashSet::from([ids[2].clone()]), 2);
    let report = w.erase_user("alice", "child-late").await;
    w.faulty.unindexed.lock().unwrap().0.clear();
    assert_eq!(report.conversations_deleted, 3);
    for id in &ids {
        assert_eq!(
            code(service::get_conversation(&w.deps, "alice", id).await.unwrap_err()),
            ErrorCode::ConversationNotFound
        );
    }
}

/// An erasure's report is its owner's alone; once done it keeps its counts
/// and no id of the person; a user the owner held nothing of ends as
/// `nothing_held`; a step delivered again, during the job or after it,
/// changes nothing.
async fn an_erasure_report_is_private_and_steps_run_once(w: World) {
    let c = new_conversation(&w, "alice").await;
    service::append_messages(&w.deps, "alice", &c.conversation_id, exchange("a", "b"), None)
        .await
        .unwrap();
    w.settle().await;
    let started = convo_domain::erasure::start(&w.deps, "alice", "child-1").await.unwrap();
    assert_eq!(started.user_id.as_deref(), Some("child-1"));
    assert_eq!((started.status, started.outcome), (ErasureStatus::Running, None));
    for (owner, id) in [
        ("bob", started.erasure_id.as_str()),
        ("alice", "nope"),
        ("alice", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    ] {
        assert_eq!(
            code(convo_domain::erasure::report(&w.deps, owner, id).await.unwrap_err()),
            ErrorCode::ErasureNotFound,
            "{owner} {id}"
        );
    }
    let step = |n: u64| WriteCommand {
        v: convo_schema::commands::WRITE_COMMAND_VERSION,
        command_id: format!("{}-{n}", started.erasure_id),
        conversation_id: started.erasure_id.clone(),
        owner_id: "alice".into(),
        accepted_at: w.clock.now(),
        kind: convo_schema::commands::WriteKind::EraseUser { step: n },
    };
    // Step 0 run here, then delivered twice more (it finds the job moved on).
    for _ in 0..3 {
        convo_domain::erasure::run_command(&w.deps, &step(0)).await.unwrap();
    }
    w.settle().await;
    let done = convo_domain::erasure::report(&w.deps, "alice", &started.erasure_id)
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.outcome),
        (ErasureStatus::Done, Some(ErasureOutcome::Erased))
    );
    assert_eq!((done.conversations_deleted, done.messages_deleted), (1, 2));
    assert_eq!(done.user_id, None);
    assert!(done.finished_at.is_some());
    let stored = w
        .store
        .erasures
        .get_erasure(&started.erasure_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stored.user_id, stored.pending.len(), stored.cursor), (None, 0, None));
    // Every step delivered again after the end: nothing changes.
    for n in 0..stored.step + 2 {
        convo_domain::erasure::run_command(&w.deps, &step(n)).await.unwrap();
    }
    w.settle().await;
    assert_eq!(
        convo_domain::erasure::report(&w.deps, "alice", &started.erasure_id)
            .await
            .unwrap(),
        done
    );
    let nobody = w.erase_user("alice", "child-never-seen").await;
    assert_eq!(
        (nobody.status, nobody.outcome),
        (ErasureStatus::Done, Some(ErasureOutcome::NothingHeld))
    );
    assert_eq!(nobody.conversations_deleted, 0);
}

/// A user's export holds every conversation and message of theirs, opened,
/// in pages of at most 500 messages whose cursors lead through all of it;
/// another owner's conversations with the same user id are not in it.
async fn a_users_export_holds_everything_of_theirs_in_pages(w: World) {
    let mut expected = 0;
    let mut ids = Vec::new();
    for (agent, n) in [("toy-1", 3usize), ("toy-2", 130), ("toy-3", 1)] {
        let c = service::create_conversation(&w.deps, "alice", create_req("child-x", agent))
            .await
            .unwrap()
            .0;
        for k in 0..n {
            let req: AppendRequest = serde_json::from_value(serde_json::json!({"messages": [
                {"role": "user", "content": format!("{agent} says {k}")},
                {"role": "assistant", "content": format!("{agent} answers {k}")},
                {"role": "user", "content": format!("{agent} asks {k}")},
                {"role": "assistant", "content": format!("{agent} replies {k}")},
            ]}))
            .unwrap();
            service::append_messages(&w.deps, "alice", &c.conversation_id, req, None)
                .await
                .unwrap();
            w.settle().await;
        }
        expected += 4 * n;
        ids.push(c.conversation_id);
    }
    service::create_conversation(&w.deps, "bob", create_req("child-x", "toy-1"))
        .await
        .unwrap();
    let (mut conversations, mut messages, mut pages) = (Vec::new(), Vec::new(), 0);
    let mut cursor: Option<String> = None;
    let mut first_cursor = None;
    loop {
        let page = convo_domain::export::export_user(&w.deps, "alice", "child-x", cursor.as_deref())
            .await
            .unwrap();
        assert!(page.messages.len() <= convo_domain::export::MESSAGES_PER_PAGE);
        assert_eq!(page.user_id, "child-x");
        conversations.extend(page.conversations.into_iter().map(|c| c.conversation_id));
        messages.extend(page.messages);
        pages += 1;
        match page.next_cursor {
            Some(next) => {
                first_cursor.get_or_insert(next.clone());
                cursor = Some(next);
            }
            None => break,
        }
    }
    assert!(pages >= 2, "{pages} pages");
    conversations.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(conversations, want, "each conversation once, none of bob's");
    assert_eq!(messages.len(), expected);
    // Opened, whole and in order within each conversation.
    for id in &ids {
        let mine: Vec<u64> = messages
            .iter()
            .filter(|m| &m.conversation_id == id)
            .map(|m| m.message_index)
            .collect();
        assert_eq!(mine, (0..mine.len() as u64).collect::<Vec<_>>());
    }
    assert!(messages.iter().any(|m| m.content == "toy-2 replies 129"));
    // A cursor that is not one the export issued is refused.
    let err = convo_domain::export::export_user(&w.deps, "alice", "child-x", Some("bm90IGEgY3Vyc29y"))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::InvalidCursor);
    // Another owner following alice's cursor gets nothing of hers.
    match convo_domain::export::export_user(&w.deps, "bob", "child-x", first_cursor.as_deref()).await {
        Err(e) => assert_eq!(code(e), ErrorCode::InvalidCursor),
        Ok(page) => {
            assert!(page.conversations.iter().all(|c| !ids.contains(&c.conversation_id)));
            assert!(page.messages.iter().all(|m| !ids.contains(&m.conversation_id)));
        }
    }
}

/// An export resumes by key, not by position: a page that ends exactly at a
/// conversation's last message does not repeat the next conversation, a
/// conversation started during the export is left out (it is newer than the
/// export's start), and one erased during it is skipped without an error.
async fn an_export_resumes_across_starts_and_erasures(w: World) {
    let mut ids = Vec::new();
    for (agent, appends) in [("toy-1", 2usize), ("toy-2", 27), ("toy-3", 25)] {
        let c = service::create_conversation(&w.deps, "alice", create_req("child-r", agent))
            .await
            .unwrap()
            .0;
        for k in 0..appends {
            let batch: Vec<serde_json::Value> = (0..20)
                .map(|i| serde_json::json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("{agent} {k}-{i}")}))
                .collect();
            let req: AppendRequest = serde_json::from_value(serde_json::json!({ "messages": batch })).unwrap();
            service::append_messages(&w.deps, "alice", &c.conversation_id, req, None)
                .await
                .unwrap();
            w.settle().await;
        }
        ids.push(c.conversation_id);
        w.clock.advance(chrono::Duration::seconds(1));
    }
    let export = |cursor: Option<String>| {
        let deps = w.deps.clone();
        async move {
            convo_domain::export::export_user(&deps, "alice", "child-r", cursor.as_deref())
                .await
                .unwrap()
        }
    };
    // Page 1: the newest (toy-3) exactly fills it.
    let first = export(None).await;
    assert_eq!(first.messages.len(), 500);
    let started = service::create_conversation(&w.deps, "alice", create_req("child-r", "toy-4"))
        .await
        .unwrap()
        .0;
    let second = export(first.next_cursor.clone()).await;
    service::delete_conversation(&w.deps, "alice", &ids[0]).await.unwrap();
    let mut pages = vec![first, second];
    while let Some(next) = pages.last().and_then(|p| p.next_cursor.clone()) {
        pages.push(export(Some(next)).await);
        assert!(pages.len() < 10);
    }
    let conversations: Vec<String> = pages
        .iter()
        .flat_map(|p| p.conversations.iter().map(|c| c.conversation_id.clone()))
        .collect();
    let mut unique = conversations.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        conversations.len(),
        "a conversation repeated: {conversations:?}"
    );
    assert!(!conversations.contains(&started.conversation_id));
    assert!(conversations.contains(&ids[1]) && conversations.contains(&ids[2]));
    let messages: Vec<&Message> = pages.iter().flat_map(|p| p.messages.iter()).collect();
    for (id, n) in [(&ids[1], 540usize), (&ids[2], 500)] {
        let mine: Vec<u64> = messages
            .iter()
            .filter(|m| &m.conversation_id == id)
            .map(|m| m.message_index)
            .collect();
        assert_eq!(mine, (0..n as u64).collect::<Vec<_>>(), "{id}");
    }
}

/// A claim written by a worker of format 3 (the message id alone) for a
/// commit a crash cut short is this message's own: the redelivered command
/// is stored, not refused by a claim in the other form.
async fn a_claim_in_the_old_form_does_not_block_its_own_message(w: World) {
    let c = new_conversation(&w, "alice").await;
    let id = c.conversation_id.clone();
    service::append_messages(&w.deps, "alice", &id, one("user", "hi", Some("SM900")), None)
        .await
        .unwrap();
    let batch = w.writes.receive(10, std::time::Duration::ZERO).await;
    let command: WriteCommand = serde_json::from_str(&batch[0].body).unwrap();
    let message_id = match &command.kind {
        convo_schema::commands::WriteKind::Append { messages } => messages[0].message_id.clone(),
        _ => unreachable!(),
    };
    w.raw
        .claim_external_ids(&id, &[("SM900".to_string(), message_id.clone())], None)
        .await
        .unwrap();
    let outcome = persist_batch(
        &w.deps,
        vec![Delivery::decode(
            batch[0].message_id.clone(),
            batch[0].group.clone(),
            &batch[0].body,
        )],
    )
    .await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    let stored = w.all_messages(&id).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].message_id, message_id);
}

/// A record the worker cannot apply (a body that does not decode, a command
/// in a newer format) fails every record behind it in its message group, as
/// a failed write does: nothing of that group is applied out of order, the
/// other groups of the batch are stored, and nothing is lost (what never
/// applies is parked in the dead-letter queue, in order, for a redrive).
async fn a_record_that_cannot_be_applied_holds_back_the_rest_of_its_group(w: World) {
    let a = new_conversation(&w, "alice").await.conversation_id;
    let b = service::create_conversation(&w.deps, "alice", create_req("child-2", "toy-2"))
        .await
        .unwrap()
        .0
        .conversation_id;
    w.writes
        .send(Some("poison-group"), Some("p1"), "{not json".into())
        .await
        .unwrap();
    // A poison in the very group of b, ahead of more of b's writes.
    service::append_messages(&w.deps, "alice", &b, one("user", "b0", None), None)
        .await
        .unwrap();
    w.writes
        .send(Some(&b), Some("p2"), "{also not json".into())
        .await
        .unwrap();
    let mut behind = Vec::new();
    for i in 1..3 {
        let ack = service::append_messages(&w.deps, "alice", &b, one("user", &format!("b{i}"), None), None)
            .await
            .unwrap();
        behind.push(ack.command_id);
    }
    service::append_messages(&w.deps, "alice", &a, one("user", "fine", None), None)
        .await
        .unwrap();
    // One batch mixes the groups: exactly the poison of b and what follows
    // it in b fail; the lone poison fails alone; a and b0 are stored.
    let (ids, outcome) = w.persist_once().await.unwrap();
    assert_eq!(ids.len(), 6);
    assert_eq!(
        outcome.failed,
        vec![ids[0].clone(), ids[2].clone(), ids[3].clone(), ids[4].clone()]
    );
    w.settle().await;
    assert_eq!(w.all_messages(&a).await.len(), 1);
    let bs: Vec<_> = w.all_messages(&b).await.into_iter().map(|m| m.content).collect();
    assert_eq!(bs, ["b0"], "nothing behind the poison is applied ahead of it");
    let stats = w.writes.stats();
    assert_eq!((stats.visible, stats.in_flight, stats.dead_letters), (0, 0, 4));
    let parked = w.writes.dead_letters();
    assert_eq!(parked[..2], ["{not json".to_string(), "{also not json".to_string()]);
    // b1 and b2 are parked behind it, in order, whole.
    let later: Vec<String> = parked[2..]
        .iter()
        .map(|b| serde_json::from_str::<WriteCommand>(b).unwrap().command_id)
        .collect();
    assert_eq!(later, behind);
}

/// During a rollout an older worker may receive a command of a newer
/// format: it fails, and the end queued behind it is not applied ahead of it.
async fn a_newer_command_format_is_not_overtaken_by_an_end(w: World) {
    let c = new_conversation(&w, "alice").await;
    let id = c.conversation_id.clone();
    service::append_messages(&w.deps, "alice", &id, one("user", "from a newer api", None), None)
        .await
        .unwrap();
    service::end_session(&w.deps, "alice", &id, None).await.unwrap();
    let batch = w.writes.receive(10, std::time::Duration::ZERO).await;
    assert_eq!(batch.len(), 2);
    let mut newer: serde_json::Value = serde_json::from_str(&batch[0].body).unwrap();
    newer["v"] = serde_json::json!(convo_schema::commands::WRITE_COMMAND_VERSION + 1);
    let deliveries = vec![
        Delivery::decode(batch[0].message_id.clone(), batch[0].group.clone(), &newer.to_string()),
        Delivery::decode(batch[1].message_id.clone(), batch[1].group.clone(), &batch[1].body),
    ];
    let outcome = persist_batch(&w.deps, deliveries).await;
    assert_eq!(
        outcome.failed,
        vec![batch[0].message_id.clone(), batch[1].message_id.clone()]
    );
    let now = w.conversation(&id).await;
    assert_eq!((now.status, now.message_count), (ConversationStatus::Active, 0));
}

async fn end_sets_duration_stats_and_a_generated_title(w: World) {
    let c = new_conversation(&w, "alice").await;
    let id = &c.conversation_id;
    service::append_messages(
        &w.deps,
        "alice",
        id,
        exchange("I love volcanoes and lava", "Me too!"),
        None,
    )
    .await
    .unwrap();
    w.clock.advance(Duration::seconds(95));
    service::end_session(&w.deps, "alice", id, None).await.unwrap();
    // Accepted before the end was applied, so still stored after it.
    w.settle().await;
    let c = w.conversation(id).await;
    assert_eq!(c.status, ConversationStatus::Ended);
    assert_eq!(c.end_time, Some(c.start_time + Duration::seconds(95)));
    assert_eq!((c.duration_seconds, c.duration_minutes), (Some(95), Some(2)));
    assert_eq!(c.title.as_deref(), Some("Love Volcanoes Lava"));
    assert_eq!(c.title_source, Some(TitleSource::Generated));
    assert!(c.title_generated_at.is_some());
    let stats = service::user_stats(&w.deps, "alice", "child-1").await.unwrap();
    assert_eq!((stats.conversations, stats.messages, stats.total_seconds), (1, 2, 95));
    let err = service::append_messages(&w.deps, "alice", id, one("user", "late", None), None)
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::ConversationEnded);
    let err = service::end_session(&w.deps, "alice", id, None).await.unwrap_err();
    assert_eq!(code(err), ErrorCode::ConversationEnded);
}

async fn an_end_never_overtakes_messages_accepted_before_it(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    for i in 0..12 {
        service::append_messages(&w.deps, "alice", &id, one("user", &format!("m{i}"), None), None)
            .await
            .unwrap();
    }
    service::end_session(&w.deps, "alice", &id, None).await.unwrap();
    w.settle().await;
    let stats = service::user_stats(&w.deps, "alice", "child-1").await.unwrap();
    assert_eq!(stats.messages, 12, "the end was applied after all 12 messages");
}

async fn a_user_title_is_never_overwritten(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    service::append_messages(&w.deps, "alice", &id, exchange("rockets and planets", "yes"), None)
        .await
        .unwrap();
    let patch = PatchConversationRequest {
        title: Some("Mia's space chat".into()),
        ..Default::default()
    };
    service::patch_conversation(&w.deps, "alice", &id, patch).await.unwrap();
    service::end_session(&w.deps, "alice", &id, None).await.unwrap();
    w.settle().await;
    let c = w.conversation(&id).await;
    assert_eq!(c.title.as_deref(), Some("Mia's space chat"));
    assert_eq!(c.title_source, Some(TitleSource::User));
    assert_eq!(c.status, ConversationStatus::Ended);
}

async fn a_title_is_requested_after_the_first_exchanges(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    service::append_messages(
        &w.deps,
        "alice",
        &id,
        exchange("penguins live where", "In the south."),
        None,
    )
    .await
    .unwrap();
    w.settle().await;
    assert_eq!(w.conversation(&id).await.title, None);
    service::append_messages(
        &w.deps,
        "alice",
        &id,
        exchange("penguins swim fast", "Very fast."),
        None,
    )
    .await
    .unwrap();
    w.settle().await;
    let c = w.conversation(&id).await;
    assert_eq!(c.title.as_deref(), Some("Penguins Live Swim Fast"));
    // Later exchanges do not queue more title jobs.
    service::append_messages(&w.deps, "alice", &id, exchange("more penguins", "ok"), None)
        .await
        .unwrap();
    let persisted = w.persist_once().await.unwrap().1;
    assert_eq!(persisted.commands_applied, 1);
    assert_eq!(w.titles.stats().visible, 0);
}

async fn patch_merges_metadata_and_archives_only_ended_conversations(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    let meta = serde_json::json!({"lang": null, "mood": "happy"})
        .as_object()
        .unwrap()
        .clone();
    let c = service::patch_conversation(
        &w.deps,
        "alice",
        &id,
        PatchConversationRequest {
            metadata: Some(meta),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        serde_json::Value::Object(c.metadata.clone()),
        serde_json::json!({"mood": "happy"})
    );
    let archive = || PatchConversationRequest {
        status: Some("archived".into()),
        ..Default::default()
    };
    let err = service::patch_conversation(&w.deps, "alice", &id, archive())
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::ConversationNotEnded);
    assert_eq!(w.conversation(&id).await.status, ConversationStatus::Active);
    service::end_session(&w.deps, "alice", &id, None).await.unwrap();
    w.settle().await;
    let c = service::patch_conversation(&w.deps, "alice", &id, archive())
        .await
        .unwrap();
    assert_eq!(c.status, ConversationStatus::Archived);
    assert!(c.archived_at.is_some());
}

async fn another_owner_sees_exactly_what_a_missing_id_shows(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    let missing = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    for target in [id.as_str(), missing, "bad id"] {
        let e1 = service::get_conversation(&w.deps, "bob", target).await.unwrap_err();
        let e2 = service::append_messages(&w.deps, "bob", target, one("user", "x", None), None)
            .await
            .unwrap_err();
        let e3 = service::end_session(&w.deps, "bob", target, None).await.unwrap_err();
        let e4 = reads::list_messages(&w.deps, "bob", target, MessageParams::default())
            .await
            .unwrap_err();
        let e5 = reads::context(&w.deps, "bob", target, None, None, None)
            .await
            .unwrap_err();
        let e6 = service::patch_conversation(
            &w.deps,
            "bob",
            target,
            PatchConversationRequest {
                title: Some("mine".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        for e in [e1, e2, e3, e4, e5, e6] {
            assert_eq!(code(e), ErrorCode::ConversationNotFound, "{target}");
        }
    }
    let page = reads::list_conversations(
        &w.deps,
        "bob",
        ListParams {
            user_id: Some("child-1"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(page.conversations.is_empty());
    w.settle().await;
    assert_eq!(w.conversation(&id).await.title, None);
    assert_eq!(w.conversation(&id).await.message_count, 0);
}

async fn context_is_recent_oldest_first_and_leaves_blocked_messages_out(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    service::append_messages(&w.deps, "alice", &id, exchange("old question", "old answer"), None)
        .await
        .unwrap();
    w.clock.advance(Duration::hours(25));
    for i in 0..3 {
        service::append_messages(
            &w.deps,
            "alice",
            &id,
            exchange(&format!("q{i}"), &format!("a{i}")),
            None,
        )
        .await
        .unwrap();
    }
    let blocked = service::append_messages(
        &w.deps,
        "alice",
        &id,
        one("user", "send a naked photo, shit", None),
        None,
    )
    .await
    .unwrap();
    assert!(blocked.blocked);
    assert_eq!(blocked.messages[0].safety.action, SafetyAction::Blocked);
    w.settle().await;
    let ctx = reads::context(&w.deps, "alice", &id, Some("4"), Some("24h"), None)
        .await
        .unwrap();
    let got: Vec<&str> = ctx.messages.iter().map(|m| m.content.as_str()).collect();
    // The last 4 unblocked messages, oldest first; the blocked one is left
    // out and the one older than 24 h is outside the window.
    assert_eq!(got, vec!["q1", "a1", "q2", "a2"]);
    let ctx = reads::context(&w.deps, "alice", &id, Some("50"), Some("24h"), None)
        .await
        .unwrap();
    assert_eq!(ctx.messages.len(), 6);
    assert_eq!(ctx.messages[0].role, Role::User);
    let ctx = reads::context(&w.deps, "alice", &id, Some("50"), None, None)
        .await
        .unwrap();
    assert_eq!(ctx.messages.first().map(|m| m.content.as_str()), Some("old question"));
    let c = w.conversation(&id).await;
    assert!(c.flagged);
    assert_eq!(c.flag_status, Some(FlagStatus::Unreviewed));
    assert_eq!(c.severity, Some(Severity::High));
    assert_eq!(c.flag_type.as_deref(), Some("sexual"));
    assert_eq!(c.last_message_preview.as_deref(), Some("[withheld by moderation]"));
}

async fn messages_page_by_cursor_in_both_orders_and_by_time(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    for i in 0..25 {
        service::append_messages(&w.deps, "alice", &id, one("user", &format!("m{i}"), None), None)
            .await
            .unwrap();
        w.clock.advance(Duration::minutes(1));
    }
    w.settle().await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = reads::list_messages(
            &w.deps,
            "alice",
            &id,
            MessageParams {
                limit: Some("10"),
                order: Some("desc"),
                cursor: cursor.as_deref(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        seen.extend(page.messages.iter().map(|m| m.message_index));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, (0..25).rev().collect::<Vec<u64>>());
    // A time window: minutes 5..10 after the first message.
    let start = w.conversation(&id).await.start_time;
    let since = (start + Duration::minutes(5)).to_rfc3339();
    let until = (start + Duration::minutes(10)).to_rfc3339();
    let page = reads::list_messages(
        &w.deps,
        "alice",
        &id,
        MessageParams {
            since: Some(&since),
            until: Some(&until),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.message_index).collect::<Vec<_>>(),
        vec![5, 6, 7, 8, 9]
    );
}

async fn a_tampered_or_foreign_cursor_is_refused(w: World) {
    let a = new_conversation(&w, "alice").await.conversation_id;
    let b = service::create_conversation(&w.deps, "alice", create_req("child-2", "toy-2"))
        .await
        .unwrap()
        .0
        .conversation_id;
    for i in 0..5 {
        service::append_messages(&w.deps, "alice", &a, one("user", &format!("a{i}"), None), None)
            .await
            .unwrap();
        service::append_messages(&w.deps, "alice", &b, one("user", &format!("b{i}"), None), None)
            .await
            .unwrap();
    }
    w.settle().await;
    let params = |cursor| MessageParams {
        limit: Some("2"),
        cursor,
        ..Default::default()
    };
    let page = reads::list_messages(&w.deps, "alice", &a, params(None)).await.unwrap();
    let cursor = page.next_cursor.unwrap();
    let err = reads::list_messages(&w.deps, "alice", &b, params(Some(&cursor)))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::InvalidCursor);
    let mut tampered = cursor.clone();
    tampered.insert(3, 'x');
    for bad in [tampered.as_str(), "garbage", ""] {
        let err = reads::list_messages(&w.deps, "alice", &a, params(Some(bad)))
            .await
            .unwrap_err();
        assert_eq!(code(err), ErrorCode::InvalidCursor, "{bad}");
    }
    let list = |cursor| ListParams {
        user_id: Some("child-1"),
        cursor,
        limit: Some("1"),
        ..Default::default()
    };
    let err = reads::list_conversations(&w.deps, "alice", list(Some(&cursor)))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::InvalidCursor);
}

async fn conversations_list_newest_first_with_pages(w: World) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(new_conversation(&w, "alice").await.conversation_id);
        w.clock.advance(Duration::seconds(10));
    }
    service::create_conversation(&w.deps, "alice", create_req("child-2", "toy-1"))
        .await
        .unwrap();
    service::create_conversation(&w.deps, "bob", create_req("child-1", "toy-1"))
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = reads::list_conversations(
            &w.deps,
            "alice",
            ListParams {
                user_id: Some("child-1"),
                cursor: cursor.as_deref(),
                limit: Some("2"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        got.extend(page.conversations.into_iter().map(|c| c.conversation_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(got, ids);
}

/// The sweeper examines a bounded number of sessions a run and resumes
/// after the last one: long-lived active sessions that started first do not
/// hide the idle ones behind them (with a limit of 2 here, as 5,000 in
/// production).
async fn long_lived_sessions_do_not_hide_idle_ones_from_the_sweeper(w: World) {
    let mut busy = Vec::new();
    for i in 0..3 {
        busy.push(
            service::create_conversation(&w.deps, "alice", create_req(&format!("child-busy-{i}"), "toy-1"))
                .await
                .unwrap()
                .0
                .conversation_id,
        );
    }
    w.clock.advance(Duration::seconds(1));
    let mut idle = Vec::new();
    for i in 0..2 {
        idle.push(
            service::create_conversation(&w.deps, "alice", create_req(&format!("child-idle-{i}"), "toy-1"))
                .await
                .unwrap()
                .0
                .conversation_id,
        );
    }
    w.clock.advance(Duration::minutes(40));
    for id in &busy {
        service::append_messages(&w.deps, "alice", id, one("user", "still here", None), None)
            .await
            .unwrap();
    }
    w.settle().await;
    // Run 1 examines two busy ones; run 2 a busy and an idle one; run 3 the
    // last idle one; run 4 starts again from the front.
    let mut ended = Vec::new();
    for _ in 0..4 {
        ended.push(sweep_idle_sessions(&w.deps).await.unwrap());
    }
    assert_eq!(ended, vec![0, 1, 1, 0]);
    w.settle().await;
    for id in &idle {
        assert_eq!(w.conversation(id).await.status, ConversationStatus::Ended, "{id}");
    }
    for id in &busy {
        assert_eq!(w.conversation(id).await.status, ConversationStatus::Active, "{id}");
    }
}

async fn the_sweeper_ends_idle_sessions_only(w: World) {
    let idle = new_conversation(&w, "alice").await.conversation_id;
    service::append_messages(&w.deps, "alice", &idle, exchange("hello bear", "hello!"), None)
        .await
        .unwrap();
    let busy = service::create_conversation(&w.deps, "alice", create_req("child-2", "toy-2"))
        .await
        .unwrap()
        .0
        .conversation_id;
    w.settle().await;
    let last_activity = w.conversation(&idle).await.last_activity_at;
    w.clock.advance(Duration::minutes(25));
    service::append_messages(&w.deps, "alice", &busy, one("user", "still here", None), None)
        .await
        .unwrap();
    w.settle().await;
    w.clock.advance(Duration::minutes(6));
    assert_eq!(sweep_idle_sessions(&w.deps).await.unwrap(), 1);
    // A second sweep before the worker ran enqueues a duplicate that the
    // FIFO deduplication drops.
    assert_eq!(sweep_idle_sessions(&w.deps).await.unwrap(), 1);
    w.settle().await;
    let c = w.conversation(&idle).await;
    assert_eq!(c.status, ConversationStatus::Ended);
    assert_eq!(c.end_time, Some(last_activity));
    assert_eq!(w.conversation(&busy).await.status, ConversationStatus::Active);
    let stats = service::user_stats(&w.deps, "alice", "child-1").await.unwrap();
    assert_eq!(stats.conversations, 1);
}

async fn an_idempotency_key_replays_the_first_answer(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    let body = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let key = || Some(IdempotencyKey::new("retry-1", body).unwrap());
    let first = service::append_messages(&w.deps, "alice", &id, one("user", "hi", None), key())
        .await
        .unwrap();
    let again = service::append_messages(&w.deps, "alice", &id, one("user", "hi", None), key())
        .await
        .unwrap();
    assert_eq!(first, again);
    let other = Some(IdempotencyKey::new("retry-1", b"something else").unwrap());
    let err = service::append_messages(&w.deps, "alice", &id, one("user", "bye", None), other)
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::IdempotencyKeyReused);
    w.settle().await;
    assert_eq!(w.all_messages(&id).await.len(), 1);
}

async fn concurrent_writers_get_gapless_indexes(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let deps = w.deps.clone();
            let id = id.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    service::append_messages(&deps, "alice", &id, one("user", &format!("w{t}-{i}"), None), None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    // The worker runs while the writers write.
    for _ in 0..20 {
        w.persist_once().await;
        tokio::task::yield_now().await;
    }
    for t in writers {
        t.await.unwrap();
    }
    w.settle().await;
    let msgs = w.all_messages(&id).await;
    assert_eq!(
        msgs.iter().map(|m| m.message_index).collect::<Vec<_>>(),
        (0..400).collect::<Vec<u64>>()
    );
    let distinct: std::collections::HashSet<_> = msgs.iter().map(|m| m.content.clone()).collect();
    assert_eq!(distinct.len(), 400);
    assert_eq!(w.conversation(&id).await.message_count, 400);
    // Each writer's messages keep that writer's order.
    for t in 0..8 {
        let mine: Vec<_> = msgs
            .iter()
            .filter(|m| m.content.starts_with(&format!("w{t}-")))
            .map(|m| m.content.clone())
            .collect();
        assert_eq!(mine, (0..50).map(|i| format!("w{t}-{i}")).collect::<Vec<_>>());
    }
}

async fn an_append_too_large_for_one_queue_message_is_refused(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    let big = "x".repeat(16 * 1024);
    let messages: Vec<_> = (0..20)
        .map(|_| serde_json::json!({"role": "user", "content": big}))
        .collect();
    let req: AppendRequest = serde_json::from_value(serde_json::json!({ "messages": messages })).unwrap();
    let err = service::append_messages(&w.deps, "alice", &id, req, None)
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::PayloadTooLarge);
    assert_eq!(w.writes.stats().visible, 0);
}

#[test]
fn write_commands_keep_their_wire_format() {
    // Messages already on the queue must stay readable across releases.
    let body = r#"{"v":1,"commandId":"c1","conversationId":"01ARZ3NDEKTSV4RRFFQ69G5FAV","ownerId":"alice",
        "acceptedAt":"2026-05-01T09:00:00.000Z","kind":"append","messages":[{"messageId":"m1","role":"user",
        "content":"hi","createdAt":"2026-05-01T09:00:00Z","safety":{"score":1.0,"action":"safe"}}]}"#;
    let cmd: WriteCommand = serde_json::from_str(body).unwrap();
    assert_eq!(cmd.command_id, "c1");
    let end = r#"{"v":1,"commandId":"c2","conversationId":"x","ownerId":"alice","acceptedAt":"2026-05-01T09:00:00Z","kind":"end","reason":"idle"}"#;
    let cmd: WriteCommand = serde_json::from_str(end).unwrap();
    assert!(matches!(
        cmd.kind,
        convo_schema::commands::WriteKind::End {
            reason: convo_schema::commands::EndReason::Idle
        }
    ));
}

async fn a_write_accepted_before_the_end_applies_is_kept_and_counted(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    service::append_messages(&w.deps, "alice", &id, exchange("hello", "hi"), None)
        .await
        .unwrap();
    service::end_session(&w.deps, "alice", &id, None).await.unwrap();
    // The end is queued but not applied: the API still accepts this one.
    w.clock.advance(Duration::seconds(1));
    service::append_messages(&w.deps, "alice", &id, one("user", "too late", None), None)
        .await
        .unwrap();
    w.settle().await;
    let c = w.conversation(&id).await;
    assert_eq!(c.status, ConversationStatus::Ended);
    assert_eq!(c.message_count, 3);
    assert!(c.last_activity_at <= c.end_time.unwrap());
    let contents: Vec<_> = w.all_messages(&id).await.into_iter().map(|m| m.content).collect();
    assert_eq!(contents, ["hello", "hi", "too late"]);
    let stats = service::user_stats(&w.deps, "alice", "child-1").await.unwrap();
    assert_eq!((stats.conversations, stats.messages), (1, 3));
}

async fn a_window_finds_backfilled_messages(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    let base = w.clock.now() - Duration::days(10);
    let at = |h: i64| (base + Duration::hours(h)).to_rfc3339();
    let body = serde_json::json!({"messages": [
        {"role": "user", "content": "m0", "createdAt": at(1)},
        {"role": "user", "content": "m1", "createdAt": at(3)},
        {"role": "user", "content": "m2", "createdAt": at(0)},
        {"role": "user", "content": "m3", "createdAt": at(4)},
    ]});
    service::append_messages(&w.deps, "alice", &id, serde_json::from_value(body).unwrap(), None)
        .await
        .unwrap();
    w.settle().await;
    for (since, until, order, want) in [
        (Some(2), None, "asc", vec!["m1", "m3"]),
        (Some(2), None, "desc", vec!["m3", "m1"]),
        (None, Some(2), "asc", vec!["m0", "m2"]),
        (None, Some(2), "desc", vec!["m2", "m0"]),
        (Some(0), Some(2), "asc", vec!["m0", "m2"]),
    ] {
        let (s, u) = (since.map(at), until.map(at));
        let page = reads::list_messages(
            &w.deps,
            "alice",
            &id,
            MessageParams {
                since: s.as_deref(),
                until: u.as_deref(),
                order: Some(order),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let got: Vec<_> = page.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(got, want, "since {since:?} until {until:?} {order}");
    }
}

async fn appends_over_the_rate_limit_are_refused_and_enqueue_nothing(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    let other = service::create_conversation(&w.deps, "alice", create_req("child-2", "toy-1"))
        .await
        .unwrap()
        .0;
    // Mid-minute, so the window does not turn over during the test.
    w.clock.advance(Duration::seconds(20));
    let body = br#"{"messages":[{"role":"user","content":"m0"}]}"#;
    let key = || Some(IdempotencyKey::new("k0", body).unwrap());
    // The worker counts what it stores, in the head the API reads with the
    // conversation: each append here is stored before the next is sent.
    service::append_messages(&w.deps, "alice", &id, one("user", "m0", None), key())
        .await
        .unwrap();
    w.settle().await;
    for i in 1..3 {
        service::append_messages(&w.deps, "alice", &id, one("user", &format!("m{i}"), None), None)
            .await
            .unwrap();
        w.settle().await;
    }
    // A replay of an accepted request is answered again without counting.
    service::append_messages(&w.deps, "alice", &id, one("user", "m0", None), key())
        .await
        .unwrap();
    w.settle().await;
    let err = service::append_messages(&w.deps, "alice", &id, one("user", "m3", None), None)
        .await
        .unwrap_err();
    match err {
        DomainError::RateLimited { retry_after_seconds } => assert_eq!(retry_after_seconds, 40),
        other => panic!("expected a rate limit, got {other:?}"),
    }
    assert_eq!(w.writes.stats().visible, 0, "the refused append enqueued nothing");
    // Another conversation has its own budget (the limit is per conversation).
    service::append_messages(&w.deps, "alice", &other.conversation_id, one("user", "x", None), None)
        .await
        .unwrap();
    w.clock.advance(Duration::seconds(40));
    service::append_messages(&w.deps, "alice", &id, one("user", "m4", None), None)
        .await
        .unwrap();
    w.settle().await;
    let contents: Vec<_> = w.all_messages(&id).await.into_iter().map(|m| m.content).collect();
    assert_eq!(contents, ["m0", "m1", "m2", "m4"]);
}

async fn flagged_conversations_are_reviewed_from_a_list(w: World) {
    let a = new_conversation(&w, "alice").await.conversation_id;
    let b = service::create_conversation(&w.deps, "alice", create_req("child-2", "toy-1"))
        .await
        .unwrap()
        .0
        .conversation_id;
    let clean = service::create_conversation(&w.deps, "alice", create_req("child-3", "toy-1"))
        .await
        .unwrap()
        .0
        .conversation_id;
    let bobs = new_conversation(&w, "bob").await.conversation_id;
    service::append_messages(&w.deps, "alice", &a, one("user", "this is shit", None), None)
        .await
        .unwrap();
    w.clock.advance(Duration::seconds(5));
    service::append_messages(&w.deps, "alice", &b, one("user", "I want to hurt myself", None), None)
        .await
        .unwrap();
    service::append_messages(&w.deps, "alice", &clean, one("user", "hello", None), None)
        .await
        .unwrap();
    service::append_messages(&w.deps, "bob", &bobs, one("user", "damn", None), None)
        .await
        .unwrap();
    w.settle().await;
    let list = |status: Option<&'static str>, cursor: Option<String>| {
        let deps = w.deps.clone();
        async move {
            let p = service::ReviewParams {
                status,
                cursor: cursor.as_deref(),
                limit: Some("1"),
            };
            reads::list_reviews(&deps, "alice", p).await.unwrap()
        }
    };
    // Most recently flagged first, one per page.
    let first = list(None, None).await;
    assert_eq!(first.conversations.len(), 1);
    assert_eq!(first.conversations[0].conversation_id, b);
    let second = list(None, first.next_cursor.clone()).await;
    assert_eq!(second.conversations[0].conversation_id, a);
    assert_eq!(second.next_cursor, None);
    assert_eq!(second.conversations[0].flag_status, Some(FlagStatus::Unreviewed));

    let review = |status: ReviewOutcome, note: Option<&str>| ReviewRequest {
        flag_status: status,
        note: note.map(str::to_string),
    };
    let reviewed = service::review_conversation(&w.deps, "alice", &a, review(ReviewOutcome::Dismissed, Some("a joke")))
        .await
        .unwrap();
    assert_eq!(reviewed.flag_status, Some(FlagStatus::Dismissed));
    assert_eq!(reviewed.reviewed_by.as_deref(), Some("alice"));
    assert_eq!(reviewed.reviewed_at, Some(w.clock.now()));
    assert_eq!(reviewed.review_note.as_deref(), Some("a joke"));
    let unreviewed = list(None, None).await;
    assert_eq!(unreviewed.conversations.len(), 1);
    assert_eq!(unreviewed.conversations[0].conversation_id, b);
    let dismissed = list(Some("dismissed"), None).await;
    assert_eq!(dismissed.conversations[0].conversation_id, a);

    let err = service::review_conversation(&w.deps, "alice", &clean, review(ReviewOutcome::Reviewed, None)).await;
    assert_eq!(code(err.unwrap_err()), ErrorCode::ConversationNotFlagged);
    // A review's outcome is never `unreviewed`: the request cannot say it.
    assert!(serde_json::from_value::<ReviewRequest>(serde_json::json!({"flagStatus": "unreviewed"})).is_err());
    let err = service::review_conversation(&w.deps, "bob", &b, review(ReviewOutcome::Reviewed, None)).await;
    assert_eq!(code(err.unwrap_err()), ErrorCode::ConversationNotFound);
    assert_eq!(w.conversation(&b).await.flag_status, Some(FlagStatus::Unreviewed));
    let p = service::ReviewParams {
        status: Some("bogus"),
        ..Default::default()
    };
    assert_eq!(
        code(reads::list_reviews(&w.deps, "alice", p).await.unwrap_err()),
        ErrorCode::ValidationFailed
    );
}

async fn flagged_messages_list_on_their_own(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    let texts = [
        "hi",
        "damn it",
        "a cat",
        "shit",
        "a dog",
        "call me at (415) 555-2671",
        "bye",
    ];
    let t0 = w.clock.now();
    for t in texts {
        service::append_messages(&w.deps, "alice", &id, one("user", t, None), None)
            .await
            .unwrap();
        w.clock.advance(Duration::seconds(10));
    }
    w.settle().await;
    // Message i was said at t0 + 10 i seconds.
    let at = |i: i64| (t0 + Duration::seconds(10 * i)).to_rfc3339();
    let list = |order: Option<&'static str>, since: Option<String>, until: Option<String>| {
        let deps = w.deps.clone();
        let id = id.clone();
        async move {
            let mut got = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = reads::list_messages(
                    &deps,
                    "alice",
                    &id,
                    MessageParams {
                        flagged: Some("true"),
                        limit: Some("2"),
                        order,
                        since: since.as_deref(),
                        until: until.as_deref(),
                        cursor: cursor.as_deref(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
                assert!(page.messages.iter().all(|m| m.flagged));
                got.extend(page.messages.iter().map(|m| m.message_index));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => return got,
                }
            }
        }
    };
    assert_eq!(list(None, None, None).await, [1, 3, 5]);
    assert_eq!(list(Some("desc"), None, None).await, [5, 3, 1]);
    // since is inclusive, until exclusive, in either order.
    assert_eq!(list(None, Some(at(3)), None).await, [3, 5]);
    assert_eq!(list(Some("desc"), None, Some(at(5))).await, [3, 1]);
    assert_eq!(list(Some("desc"), Some(at(2)), Some(at(6))).await, [5, 3]);
    // A cursor of one order is refused by the other.
    let first = reads::list_messages(
        &w.deps,
        "alice",
        &id,
        MessageParams {
            flagged: Some("true"),
            limit: Some("1"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let reversed = MessageParams {
        flagged: Some("true"),
        order: Some("desc"),
        cursor: first.next_cursor.as_deref(),
        ..Default::default()
    };
    let err = reads::list_messages(&w.deps, "alice", &id, reversed).await.unwrap_err();
    assert_eq!(code(err), ErrorCode::InvalidCursor);
}

async fn erasure_leaves_nothing_of_the_user(w: World) {
    let ended = service::create_conversation(&w.deps, "alice", create_req("child-e", "toy-1"))
        .await
        .unwrap()
        .0;
    let active = service::create_conversation(&w.deps, "alice", create_req("child-e", "toy-2"))
        .await
        .unwrap()
        .0;
    let long = service::create_conversation(&w.deps, "alice", create_req("child-e", "toy-3"))
        .await
        .unwrap()
        .0;
    let kept = service::create_conversation(&w.deps, "alice", create_req("child-keep", "toy-1"))
        .await
        .unwrap()
        .0;
    let bobs = service::create_conversation(&w.deps, "bob", create_req("child-e", "toy-1"))
        .await
        .unwrap()
        .0;
    let marker = "erase-marker-7f3a";
    let body = |n: usize, tag: &str| -> AppendRequest {
        let messages: Vec<_> = (0..n)
            .map(|i| serde_json::json!({"role": "user", "content": format!("{marker} {tag} {i} damn"), "externalId": format!("{tag}-{i}")}))
            .collect();
        serde_json::from_value(serde_json::json!({ "messages": messages })).unwrap()
    };
    service::append_messages(&w.deps, "alice", &ended.conversation_id, body(3, "e"), None)
        .await
        .unwrap();
    service::end_session(&w.deps, "alice", &ended.conversation_id, None)
        .await
        .unwrap();
    service::append_messages(&w.deps, "alice", &active.conversation_id, body(2, "a"), None)
        .await
        .unwrap();
    for k in 0..7 {
        service::append_messages(
            &w.deps,
            "alice",
            &long.conversation_id,
            body(20, &format!("l{k}")),
            None,
        )
        .await
        .unwrap();
    }
    service::append_messages(
        &w.deps,
        "alice",
        &kept.conversation_id,
        one("user", "keep me", None),
        None,
    )
    .await
    .unwrap();
    service::append_messages(
        &w.deps,
        "bob",
        &bobs.conversation_id,
        one("user", "bob keeps this", None),
        None,
    )
    .await
    .unwrap();
    w.settle().await;
    assert_eq!(w.conversation(&long.conversation_id).await.message_count, 140);
    // The scan sees the data while it is there (so its emptiness below
    // means something): the conversation's items are found by its id, and
    // what was said in them is nowhere in clear (sealed, issue 16).
    assert_eq!(w.all_messages(&long.conversation_id).await.len(), 140);
    assert!(w.leftovers(&long.conversation_id).await.len() >= 8);
    assert!(w.leftovers(marker).await.is_empty());
    let stats = service::user_stats(&w.deps, "alice", "child-e").await.unwrap();
    assert_eq!((stats.conversations, stats.messages), (1, 3));

    // One conversation: gone, and out of the user's totals.
    service::delete_conversation(&w.deps, "alice", &ended.conversation_id)
        .await
        .unwrap();
    assert!(w.leftovers(&ended.conversation_id).await.is_empty());
    let stats = service::user_stats(&w.deps, "alice", "child-e").await.unwrap();
    assert_eq!((stats.conversations, stats.messages, stats.total_seconds), (0, 0, 0));
    assert_eq!(
        code(
            service::get_conversation(&w.deps, "alice", &ended.conversation_id)
                .await
                .unwrap_err()
        ),
        ErrorCode::ConversationNotFound
    );
    // Idempotent, and silent for another owner.
    service::delete_conversation(&w.deps, "alice", &ended.conversation_id)
        .await
        .unwrap();
    service::delete_conversation(&w.deps, "bob", &active.conversation_id)
        .await
        .unwrap();
    assert_eq!(w.conversation(&active.conversation_id).await.message_count, 2);

    // A write accepted before the erasure is dropped, not resurrected.
    service::append_messages(&w.deps, "alice", &active.conversation_id, body(1, "late"), None)
        .await
        .unwrap();
    assert_eq!(w.erase_user("alice", "child-e").await.conversations_deleted, 2);
    for id in [&ended.conversation_id, &active.conversation_id, &long.conversation_id] {
        assert_eq!(w.leftovers(id).await, Vec::<String>::new(), "{id}");
    }
    assert_eq!(w.leftovers(marker).await, Vec::<String>::new());
    assert_eq!(w.store.totals.user_stats("alice", "child-e").await.unwrap(), None);
    let page = reads::list_conversations(
        &w.deps,
        "alice",
        ListParams {
            user_id: Some("child-e"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(page.conversations.is_empty());
    let again = w.erase_user("alice", "child-e").await;
    assert_eq!(again.conversations_deleted, 0);
    assert_eq!(again.outcome, Some(convo_schema::api::ErasureOutcome::NothingHeld));
    // Everyone else's data is untouched.
    assert_eq!(w.conversation(&kept.conversation_id).await.message_count, 1);
    assert_eq!(w.conversation(&bobs.conversation_id).await.message_count, 1);
    assert_eq!(w.all_messages(&bobs.conversation_id).await[0].content, "bob keeps this");
}

async fn a_conversation_expires_whole_after_its_retention(w: World) {
    let kept = new_conversation(&w, "alice").await.conversation_id;
    let mut req = create_req("child-r", "toy-1");
    req.retention_days = Some(1);
    let short = service::create_conversation(&w.deps, "alice", req).await.unwrap().0;
    assert_eq!(short.expires_at, Some(w.clock.now() + Duration::days(1)));
    service::append_messages(&w.deps, "alice", &short.conversation_id, body_with_external(3), None)
        .await
        .unwrap();
    service::append_messages(&w.deps, "alice", &kept, one("user", "stay", None), None)
        .await
        .unwrap();
    w.settle().await;
    if w.dynamo.is_some() {
        // DynamoDB's TTL removes it: every item carries the expiry.
        let items = w.leftovers(&short.conversation_id).await;
        assert_eq!(
            items.len(),
            1 + 1 + 3 + 3 + 1,
            "META, the chunk of the 3 messages, externalId claims, flag pointers and the pair"
        );
        let ttl = (w.clock.now() + Duration::days(1)).timestamp().to_string();
        assert!(
            items.iter().all(|i| i.contains("\"ttl\"") && i.contains(&ttl)),
            "{items:?}"
        );
    }
    w.clock.advance(Duration::days(1) + Duration::seconds(1));
    let err = service::get_conversation(&w.deps, "alice", &short.conversation_id)
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::ConversationNotFound);
    let page = reads::list_conversations(
        &w.deps,
        "alice",
        ListParams {
            user_id: Some("child-r"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(page.conversations.is_empty());
    let purged = convo_domain::sweep::purge_expired(&w.deps).await.unwrap();
    if w.embedded.is_some() {
        assert_eq!(purged, 1);
        assert_eq!(w.leftovers(&short.conversation_id).await, Vec::<String>::new());
    }
    assert_eq!(w.conversation(&kept).await.message_count, 1);
}

fn body_with_external(n: usize) -> AppendRequest {
    let messages: Vec<_> = (0..n)
        .map(|i| serde_json::json!({"role": "user", "content": format!("shit {i}"), "externalId": format!("x{i}")}))
        .collect();
    serde_json::from_value(serde_json::json!({ "messages": messages })).unwrap()
}

async fn personal_data_is_masked_when_the_conversation_asks(w: World) {
    let mut req = create_req("child-p", "toy-1");
    req.redact_pii = Some(true);
    let private = service::create_conversation(&w.deps, "alice", req).await.unwrap().0;
    assert!(private.redact_pii);
    let open = new_conversation(&w, "alice").await.conversation_id;
    let text = "my mum's email is mum@example.com and we live at 42 Oak Street";
    // What rides in metadata (a framework adapter keeps text there) is
    // masked too.
    let with_metadata = body(serde_json::json!([
        {"role": "user", "content": text, "metadata": {"x": {"copy": [text]}, "n": 3}}
    ]));
    let r = service::append_messages(&w.deps, "alice", &private.conversation_id, with_metadata, None)
        .await
        .unwrap();
    assert_eq!(r.messages[0].safety.categories, vec!["pii_email", "pii_address"]);
    service::append_messages(&w.deps, "alice", &open, one("user", text, None), None)
        .await
        .unwrap();
    w.settle().await;
    let masked = &w.all_messages(&private.conversation_id).await[0];
    assert_eq!(masked.content, "my mum's email is [email] and we live at [address]");
    assert_eq!(
        serde_json::Value::Object(masked.metadata.clone()),
        serde_json::json!({"x": {"copy": ["my mum's email is [email] and we live at [address]"]}, "n": 3})
    );
    assert_eq!(masked.safety.categories, vec!["pii_email", "pii_address"]);
    assert_eq!(w.all_messages(&open).await[0].content, text);
    // The address is stored only in the open conversation (its message and
    // its previews), nowhere in the masked one; and sealed, so the raw data
    // holds it nowhere in clear.
    assert!(w.leftovers("mum@example.com").await.is_empty());
    let holds = |chunks: Vec<convo_domain::ports::Chunk>| {
        chunks.iter().any(|c| {
            c.messages.iter().any(|m| m.content.contains("mum@example.com"))
                || c.head
                    .first_message_preview
                    .as_deref()
                    .is_some_and(|p| p.contains("mum@"))
        })
    };
    assert!(holds(w.store.messages.chunks_desc(&open, None, 100).await.unwrap()));
    assert!(!holds(
        w.store
            .messages
            .chunks_desc(&private.conversation_id, None, 100)
            .await
            .unwrap()
    ));
    let open_now = w.conversation(&open).await;
    assert!(open_now.first_message_preview.unwrap().contains("mum@example.com"));
    let private_now = w.conversation(&private.conversation_id).await;
    assert!(!private_now.first_message_preview.unwrap().contains("mum@"));
}

async fn a_retry_after_a_failed_send_sends_the_same_command_once(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    let flaky = std::sync::Arc::new(FlakyQueue {
        inner: w.writes.clone(),
        fail_next: std::sync::Mutex::new(1),
    });
    let mut deps = w.deps.clone();
    deps.writes = flaky.clone();
    let body = br#"{"messages":[{"role":"user","content":"hello"}]}"#;
    let key = || Some(IdempotencyKey::new("retry-me", body).unwrap());
    let err = service::append_messages(&deps, "alice", &id, one("user", "hello", None), key())
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::DependencyUnavailable);
    assert_eq!(w.writes.stats().visible, 0);
    // The retry answers with the first request's ids: its command is sent now.
    let first = service::append_messages(&deps, "alice", &id, one("user", "hello", None), key())
        .await
        .unwrap();
    let again = service::append_messages(&deps, "alice", &id, one("user", "hello", None), key())
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(w.writes.stats().visible, 1, "settled: the second replay sent nothing");
    w.settle().await;
    let stored = w.all_messages(&id).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].message_id, first.messages[0].message_id);
}

async fn after_an_erasure_the_totals_read_as_if_it_never_existed(w: World) {
    let first = service::create_conversation(&w.deps, "alice", create_req("child-t", "toy-1"))
        .await
        .unwrap()
        .0;
    service::append_messages(&w.deps, "alice", &first.conversation_id, one("user", "hi", None), None)
        .await
        .unwrap();
    service::end_session(&w.deps, "alice", &first.conversation_id, None)
        .await
        .unwrap();
    w.settle().await;
    w.clock.advance(Duration::hours(1));
    let second = service::create_conversation(&w.deps, "alice", create_req("child-t", "toy-1"))
        .await
        .unwrap()
        .0;
    service::end_session(&w.deps, "alice", &second.conversation_id, None)
        .await
        .unwrap();
    w.settle().await;
    let stats = service::user_stats(&w.deps, "alice", "child-t").await.unwrap();
    assert_eq!(stats.last_conversation_at, Some(second.start_time));
    service::delete_conversation(&w.deps, "alice", &second.conversation_id)
        .await
        .unwrap();
    let stats = service::user_stats(&w.deps, "alice", "child-t").await.unwrap();
    assert_eq!(
        (stats.conversations, stats.messages, stats.last_conversation_at),
        (1, 1, Some(first.start_time))
    );
    service::delete_conversation(&w.deps, "alice", &first.conversation_id)
        .await
        .unwrap();
    let stats = service::user_stats(&w.deps, "alice", "child-t").await.unwrap();
    assert_eq!(
        (
            stats.conversations,
            stats.messages,
            stats.total_seconds,
            stats.last_conversation_at
        ),
        (0, 0, 0, None)
    );
}

/// Every page of a listing, following its cursors.
async fn list_all(w: &World, owner: &str, p: ListParams<'_>) -> Vec<String> {
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let page = reads::list_conversations(
            &w.deps,
            owner,
            ListParams {
                cursor: cursor.as_deref(),
                ..p
            },
        )
        .await
        .unwrap();
        got.extend(page.conversations.into_iter().map(|c| c.conversation_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return got,
        }
    }
    panic!("a listing never ended");
}

async fn the_owner_lists_conversations_by_any_filter(w: World) {
    // (user, agent, what happens to it), one every 10 seconds.
    let plan = [
        ("child-1", "toy-1", "flag+end"),
        ("child-2", "toy-2", ""),
        ("child-1", "toy-2", "flag"),
        ("child-3", "toy-1", "end+archive"),
        ("child-2", "toy-1", "erase"),
        ("child-3", "toy-2", "end"),
    ];
    let mut made: Vec<Conversation> = Vec::new();
    for (user, agent, what) in plan {
        let (c, _) = service::create_conversation(&w.deps, "alice", create_req(user, agent))
            .await
            .unwrap();
        let id = c.conversation_id.clone();
        if what.contains("flag") {
            service::append_messages(&w.deps, "alice", &id, one("user", "this is shit", None), None)
                .await
                .unwrap();
        }
        if what.contains("end") {
            service::end_session(&w.deps, "alice", &id, None).await.unwrap();
        }
        w.settle().await;
        if what.contains("archive") {
            let archive = PatchConversationRequest {
                status: Some("archived".into()),
                ..Default::default()
            };
            service::patch_conversation(&w.deps, "alice", &id, archive)
                .await
                .unwrap();
        }
        if what.contains("erase") {
            service::delete_conversation(&w.deps, "alice", &id).await.unwrap();
        } else {
            made.push(w.conversation(&id).await);
        }
        w.clock.advance(Duration::seconds(10));
    }
    // Another owner's conversation with the same user and agent never shows.
    service::create_conversation(&w.deps, "bob", create_req("child-1", "toy-1"))
        .await
        .unwrap();
    made.reverse();
    let statuses: Vec<ConversationStatus> = made.iter().map(|c| c.status).collect();
    assert!(statuses.contains(&ConversationStatus::Archived) && statuses.contains(&ConversationStatus::Active));
    assert_eq!(made.iter().filter(|c| c.flagged).count(), 2);

    for user in [None, Some("child-1"), Some("child-3")] {
        for agent in [None, Some("toy-2")] {
            for status in [None, Some("active"), Some("ended"), Some("archived")] {
                for flagged in [None, Some("true"), Some("false")] {
                    let want: Vec<String> = made
                        .iter()
                        .filter(|c| {
                            user.is_none_or(|u| c.user_id == u)
                                && agent.is_none_or(|a| c.agent_id == a)
                                && status.is_none_or(|s| c.status.as_str() == s)
                                && flagged.is_none_or(|f| c.flagged == (f == "true"))
                        })
                        .map(|c| c.conversation_id.clone())
                        .collect();
                    for limit in ["1", "2", "50"] {
                        let p = ListParams {
                            user_id: user,
                            agent_id: agent,
                            status,
                            flagged,
                            limit: Some(limit),
                            ..Default::default()
                        };
                        let got = list_all(&w, "alice", p).await;
                        assert_eq!(
                            got, want,
                            "user {user:?} agent {agent:?} status {status:?} flagged {flagged:?} limit {limit}"
                        );
                    }
                }
            }
        }
    }
    // A page of the unfiltered list holds what it says and points on.
    let first = reads::list_conversations(
        &w.deps,
        "alice",
        ListParams {
            limit: Some("2"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(first.conversations.len(), 2);
    let cursor = first.next_cursor.expect("more than two");
    // A cursor belongs to its list.
    let err = reads::list_conversations(
        &w.deps,
        "alice",
        ListParams {
            agent_id: Some("toy-2"),
            cursor: Some(&cursor),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code(err), ErrorCode::InvalidCursor);
    let err = reads::list_conversations(
        &w.deps,
        "bob",
        ListParams {
            cursor: Some(&cursor),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code(err), ErrorCode::InvalidCursor);
    for bad in [
        ListParams {
            status: Some("open"),
            ..Default::default()
        },
        ListParams {
            flagged: Some("yes"),
            ..Default::default()
        },
        ListParams {
            agent_id: Some("a#b"),
            ..Default::default()
        },
        ListParams {
            user_id: Some(""),
            ..Default::default()
        },
    ] {
        let err = reads::list_conversations(&w.deps, "alice", bad).await.unwrap_err();
        assert_eq!(code(err), ErrorCode::ValidationFailed);
    }
}

fn body(messages: serde_json::Value) -> AppendRequest {
    serde_json::from_value(serde_json::json!({ "messages": messages })).unwrap()
}

async fn tool_calls_round_trip_and_the_context_pairs_them(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    let call = serde_json::json!([{"id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"}]);
    service::append_messages(
        &w.deps,
        "alice",
        &id,
        body(serde_json::json!([
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "toolCalls": call},
            {"role": "tool", "content": "18C", "toolCallId": "call_1"},
            {"role": "assistant", "content": "It is 18C."},
        ])),
        None,
    )
    .await
    .unwrap();
    w.settle().await;
    let stored = w.all_messages(&id).await;
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[1].content, "");
    assert_eq!(serde_json::to_value(&stored[1].tool_calls).unwrap(), call);
    assert_eq!(stored[2].tool_call_id.as_deref(), Some("call_1"));
    assert!(stored[0].tool_calls.is_empty() && stored[0].tool_call_id.is_none());
    let roles = |n: &str| {
        let deps = w.deps.clone();
        let id = id.clone();
        let n = n.to_string();
        async move {
            reads::context(&deps, "alice", &id, Some(&n), None, None)
                .await
                .unwrap()
                .messages
        }
    };
    let all = roles("4").await;
    assert_eq!(all.len(), 4);
    assert_eq!(all[1].tool_calls, stored[1].tool_calls);
    assert_eq!(all[2].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(roles("3").await.len(), 3);
    // The newest two hold the tool's result but not its call: the result
    // is left out, never sent without its call.
    let two = roles("2").await;
    assert_eq!(
        two.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["It is 18C."]
    );
    // Nor a call without its result once something follows it.
    service::append_messages(
        &w.deps,
        "alice",
        &id,
        body(serde_json::json!([
            {"role": "assistant", "toolCalls": [{"id": "lost", "name": "weather", "arguments": "{}"}]},
            {"role": "user", "content": "never mind"},
        ])),
        None,
    )
    .await
    .unwrap();
    w.settle().await;
    let tail = roles("3").await;
    assert_eq!(
        tail.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["It is 18C.", "never mind"]
    );
    let all = roles("50").await;
    assert!(all.iter().all(|m| m.tool_calls.iter().all(|c| c.id != "lost")));

    // The arguments are screened with the content.
    let answer = service::append_messages(
        &w.deps,
        "alice",
        &id,
        body(serde_json::json!([
            {"role": "assistant", "toolCalls": [{"id": "c2", "name": "say", "arguments": "{\"text\":\"this is shit\"}"}]}
        ])),
        None,
    )
    .await
    .unwrap();
    assert_eq!(answer.messages[0].safety.action, SafetyAction::Flagged);

    for (messages, field, code_) in [
        (
            serde_json::json!([{"role": "user", "content": "x", "toolCalls": call}]),
            "messages[0].toolCalls",
            ErrorCode::ValidationFailed,
        ),
        (
            serde_json::json!([{"role": "assistant", "content": "x", "toolCallId": "call_1"}]),
            "messages[0].toolCallId",
            ErrorCode::ValidationFailed,
        ),
        (
            serde_json::json!([{"role": "assistant", "content": "  "}]),
            "messages[0].content",
            ErrorCode::ValidationFailed,
        ),
        (
            serde_json::json!([{"role": "assistant", "toolCalls": []}]),
            "messages[0].content",
            ErrorCode::ValidationFailed,
        ),
        (
            serde_json::json!([{"role": "assistant", "toolCalls": [{"id": "a", "name": " ", "arguments": "{}"}]}]),
            "messages[0].toolCalls[0].name",
            ErrorCode::ValidationFailed,
        ),
        (
            serde_json::json!([{"role": "assistant", "content": "x".repeat(9000), "toolCalls": [{"id": "a", "name": "f", "arguments": "y".repeat(9000)}]}]),
            "messages[0].toolCalls",
            ErrorCode::PayloadTooLarge,
        ),
    ] {
        let err = service::append_messages(&w.deps, "alice", &id, body(messages.clone()), None)
            .await
            .unwrap_err();
        match err {
            DomainError::Validation(v) => assert_eq!((v.code, v.field.as_deref()), (code_, Some(field)), "{messages}"),
            other => panic!("{messages}: {other:?}"),
        }
    }
}

async fn the_context_fits_a_token_budget(w: World) {
    use convo_domain::tokens::{REPLY_PRIMING, Tokenizer};
    let id = new_conversation(&w, "alice").await.conversation_id;
    let texts: Vec<String> = (0..12)
        .map(|i| {
            format!(
                "Turn {i}: {}",
                "tell me more about the moon and its craters ".repeat(i % 4 + 1)
            )
        })
        .collect();
    for pair in texts.chunks(2) {
        service::append_messages(&w.deps, "alice", &id, exchange(&pair[0], &pair[1]), None)
            .await
            .unwrap();
    }
    w.settle().await;
    let read = |budget: usize, tokenizer: &'static str, max_messages: Option<&'static str>| {
        let deps = w.deps.clone();
        let id = id.clone();
        async move {
            let b = budget.to_string();
            let p = service::ContextParams {
                max_tokens: Some(&b),
                tokenizer: Some(tokenizer),
                max_messages,
                ..Default::default()
            };
            reads::context_with(&deps, "alice", &id, p).await.unwrap()
        }
    };
    for (tokenizer, name) in [
        (Tokenizer::O200kBase, "o200k_base"),
        (Tokenizer::Cl100kBase, "cl100k_base"),
    ] {
        let full = reads::context(&w.deps, "alice", &id, Some("12"), None, None)
            .await
            .unwrap()
            .messages;
        let costs: Vec<usize> = full.iter().map(|m| tokenizer.message(m)).collect();
        let total: usize = costs.iter().sum::<usize>() + REPLY_PRIMING;
        for budget in [
            1,
            REPLY_PRIMING + costs[11],
            REPLY_PRIMING + costs[11] - 1,
            total / 2,
            total - 1,
            total,
            total * 2,
        ] {
            // The newest messages whose costs, with the priming, fit.
            let mut used = REPLY_PRIMING;
            let mut keep = 0;
            for c in costs.iter().rev() {
                if used + c > budget {
                    break;
                }
                used += c;
                keep += 1;
            }
            let got = read(budget, name, None).await;
            assert_eq!(got.messages, full[12 - keep..], "{name} budget {budget}");
            assert_eq!(got.tokens, Some(used), "{name} budget {budget}");
            assert!(used <= budget.max(REPLY_PRIMING));
        }
        // Combined with maxMessages: the tighter bound wins.
        let got = read(total * 2, name, Some("3")).await;
        assert_eq!(got.messages, full[9..]);
    }
    for (raw, field) in [("0", "maxTokens"), ("x", "maxTokens")] {
        let p = service::ContextParams {
            max_tokens: Some(raw),
            ..Default::default()
        };
        let err = reads::context_with(&w.deps, "alice", &id, p).await.unwrap_err();
        assert_eq!(code(err), ErrorCode::ValidationFailed, "{field}");
    }
    let p = service::ContextParams {
        max_tokens: Some("100"),
        tokenizer: Some("gpt2"),
        ..Default::default()
    };
    assert_eq!(
        code(reads::context_with(&w.deps, "alice", &id, p).await.unwrap_err()),
        ErrorCode::ValidationFailed
    );
}

async fn visible(w: &World, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = reads::list_messages(
            &w.deps,
            "alice",
            id,
            MessageParams {
                cursor: cursor.as_deref(),
                limit: Some("2"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        out.extend(page.messages.into_iter().map(|m| m.content));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

async fn messages_are_removed_in_order_and_leave_tombstones(w: World) {
    let id = new_conversation(&w, "alice").await.conversation_id;
    for (u, a) in [
        ("my number is 555-0100", "noted"),
        ("tell me a story", "once upon a time"),
        ("more", "the end"),
    ] {
        service::append_messages(&w.deps, "alice", &id, exchange(u, a), None)
            .await
            .unwrap();
    }
    w.settle().await;
    let stored = w.all_messages(&id).await;
    // One message: answered with what it was, then a tombstone.
    let answer = service::remove_message(&w.deps, "alice", &id, &stored[3].message_id, None)
        .await
        .unwrap();
    assert_eq!(answer.message, stored[3]);
    w.settle().await;
    assert_eq!(
        visible(&w, &id).await,
        ["my number is 555-0100", "noted", "tell me a story", "more", "the end"]
    );
    let after = w.all_messages(&id).await;
    assert_eq!(after.len(), 6, "the index stays gapless");
    assert!(after[3].removed && after[3].content.is_empty() && after[3].message_id == stored[3].message_id);
    assert_eq!(w.conversation(&id).await.message_count, 6);
    let (_, seen) = reads::get_conversation_after(&w.deps, "alice", &id, Some(&answer.command_id))
        .await
        .unwrap();
    assert_eq!(seen, Some(AfterStatus::Applied));
    let ctx = reads::context(&w.deps, "alice", &id, Some("50"), None, None)
        .await
        .unwrap();
    assert!(ctx.messages.iter().all(|m| m.content != "once upon a time"));
    // Gone, unknown and malformed ids are all "no such message".
    for missing in [stored[3].message_id.as_str(), "01JD0000000000000000000000", "nope"] {
        let err = service::remove_message(&w.deps, "alice", &id, missing, None)
            .await
            .unwrap_err();
        assert_eq!(code(err), ErrorCode::MessageNotFound, "{missing}");
    }
    let err = service::remove_message(&w.deps, "bob", &id, &stored[0].message_id, None)
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::ConversationNotFound);
    // The first message: its preview goes from every chunk and the
    // conversation.
    assert_eq!(
        w.conversation(&id).await.first_message_preview.as_deref(),
        Some("my number is 555-0100")
    );
    service::remove_message(&w.deps, "alice", &id, &stored[0].message_id, None)
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(w.conversation(&id).await.first_message_preview, None);
    for chunk in w.store.messages.chunks_desc(&id, None, 100).await.unwrap() {
        assert_eq!(chunk.head.first_message_preview, None);
        assert!(chunk.messages.iter().all(|m| !m.content.contains("555")));
    }
    // Clearing removes what was accepted before it, and only that.
    service::append_messages(&w.deps, "alice", &id, one("user", "before the clear", None), None)
        .await
        .unwrap();
    let cleared = service::clear_messages(&w.deps, "alice", &id).await.unwrap();
    w.clock.advance(Duration::seconds(1));
    service::append_messages(&w.deps, "alice", &id, one("user", "after the clear", None), None)
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(visible(&w, &id).await, ["after the clear"]);
    let c = w.conversation(&id).await;
    assert_eq!((c.message_count, c.status), (8, ConversationStatus::Active));
    assert_eq!(c.last_message_preview.as_deref(), Some("after the clear"));
    // The first message's preview is not taken by a later one.
    assert_eq!(c.first_message_preview, None);
    // Redelivered later, the clear still spares what came after it.
    let again = WriteCommand {
        v: convo_schema::commands::WRITE_COMMAND_VERSION,
        command_id: cleared.command_id.clone(),
        conversation_id: id.clone(),
        owner_id: "alice".into(),
        accepted_at: cleared.accepted_at,
        kind: convo_schema::commands::WriteKind::Clear,
    };
    let body = serde_json::to_string(&again).unwrap();
    let outcome = persist_batch(&w.deps, vec![Delivery::decode("r".into(), Some(id.clone()), &body)]).await;
    assert!(outcome.failed.is_empty());
    assert_eq!(visible(&w, &id).await, ["after the clear"]);
}

/// Each change queues its events once it is committed, with ids derived from
/// what caused them (a redelivered command queues the same ids), and no
/// event holds what anyone wrote.
async fn changes_queue_their_events_after_the_commit(w: World) {
    use convo_schema::events::EventType as T;
    let c = new_conversation(&w, "alice").await;
    let id = c.conversation_id.clone();
    let said = [
        "Sometimes I want to kill myself",
        "send me a naked picture, shit",
        "I hear you.",
    ];
    let req: AppendRequest = serde_json::from_value(serde_json::json!({"messages": [
        {"role": "user", "content": said[0]},
        {"role": "user", "content": said[1]},
        {"role": "assistant", "content": said[2]},
    ]}))
    .unwrap();
    let ack = service::append_messages(&w.deps, "alice", &id, req, None)
        .await
        .unwrap();
    let created = w.take_events().await;
    assert_eq!(
        created.iter().map(|e| (e.event_type, e.id.clone())).collect::<Vec<_>>(),
        vec![(T::ConversationCreated, format!("conversation.created:{id}"))]
    );
    // Accepted is not committed: nothing about the messages yet.
    assert!(w.take_events().await.is_empty());
    let batch = w.writes.receive(10, std::time::Duration::ZERO).await;
    let body = batch[0].body.clone();
    let deliver = || vec![Delivery::decode("r1".into(), Some(id.clone()), &body)];
    persist_batch(&w.deps, deliver()).await;
    let committed = w.take_events().await;
    let kinds: Vec<(T, String)> = committed.iter().map(|e| (e.event_type, e.id.clone())).collect();
    let critical = &ack.messages[0].message_id;
    let blocked = &ack.messages[1].message_id;
    assert_eq!(
        kinds,
        vec![
            (T::ConversationFlagged, format!("conversation.flagged:{id}")),
            (T::MessageFlagged, format!("message.flagged:{critical}")),
            (T::SafetyCritical, format!("safety.critical:{critical}")),
            (T::MessageBlocked, format!("message.blocked:{blocked}")),
        ]
    );
    let critical_event = &committed[2];
    assert_eq!(critical_event.subject, id);
    assert_eq!(critical_event.data.message_index, Some(0));
    assert_eq!(critical_event.data.severity, Some(Severity::Critical));
    assert_eq!(critical_event.data.categories, vec!["self_harm".to_string()]);
    // The child's name is in no event (it is sealed in the store).
    assert_eq!(critical_event.data.user_name, None);
    assert_eq!(critical_event.data.agent_name.as_deref(), Some("Teddy"));
    // Redelivered (a crash after the commit, before the queueing): the same
    // ids again, so a consumer drops them.
    persist_batch(&w.deps, deliver()).await;
    w.writes.ack(batch[0].receipt).await.unwrap();
    let again: Vec<String> = w.take_events().await.into_iter().map(|e| e.id).collect();
    assert_eq!(again, kinds.iter().map(|(_, i)| i.clone()).collect::<Vec<_>>());
    // The end, a review, the title and the erasure.
    service::end_session(&w.deps, "alice", &id, None).await.unwrap();
    w.settle().await;
    service::review_conversation(
        &w.deps,
        "alice",
        &id,
        serde_json::from_value(serde_json::json!({"flagStatus": "escalated", "note": "called"})).unwrap(),
    )
    .await
    .unwrap();
    let title = w.conversation(&id).await.title.expect("a generated title");
    service::delete_conversation(&w.deps, "alice", &id).await.unwrap();
    w.settle().await;
    let rest = w.take_events().await;
    let types: Vec<T> = rest.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        vec![
            T::SessionEnded,
            T::TitleGenerated,
            T::ConversationReviewed,
            T::ConversationErased
        ]
    );
    assert_eq!(rest[0].data.end_reason, Some(convo_schema::commands::EndReason::Client));
    assert_eq!(rest[0].data.message_count, Some(3));
    assert_eq!(rest[2].data.flag_status, Some(FlagStatus::Escalated));
    assert_eq!(rest[2].data.has_note, Some(true));
    assert_eq!(rest[3].id, format!("conversation.erased:{id}"));
    assert_eq!(rest[3].data.user_name, None);
    // A user's erasure that erases something is announced; one that finds
    // nothing left (a retry) is not.
    let user = c.user_id.clone();
    let other = service::create_conversation(&w.deps, "alice", create_req(&user, "toy-2"))
        .await
        .unwrap()
        .0;
    assert_eq!(w.take_events().await.len(), 1, "its conversation.created");
    let report = w.erase_user("alice", &user).await;
    assert_eq!(report.conversations_deleted, 1);
    let erased = w.take_events().await;
    let mut got: Vec<(T, &str)> = erased.iter().map(|e| (e.event_type, e.subject.as_str())).collect();
    got.sort_by_key(|(t, _)| format!("{t:?}"));
    assert_eq!(
        got,
        vec![
            (T::ConversationErased, other.conversation_id.as_str()),
            (T::UserErased, user.as_str()),
        ]
    );
    let announced = erased.iter().find(|e| e.event_type == T::UserErased).unwrap();
    assert_eq!(announced.data.conversations_deleted, Some(1));
    // The erasure's id names the announcement: a repeat is recognisable.
    assert!(announced.id.contains(&report.erasure_id), "{}", announced.id);
    assert_eq!(w.erase_user("alice", &user).await.conversations_deleted, 0);
    assert!(w.take_events().await.is_empty());
    // Never what anyone wrote, nor the title made of it, nor the note.
    for e in committed.iter().chain(&rest).chain(&created).chain(&erased) {
        let json = serde_json::to_string(e).unwrap();
        for s in said.iter().copied().chain([title.as_str(), "called"]) {
            assert!(!json.contains(s), "{s:?} in {json}");
        }
    }
}

/// An events queue that refuses the next `n` sends.
struct Refusing {
    inner: std::sync::Arc<dyn EventQueue>,
    refuse: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl EventQueue for Refusing {
    async fn send_events(&self, events: &[convo_schema::events::CloudEvent]) -> Result<(), QueueError> {
        use std::sync::atomic::Ordering;
        if self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(QueueError::Unavailable("refused by the test".into()));
        }
        self.inner.send_events(events).await
    }
    async fn health(&self) -> ComponentHealth {
        self.inner.health().await
    }
}

/// A commit whose events cannot be queued fails its records (the commit
/// stands); the redelivery queues them, with the same ids. And a first flag
/// written before a chunk that failed is announced by the retry that
/// stores the chunk.
async fn events_refused_or_cut_off_by_a_crash_are_queued_by_the_retry(w: World) {
    use convo_schema::events::EventType as T;
    let mut deps = w.deps.clone();
    deps.events = std::sync::Arc::new(Refusing {
        inner: w.deps.events.clone(),
        refuse: std::sync::atomic::AtomicUsize::new(1),
    });
    let c = new_conversation(&w, "alice").await;
    let id = c.conversation_id.clone();
    w.take_events().await;
    let req: AppendRequest = serde_json::from_value(
        serde_json::json!({"messages": [{"role": "user", "content": "Sometimes I want to kill myself"}]}),
    )
    .unwrap();
    service::append_messages(&deps, "alice", &id, req, None).await.unwrap();
    let batch = w.writes.receive(10, std::time::Duration::ZERO).await;
    let body = batch[0].body.clone();
    let deliver = || vec![Delivery::decode("r1".into(), Some(id.clone()), &body)];
    let first = persist_batch(&deps, deliver()).await;
    assert_eq!(first.failed, vec!["r1".to_string()], "the record is retried");
    assert_eq!(w.all_messages(&id).await.len(), 1, "the commit stands");
    assert!(w.take_events().await.is_empty());
    let again = persist_batch(&deps, deliver()).await;
    assert!(again.failed.is_empty());
    w.writes.ack(batch[0].receipt).await.unwrap();
    let events = w.take_events().await;
    let types: Vec<T> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        vec![T::ConversationFlagged, T::MessageFlagged, T::SafetyCritical]
    );
    assert!(
        events
            .iter()
            .all(|e| e.subject == id && e.data.severity == Some(Severity::Critical))
    );

    // The conversation item (the first flag) written, then the chunk's write
    // fails: the retry stores the chunk and announces the flag too.
    let c2 = new_conversation(&w, "alice").await;
    let id2 = c2.conversation_id.clone();
    w.take_events().await;
    let req: AppendRequest = serde_json::from_value(
        serde_json::json!({"messages": [{"role": "user", "content": "I will punch you in the face"}]}),
    )
    .unwrap();
    service::append_messages(&w.deps, "alice", &id2, req, None)
        .await
        .unwrap();
    w.faulty.crash_at(Step::Chunk, 0);
    let batch = w.writes.receive(10, std::time::Duration::ZERO).await;
    let body = batch[0].body.clone();
    let deliver = || vec![Delivery::decode("r2".into(), Some(id2.clone()), &body)];
    assert_eq!(persist_batch(&w.deps, deliver()).await.failed.len(), 1);
    assert!(
        w.conversation(&id2).await.flagged,
        "the flag was written before the chunk"
    );
    assert!(w.take_events().await.is_empty());
    assert!(persist_batch(&w.deps, deliver()).await.failed.is_empty());
    let types: Vec<T> = w.take_events().await.iter().map(|e| e.event_type).collect();
    assert_eq!(types, vec![T::ConversationFlagged, T::MessageFlagged]);
}

contract! {
    changes_queue_their_events_after_the_commit,
    events_refused_or_cut_off_by_a_crash_are_queued_by_the_retry,
    messages_are_removed_in_order_and_leave_tombstones,
    tool_calls_round_trip_and_the_context_pairs_them,
    the_context_fits_a_token_budget,
    the_owner_lists_conversations_by_any_filter,
    after_an_erasure_the_totals_read_as_if_it_never_existed,
    a_retry_after_a_failed_send_sends_the_same_command_once,
    personal_data_is_masked_when_the_conversation_asks,
    a_conversation_expires_whole_after_its_retention,
    erasure_leaves_nothing_of_the_user,
    flagged_conversations_are_reviewed_from_a_list,
    flagged_messages_list_on_their_own,
    appends_over_the_rate_limit_are_refused_and_enqueue_nothing(convo_domain::Config {
        appends_per_minute: 3,
        ..convo_domain::Config::default()
    }),
    a_write_accepted_before_the_end_applies_is_kept_and_counted,
    a_window_finds_backfilled_messages,
    create_sets_the_seed_fields,
    the_read_routes_find_a_new_conversation_at_once,
    sms_numbers_are_normalized_and_bad_ones_refused,
    reuse_active_returns_one_conversation_under_a_race,
    reuse_active_never_hands_out_an_ended_or_erasing_conversation,
    a_users_context_spans_their_conversations,
    append_answers_before_storing_and_the_worker_assigns_indexes,
    a_redelivered_command_changes_nothing,
    a_repeated_external_id_is_stored_once,
    failed_records_are_reported_exactly_and_retried_in_order,
    a_record_that_cannot_be_applied_holds_back_the_rest_of_its_group,
    the_last_conversation_is_a_max_under_out_of_order_ends,
    a_removal_without_a_totals_row_creates_none,
    an_erasure_reads_past_a_lagging_index,
    an_erasure_job_survives_crashes_and_counts_once,
    an_erasure_waits_for_a_lagging_index_to_settle,
    an_erasure_report_is_private_and_steps_run_once,
    a_users_export_holds_everything_of_theirs_in_pages,
    an_export_resumes_across_starts_and_erasures,
    a_claim_in_the_old_form_does_not_block_its_own_message,
    a_newer_command_format_is_not_overtaken_by_an_end,
    end_sets_duration_stats_and_a_generated_title,
    an_end_never_overtakes_messages_accepted_before_it,
    a_user_title_is_never_overwritten,
    long_lived_sessions_do_not_hide_idle_ones_from_the_sweeper(convo_domain::Config {
            appends_per_minute: 0,
            sweep_limit: 2,
            ..convo_domain::Config::default()
        }),
    a_title_is_requested_after_the_first_exchanges(convo_domain::Config {
            early_title_after_messages: 4,
            ..convo_domain::Config::default()
        }),
    patch_merges_metadata_and_archives_only_ended_conversations,
    another_owner_sees_exactly_what_a_missing_id_shows,
    context_is_recent_oldest_first_and_leaves_blocked_messages_out,
    messages_page_by_cursor_in_both_orders_and_by_time,
    a_tampered_or_foreign_cursor_is_refused,
    conversations_list_newest_first_with_pages,
    the_sweeper_ends_idle_sessions_only,
    an_idempotency_key_replays_the_first_answer,
    concurrent_writers_get_gapless_indexes,
    an_append_too_large_for_one_queue_message_is_refused,
}
