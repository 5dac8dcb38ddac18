//! The worker's write protocol (one chunk write per exchange, no
//! transaction on the append path) on every store: the writes an exchange
//! makes, a crash at each point of a commit, redelivered prefixes and
//! lone records, two workers holding one group, and reads that wait for
//! their own write with `after=`.

use convo_contract_tests::*;
use convo_domain::persist::{Delivery, persist_batch};
use convo_domain::ports::Clock;
use convo_domain::service::{self, MessageParams};
use convo_schema::api::*;
use convo_schema::*;

fn create_req(user: &str) -> CreateConversationRequest {
    serde_json::from_value(serde_json::json!({"userId": user, "agentId": "toy-1", "userName": "Mia"})).unwrap()
}

fn append(messages: serde_json::Value) -> AppendRequest {
    serde_json::from_value(serde_json::json!({ "messages": messages })).unwrap()
}

fn exchange(i: usize) -> AppendRequest {
    append(serde_json::json!([
        {"role": "user", "content": format!("question {i}")},
        {"role": "assistant", "content": format!("answer {i}")}
    ]))
}

async fn conversation(w: &World, user: &str) -> String {
    service::create_conversation(&w.deps, "alice", create_req(user))
        .await
        .unwrap()
        .0
        .conversation_id
}

/// What the store holds of a conversation, as a reader sees it.
async fn contents(w: &World, id: &str) -> Vec<(u64, String)> {
    w.all_messages(id)
        .await
        .into_iter()
        .map(|m| (m.message_index, m.content))
        .collect()
}

async fn an_exchange_is_one_chunk_write_and_nothing_else(w: World) {
    let id = conversation(&w, "child-1").await;
    let accepted = service::append_messages(&w.deps, "alice", &id, exchange(0), None)
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(w.faulty.calls(Step::Chunk), 1);
    assert_eq!(w.faulty.calls(Step::Meta), 0, "the conversation item is not rewritten");
    assert_eq!(w.faulty.calls(Step::Claims) + w.faulty.calls(Step::Head), 0);
    let record = w.store.conversations.get_conversation(&id).await.unwrap().unwrap();
    assert_eq!(record.version, 1);
    assert_eq!(record.head_chunk, Some(0));
    assert!(record.has_applied(&accepted.command_id));
    let c = record.conversation;
    assert_eq!(c.message_count, 2);
    assert_eq!(c.first_message_preview.as_deref(), Some("question 0"));
    assert_eq!(c.last_message_preview.as_deref(), Some("answer 0"));
    // The next exchange is the next chunk, keyed by its first index.
    service::append_messages(&w.deps, "alice", &id, exchange(1), None)
        .await
        .unwrap();
    w.settle().await;
    let record = w.store.conversations.get_conversation(&id).await.unwrap().unwrap();
    assert_eq!((record.head_chunk, record.conversation.message_count), (Some(2), 4));
    assert_eq!(record.conversation.first_message_preview.as_deref(), Some("question 0"));
    assert_eq!(w.faulty.calls(Step::Chunk), 2);
}

/// A commit that touches every write: an externalId claim, a flagged
/// message (its pointer and the conversation's first flag), and the end
/// with the user's totals.
async fn full_commit(w: &World, user: &str) -> String {
    let id = conversation(w, user).await;
    let messages = serde_json::json!([
        {"role": "user", "content": "you are so stupid", "externalId": format!("{user}-SM1")},
        {"role": "assistant", "content": "Let's be kind to each other."}
    ]);
    service::append_messages(&w.deps, "alice", &id, append(messages), None)
        .await
        .unwrap();
    service::end_session(&w.deps, "alice", &id, None).await.unwrap();
    id
}

async fn assert_committed_once(w: &World, id: &str, user: &str) {
    let got = contents(w, id).await;
    assert_eq!(
        got,
        [
            (0, "you are so stupid".to_string()),
            (1, "Let's be kind to each other.".to_string())
        ],
        "{user}"
    );
    let c = w.conversation(id).await;
    assert_eq!(
        (c.status, c.message_count, c.flagged),
        (ConversationStatus::Ended, 2, true),
        "{user}"
    );
    assert_eq!(c.flag_status, Some(FlagStatus::Unreviewed), "{user}");
    let stats = service::user_stats(&w.deps, "alice", user).await.unwrap();
    assert_eq!((stats.conversations, stats.messages), (1, 2), "{user}: counted once");
    let flagged = reads::list_messages(
        &w.deps,
        "alice",
        id,
        MessageParams {
            flagged: Some("true"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(flagged.messages.len(), 1, "{user}");
    assert_eq!(flagged.messages[0].message_index, 0, "{user}");
    let claimed = w
        .store
        .messages
        .existing_external_ids(id, &[format!("{user}-SM1")])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{user}");
}

async fn a_crash_at_any_write_of_a_commit_is_finished_by_redelivery(w: World) {
    // The clean run first, as the reference.
    let id = full_commit(&w, "child-clean").await;
    w.settle().await;
    assert_committed_once(&w, &id, "child-clean").await;
    for (step, user) in [
        (Step::Claims, "child-claims"),
        (Step::FlagPointers, "child-pointers"),
        (Step::Meta, "child-meta"),
        (Step::Chunk, "child-chunk"),
    ] {
        let id = full_commit(&w, user).await;
        w.faulty.crash_at(step, 0);
        let (_, outcome) = w.persist_once().await.unwrap();
        assert_eq!(outcome.failed.len(), 2, "{step:?}: both records are retried");
        w.settle().await;
        assert_committed_once(&w, &id, user).await;
    }
}

async fn a_crash_between_the_chunks_of_one_commit_is_finished(w: World) {
    let id = conversation(&w, "child-mid").await;
    // Three appends of about 1.5 KB each: one batch, three chunks.
    let big =
        |i: usize| append(serde_json::json!([{"role": "user", "content": format!("{i} {}", "word ".repeat(300))}]));
    for i in 0..3 {
        service::append_messages(&w.deps, "alice", &id, big(i), None)
            .await
            .unwrap();
    }
    w.faulty.crash_at(Step::Chunk, 1);
    let (ids, outcome) = w.persist_once().await.unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(outcome.failed.len(), 3, "the group is retried whole, in order");
    // The first chunk stands: the conversation reads as its prefix.
    assert_eq!(w.conversation(&id).await.message_count, 1);
    w.settle().await;
    let got: Vec<u64> = contents(&w, &id).await.into_iter().map(|(i, _)| i).collect();
    assert_eq!(got, [0, 1, 2]);
    let texts: Vec<String> = contents(&w, &id).await.into_iter().map(|(_, c)| c).collect();
    for (i, t) in texts.iter().enumerate() {
        assert!(t.starts_with(&format!("{i} ")), "{i}: stored once, in order");
    }
}

async fn redelivered_prefixes_and_lone_records_change_nothing(w: World) {
    let id = conversation(&w, "child-r").await;
    for i in 0..3 {
        service::append_messages(&w.deps, "alice", &id, exchange(i), None)
            .await
            .unwrap();
    }
    let batch = w.writes.receive(10, std::time::Duration::ZERO).await;
    let deliveries = |range: std::ops::Range<usize>| -> Vec<Delivery> {
        batch[range]
            .iter()
            .map(|r| Delivery::decode(r.message_id.clone(), r.group.clone(), &r.body))
            .collect()
    };
    let first = persist_batch(&w.deps, deliveries(0..3)).await;
    assert_eq!(first.messages_persisted, 6);
    let before = w.store.conversations.get_conversation(&id).await.unwrap().unwrap();
    // The whole batch again, a prefix, and the first record alone after its
    // later neighbours were deleted from the queue.
    for range in [0..3, 0..2, 0..1, 1..2] {
        let again = persist_batch(&w.deps, deliveries(range.clone())).await;
        assert!(again.failed.is_empty(), "{range:?}");
        assert_eq!(again.messages_persisted, 0, "{range:?}");
        assert_eq!(
            w.store.conversations.get_conversation(&id).await.unwrap().unwrap(),
            before,
            "{range:?}"
        );
    }
    assert_eq!(contents(&w, &id).await.len(), 6);
    for r in &batch {
        w.writes.ack(r.receipt).await.unwrap();
    }
    // A later write goes on from there.
    service::append_messages(&w.deps, "alice", &id, exchange(3), None)
        .await
        .unwrap();
    w.settle().await;
    let got: Vec<u64> = contents(&w, &id).await.into_iter().map(|(i, _)| i).collect();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
}

async fn two_workers_holding_one_group_store_it_once(w: World) {
    let id = conversation(&w, "child-two").await;
    for i in 0..4 {
        service::append_messages(&w.deps, "alice", &id, exchange(i), None)
            .await
            .unwrap();
    }
    let batch = w.writes.receive(10, std::time::Duration::ZERO).await;
    let deliveries = || -> Vec<Delivery> {
        batch
            .iter()
            .map(|r| Delivery::decode(r.message_id.clone(), r.group.clone(), &r.body))
            .collect()
    };
    // A visibility timeout handed the same records to a second worker while
    // the first still held them: both run at once.
    let (a, b) = futures::join!(
        persist_batch(&w.deps, deliveries()),
        persist_batch(&w.deps, deliveries())
    );
    assert!(a.failed.is_empty() && b.failed.is_empty(), "{a:?} {b:?}");
    let got: Vec<(u64, String)> = contents(&w, &id).await;
    let want: Vec<(u64, String)> = (0..4)
        .flat_map(|i| [format!("question {i}"), format!("answer {i}")])
        .enumerate()
        .map(|(i, c)| (i as u64, c))
        .collect();
    assert_eq!(got, want);
    assert_eq!(w.conversation(&id).await.message_count, 8);
}

async fn a_read_after_its_write_waits_for_it(w: World) {
    let id = conversation(&w, "child-ryw").await;
    let mut turns = Vec::new();
    for turn in 0..8 {
        let accepted = service::append_messages(&w.deps, "alice", &id, exchange(turn), None)
            .await
            .unwrap();
        // The worker stores it a moment later, while the read waits.
        let worker = async {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            w.settle().await;
        };
        let read = reads::context(&w.deps, "alice", &id, Some("50"), None, Some(&accepted.command_id));
        let (ctx, ()) = futures::join!(read, worker);
        let ctx = ctx.unwrap();
        assert_eq!(ctx.after, Some(AfterStatus::Applied), "turn {turn}");
        turns.push(format!("question {turn}"));
        let users: Vec<&str> = ctx
            .messages
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(users, turns, "turn {turn}: every earlier turn and this one");
        // Once applied, the other reads answer at once, and say so.
        let (c, status) = reads::get_conversation_after(&w.deps, "alice", &id, Some(&accepted.command_id))
            .await
            .unwrap();
        assert_eq!(
            (c.message_count, status),
            (2 * (turn as u64 + 1), Some(AfterStatus::Applied))
        );
        let page = reads::list_messages(
            &w.deps,
            "alice",
            &id,
            MessageParams {
                after: Some(&accepted.command_id),
                order: Some("desc"),
                limit: Some("1"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(page.after, Some(AfterStatus::Applied));
        assert_eq!(page.messages[0].content, format!("answer {turn}"));
    }
    // An end is found by its command too.
    let ended = service::end_session(&w.deps, "alice", &id, None).await.unwrap();
    w.settle().await;
    let (c, status) = reads::get_conversation_after(&w.deps, "alice", &id, Some(&ended.command_id))
        .await
        .unwrap();
    assert_eq!(
        (c.status, status),
        (ConversationStatus::Ended, Some(AfterStatus::Applied))
    );
}

async fn a_read_after_a_write_not_yet_stored_says_so_when_the_wait_runs_out(w: World) {
    let id = conversation(&w, "child-wait").await;
    let accepted = service::append_messages(&w.deps, "alice", &id, exchange(0), None)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let ctx = reads::context(&w.deps, "alice", &id, None, None, Some(&accepted.command_id))
        .await
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(150), "it waited");
    assert_eq!(ctx.after, Some(AfterStatus::Pending));
    assert!(ctx.messages.is_empty());
    // Plain reads never wait; a malformed command id is refused.
    assert_eq!(
        reads::context(&w.deps, "alice", &id, None, None, None)
            .await
            .unwrap()
            .after,
        None
    );
    let err = reads::context(&w.deps, "alice", &id, None, None, Some("not a command!"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationFailed);
    w.settle().await;
    let ctx = reads::context(&w.deps, "alice", &id, None, None, Some(&accepted.command_id))
        .await
        .unwrap();
    assert_eq!((ctx.after, ctx.messages.len()), (Some(AfterStatus::Applied), 2));
}

async fn appends_of_repeats_only_are_remembered_for_after(w: World) {
    let id = conversation(&w, "child-dup").await;
    let sms = |content: &str| append(serde_json::json!([{"role": "user", "content": content, "externalId": "SM42"}]));
    service::append_messages(&w.deps, "alice", &id, sms("hello"), None)
        .await
        .unwrap();
    w.settle().await;
    // The provider retries the same text: stored once, and the retry's
    // command is still seen as applied.
    let retry = service::append_messages(&w.deps, "alice", &id, sms("hello"), None)
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(w.faulty.calls(Step::Head), 1);
    let (c, status) = reads::get_conversation_after(&w.deps, "alice", &id, Some(&retry.command_id))
        .await
        .unwrap();
    assert_eq!((c.message_count, status), (1, Some(AfterStatus::Applied)));
}

async fn a_late_message_after_the_end_is_counted_once_across_a_crash(w: World) {
    let id = conversation(&w, "child-late").await;
    service::append_messages(&w.deps, "alice", &id, exchange(0), None)
        .await
        .unwrap();
    service::end_session(&w.deps, "alice", &id, None).await.unwrap();
    w.settle().await;
    // Accepted before the end was applied, stored after it (its record was
    // held back), and the worker stops between the totals and the chunk.
    let c = w.store.conversations.get_conversation(&id).await.unwrap().unwrap();
    let late = convo_schema::commands::WriteCommand {
        v: convo_schema::commands::WRITE_COMMAND_VERSION,
        command_id: "01JLATE0000000000000000000".into(),
        conversation_id: id.clone(),
        owner_id: "alice".into(),
        accepted_at: c.conversation.start_time,
        kind: convo_schema::commands::WriteKind::Append {
            messages: vec![convo_schema::commands::AcceptedMessage {
                message_id: "01JLATEM000000000000000000".into(),
                role: Role::User,
                content: "one more thing".into(),
                created_at: c.conversation.start_time,
                external_id: None,
                direction: None,
                audio_url: None,
                metadata: Metadata::new(),
                safety: SafetyVerdict::safe(),
                tool_calls: vec![],
                tool_call_id: None,
                sealed: Default::default(),
                risk: None,
            }],
        },
    };
    let body = serde_json::to_string(&late).unwrap();
    w.faulty.crash_at(Step::Chunk, 0);
    let failed = persist_batch(&w.deps, vec![Delivery::decode("r".into(), Some(id.clone()), &body)]).await;
    assert_eq!(failed.failed.len(), 1);
    let again = persist_batch(&w.deps, vec![Delivery::decode("r".into(), Some(id.clone()), &body)]).await;
    assert!(again.failed.is_empty());
    let stats = service::user_stats(&w.deps, "alice", "child-late").await.unwrap();
    assert_eq!((stats.conversations, stats.messages), (1, 3));
    assert_eq!(contents(&w, &id).await.len(), 3);
    assert_eq!(w.conversation(&id).await.message_count, 3);
}

async fn an_old_command_sent_again_after_the_head_forgot_it_is_skipped(w: World) {
    let id = conversation(&w, "child-old").await;
    for i in 0..20 {
        service::append_messages(&w.deps, "alice", &id, exchange(i), None)
            .await
            .unwrap();
    }
    let mut bodies = Vec::new();
    loop {
        let batch = w.writes.receive(10, std::time::Duration::ZERO).await;
        if batch.is_empty() {
            break;
        }
        let deliveries = batch
            .iter()
            .map(|r| Delivery::decode(r.message_id.clone(), r.group.clone(), &r.body))
            .collect();
        assert!(persist_batch(&w.deps, deliveries).await.failed.is_empty());
        for r in &batch {
            bodies.push(r.body.clone());
            w.writes.ack(r.receipt).await.unwrap();
        }
    }
    assert_eq!(bodies.len(), 20);
    let before = contents(&w, &id).await;
    assert_eq!(before.len(), 40);
    // Past SQS's deduplication window, every command is sent again (a
    // redrive): the head remembers only the last 16, the chunks the rest.
    w.clock.advance(chrono::Duration::minutes(10));
    for (i, body) in bodies.iter().enumerate() {
        let again = persist_batch(
            &w.deps,
            vec![Delivery::decode(format!("again-{i}"), Some(id.clone()), body)],
        )
        .await;
        assert_eq!((again.failed.len(), again.messages_persisted), (0, 0), "command {i}");
    }
    assert_eq!(contents(&w, &id).await, before);
    assert_eq!(w.conversation(&id).await.message_count, 40);
}

async fn an_end_after_the_end_is_remembered_for_after(w: World) {
    let id = conversation(&w, "child-end2").await;
    service::append_messages(&w.deps, "alice", &id, exchange(0), None)
        .await
        .unwrap();
    let first = service::end_session(&w.deps, "alice", &id, None).await.unwrap();
    w.settle().await;
    // A second end from another client (or the sweeper's, first) changes
    // nothing, and a read after it does not wait.
    let record = w.store.conversations.get_conversation(&id).await.unwrap().unwrap();
    let second = convo_schema::commands::WriteCommand {
        v: convo_schema::commands::WRITE_COMMAND_VERSION,
        command_id: "01JEND2000000000000000000Z".into(),
        conversation_id: id.clone(),
        owner_id: "alice".into(),
        accepted_at: w.clock.now(),
        kind: convo_schema::commands::WriteKind::End {
            reason: convo_schema::commands::EndReason::Client,
        },
    };
    let body = serde_json::to_string(&second).unwrap();
    assert!(
        persist_batch(&w.deps, vec![Delivery::decode("e2".into(), Some(id.clone()), &body)])
            .await
            .failed
            .is_empty()
    );
    let after = w.store.conversations.get_conversation(&id).await.unwrap().unwrap();
    assert_eq!(after.conversation, record.conversation);
    for command in [first.command_id.as_str(), second.command_id.as_str()] {
        let (_, status) = reads::get_conversation_after(&w.deps, "alice", &id, Some(command))
            .await
            .unwrap();
        assert_eq!(status, Some(AfterStatus::Applied), "{command}");
    }
    let stats = service::user_stats(&w.deps, "alice", "child-end2").await.unwrap();
    assert_eq!((stats.conversations, stats.messages), (1, 2));
}

async fn a_patch_between_the_chunks_and_the_end_keeps_the_list_right(w: World) {
    let id = conversation(&w, "child-patch").await;
    service::append_messages(&w.deps, "alice", &id, exchange(0), None)
        .await
        .unwrap();
    service::end_session(&w.deps, "alice", &id, None).await.unwrap();
    // The worker stores the chunk, then stops before the conversation item;
    // a parent renames the conversation in between.
    w.faulty.crash_at(Step::Meta, 0);
    let (_, outcome) = w.persist_once().await.unwrap();
    assert_eq!(outcome.failed.len(), 2);
    let patch: PatchConversationRequest = serde_json::from_value(serde_json::json!({"title": "Bedtime"})).unwrap();
    service::patch_conversation(&w.deps, "alice", &id, patch).await.unwrap();
    w.settle().await;
    let listed = reads::list_conversations(
        &w.deps,
        "alice",
        service::ListParams {
            user_id: Some("child-patch"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let c = &listed.conversations[0];
    assert_eq!((c.status, c.message_count), (ConversationStatus::Ended, 2));
    assert_eq!(
        (c.title.as_deref(), c.last_message_preview.as_deref()),
        (Some("Bedtime"), Some("answer 0"))
    );
    let stats = service::user_stats(&w.deps, "alice", "child-patch").await.unwrap();
    assert_eq!((stats.conversations, stats.messages), (1, 2));
}

async fn a_write_that_read_before_the_erasure_is_swept_after_it(w: World) {
    let id = conversation(&w, "child-race").await;
    let keep = conversation(&w, "child-keep").await;
    service::append_messages(&w.deps, "alice", &id, exchange(0), None)
        .await
        .unwrap();
    service::append_messages(&w.deps, "alice", &keep, exchange(0), None)
        .await
        .unwrap();
    // A worker receives the write and reads the conversation...
    let batch = w.writes.receive(10, std::time::Duration::ZERO).await;
    let record = w.store.conversations.get_conversation(&id).await.unwrap().unwrap();
    let mine = batch.iter().find(|r| r.group.as_deref() == Some(id.as_str())).unwrap();
    let command: convo_schema::commands::WriteCommand = serde_json::from_str(&mine.body).unwrap();
    let plan = convo_domain::persist::plan_commit(
        record,
        &[&command],
        Default::default(),
        &Default::default(),
        &w.deps.config,
    );
    // ... the conversation is erased meanwhile ...
    service::delete_conversation(&w.deps, "alice", &id).await.unwrap();
    assert!(w.leftovers(&id).await.is_empty());
    // ... and the stalled worker's chunk lands after the erasure swept.
    convo_domain::persist::write_plan(&w.store, &plan).await.unwrap();
    assert!(!w.leftovers(&id).await.is_empty(), "the race left a chunk");
    for r in &batch {
        if r.receipt == mine.receipt {
            w.writes.ack(r.receipt).await.unwrap();
        } else {
            w.writes.nack(r.receipt).await.unwrap();
        }
    }
    // The erasure's guard, queued behind that write, removes it.
    w.settle().await;
    assert_eq!(w.leftovers(&id).await, Vec::<String>::new());
    assert_eq!(
        contents(&w, &keep).await.len(),
        2,
        "another conversation's write is stored"
    );
}

async fn erasure_removes_claims_of_any_external_id(w: World) {
    let id = conversation(&w, "child-accents").await;
    let messages = serde_json::json!([
        {"role": "user", "content": "hola", "externalId": "ñ-1"},
        {"role": "user", "content": "adiós", "externalId": "日本-2"}
    ]);
    service::append_messages(&w.deps, "alice", &id, append(messages), None)
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(contents(&w, &id).await.len(), 2);
    service::delete_conversation(&w.deps, "alice", &id).await.unwrap();
    w.settle().await;
    assert_eq!(w.leftovers(&id).await, Vec::<String>::new());
}

async fn a_flag_shows_with_its_message_and_survives_a_crash_on_either_side(w: World) {
    for (step, user) in [
        (None, "child-f0"),
        (Some(Step::Meta), "child-f1"),
        (Some(Step::Chunk), "child-f2"),
    ] {
        let id = conversation(&w, user).await;
        let messages = serde_json::json!([{"role": "user", "content": "you are so stupid"}]);
        service::append_messages(&w.deps, "alice", &id, append(messages), None)
            .await
            .unwrap();
        if let Some(step) = step {
            w.faulty.crash_at(step, 0);
            let (_, outcome) = w.persist_once().await.unwrap();
            assert_eq!(outcome.failed.len(), 1, "{step:?}");
            // Whatever stands after the crash, a stored flagged message is
            // never seen in a conversation that is not flagged.
            let c = w.conversation(&id).await;
            assert!(c.message_count == 0 || c.flagged, "{step:?}: {c:?}");
        }
        w.settle().await;
        let c = w.conversation(&id).await;
        assert_eq!(
            (c.message_count, c.flagged, c.flag_status),
            (1, true, Some(FlagStatus::Unreviewed)),
            "{user}"
        );
        assert_eq!(contents(&w, &id).await.len(), 1, "{user}");
    }
}

contract! {
    a_flag_shows_with_its_message_and_survives_a_crash_on_either_side,
    erasure_removes_claims_of_any_external_id,
    an_end_after_the_end_is_remembered_for_after,
    a_patch_between_the_chunks_and_the_end_keeps_the_list_right,
    a_write_that_read_before_the_erasure_is_swept_after_it,
    an_old_command_sent_again_after_the_head_forgot_it_is_skipped,
    an_exchange_is_one_chunk_write_and_nothing_else,
    a_crash_at_any_write_of_a_commit_is_finished_by_redelivery,
    a_crash_between_the_chunks_of_one_commit_is_finished,
    redelivered_prefixes_and_lone_records_change_nothing,
    two_workers_holding_one_group_store_it_once,
    a_read_after_its_write_waits_for_it,
    a_read_after_a_write_not_yet_stored_says_so_when_the_wait_runs_out(convo_domain::Config {
        appends_per_minute: 0,
        read_after_wait: chrono::Duration::milliseconds(200),
        ..convo_domain::Config::default()
    }),
    appends_of_repeats_only_are_remembered_for_after,
    a_late_message_after_the_end_is_counted_once_across_a_crash,
}
