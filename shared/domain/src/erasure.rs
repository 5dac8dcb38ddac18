//! The erasure of a user (`DELETE /users/{userId}`) as a durable job.
//!
//! The API destroys the user's data key first (crypto-shredding: from then
//! on nothing sealed under it opens, in the table or in any backup), records
//! the job and queues its first step, and answers 202 with the job's id.
//! The worker runs the steps, in the job's own FIFO group on the writes
//! queue: each step erases the page of conversations the previous step
//! found, finds and counts the next page, records it with the cursor (one
//! conditional write of the job) and queues the next step. A step
//! interrupted anywhere is redelivered and resumes from the last state
//! recorded, so nothing is missed and nothing counted twice; a redelivered
//! step that finds the job moved on queues the next step again (the queue
//! drops the duplicate). No conversation's erasure recounts the user's
//! totals: the job deletes them at its end.
//!
//! The job ends when a whole pass over the user's conversations, from the
//! start, erases nothing. On a store whose user index may lag (DynamoDB's
//! global secondary index is eventually consistent), one clean pass is not
//! enough: the job waits for the index to settle (`erasure_settle`) and
//! ends only when a second clean pass agrees. Then the user's totals go,
//! the erasure is announced (`user.erased`, with the job's id as the
//! event's, so a repeat is recognisable), and the job keeps its counts but
//! no id of the person.

use crate::ApiDeps;
use convo_schema::commands::{WriteCommand, WriteKind};
use convo_schema::{api::ErasureReport, identity};

use crate::Deps;
use crate::error::DomainError;
use crate::events;
use crate::ports::*;
use convo_schema::{Conversation, ConversationStatus};

use crate::error::key_error;
use crate::model::{expired, is_conversation_id};
use crate::outbox::send_write;

/// Conversations erased per step (each takes a handful of requests, so a
/// step stays well inside the worker's timeout).
pub const STEP_CONVERSATIONS: usize = 25;

/// Conversations of a step erased concurrently.
const ERASE_CONCURRENCY: usize = 8;

/// Starts the erasure of a user: destroys their data key, records the job
/// and queues its first step. Returns the job's report (`running`).
pub async fn start(deps: &ApiDeps, owner_id: &str, user_id: &str) -> Result<ErasureReport, DomainError> {
    let user_id = identity::party_id("userId", user_id)?;
    // The user's data key goes first: whatever happens to the job below,
    // nothing sealed under it opens again.
    deps.keys.destroy(owner_id, &user_id).await.map_err(key_error)?;
    deps.metrics.record(&[("KeysDestroyed", 1.0, "Count")]);
    let job = new_job(deps, owner_id, &user_id);
    deps.store.erasures.put_erasure(&job, 0).await?;
    // A job recorded whose first step could not be queued is retried by
    // the caller (a 503 says so): the key is gone already and a second job
    // erases the same items.
    send_write(deps, &step_command(&job, 0)).await?;
    Ok(job.report())
}

fn new_job(deps: &Deps, owner_id: &str, user_id: &str) -> ErasureJob {
    ErasureJob {
        erasure_id: deps.ids.new_id(),
        owner_id: owner_id.to_string(),
        user_id: Some(user_id.to_string()),
        done: false,
        conversations_deleted: 0,
        messages_deleted: 0,
        requested_at: deps.clock.now(),
        finished_at: None,
        step: 0,
        cursor: None,
        pending: Vec::new(),
        found_in_pass: false,
        clean_pass_at: None,
        version: 1,
    }
}

/// The report of an owner's erasure job; another owner's, or an id that
/// names nothing, is not found.
pub async fn report(deps: &Deps, owner_id: &str, erasure_id: &str) -> Result<ErasureReport, DomainError> {
    if !is_conversation_id(erasure_id) {
        return Err(DomainError::ErasureNotFound);
    }
    match deps.store.erasures.get_erasure(erasure_id).await? {
        Some(job) if job.owner_id == owner_id => Ok(job.report()),
        _ => Err(DomainError::ErasureNotFound),
    }
}

/// Erases a user at once, in this call: the job's steps run here instead
/// of on the queue. For tests and tools working on a small store; the API
/// always queues the job.
pub async fn erase_now(deps: &ApiDeps, owner_id: &str, user_id: &str) -> Result<ErasureReport, DomainError> {
    let user_id = identity::party_id("userId", user_id)?;
    deps.keys.destroy(owner_id, &user_id).await.map_err(key_error)?;
    let job = new_job(deps, owner_id, &user_id);
    deps.store.erasures.put_erasure(&job, 0).await?;
    let id = job.erasure_id.clone();
    for _ in 0..100_000 {
        let job = deps
            .store
            .erasures
            .get_erasure(&id)
            .await?
            .ok_or_else(|| DomainError::Internal("the erasure job vanished".into()))?;
        if job.done {
            return Ok(job.report());
        }
        run_step(deps, &job, job.step, false).await?;
    }
    Err(DomainError::Unavailable(
        "the erasure did not finish; it goes on".into(),
    ))
}

/// The worker's side: runs the step a queued command names.
pub async fn run_command(deps: &Deps, cmd: &WriteCommand) -> Result<(), DomainError> {
    let WriteKind::EraseUser { step } = cmd.kind else {
        return Ok(());
    };
    let Some(job) = deps.store.erasures.get_erasure(&cmd.conversation_id).await? else {
        tracing::error!(erasure_id = %cmd.conversation_id, "erasure step for a job that does not exist; dropped");
        return Ok(());
    };
    if job.done || step + 1 < job.step {
        return Ok(());
    }
    if step + 1 == job.step {
        // The step ran and was recorded, but its successor may not have
        // been queued (a crash in between): queue it again; a duplicate
        // within the queue's deduplication window is dropped.
        return send_write(deps, &step_command(&job, job.step)).await;
    }
    if step > job.step {
        return Err(DomainError::Internal(format!(
            "erasure step {step} is ahead of the job ({})",
            job.step
        )));
    }
    run_step(deps, &job, step, true).await
}

fn step_command(job: &ErasureJob, step: u64) -> WriteCommand {
    // Deterministic id: a step queued twice is one message to the queue.
    WriteCommand::new(
        format!("{}-{step}", job.erasure_id),
        job.erasure_id.clone(),
        job.owner_id.clone(),
        job.requested_at,
        WriteKind::EraseUser { step },
    )
}

/// One step: erases the page the previous step found (its `pending`),
/// finds and counts the next page, records the job's new state (the next
/// step erases that page first), and queues the next step (unless
/// `queue_next` is off: the caller runs it). A crash anywhere leaves the
/// job as last recorded: its redelivery resumes from there.
async fn run_step(deps: &Deps, job: &ErasureJob, step: u64, queue_next: bool) -> Result<(), DomainError> {
    let Some(user_id) = job.user_id.clone() else {
        return Err(DomainError::Internal("a running erasure job without its user".into()));
    };
    let owner_id = job.owner_id.as_str();
    // Several at once: each erasure is a handful of dependent requests.
    for ids in job.pending.chunks(ERASE_CONCURRENCY) {
        futures::future::try_join_all(
            ids.iter()
                .map(|id| delete_conversation_counted(deps, owner_id, id, false)),
        )
        .await?;
    }
    // A second pass over a lagging index waits until the index has had
    // time to show what the first pass could not see.
    if job.cursor.is_none()
        && let Some(clean) = job.clean_pass_at
        && !deps.store.lists.user_index_is_consistent()
    {
        let remaining = deps.config.erasure_settle - (deps.clock.now() - clean);
        if remaining > chrono::Duration::zero() {
            tokio::time::sleep(remaining.to_std().unwrap_or_default()).await;
        }
    }
    let page = deps
        .store
        .lists
        .list_conversations(
            owner_id,
            &ConversationList::User(user_id.clone()),
            job.cursor.as_deref(),
            STEP_CONVERSATIONS,
        )
        .await?;
    let mut next = job.clone();
    next.pending = Vec::new();
    for r in page
        .items
        .iter()
        .filter(|r| r.conversation.owner_id == owner_id && !job.pending.iter().any(|p| p == r.id()))
    {
        next.pending.push(r.id().to_string());
        // One marked for erasure is being erased by another call (or was,
        // and a stale read shows it): erased again, counted there. (One
        // whose key this erasure destroyed reads as marked, and is ours.)
        if !r.deleting || r.shredded {
            next.conversations_deleted += 1;
            next.messages_deleted += r.conversation.message_count;
        }
        next.found_in_pass = true;
    }
    next.cursor = page.next_cursor;
    let mut finished = false;
    if next.cursor.is_none() {
        if next.found_in_pass {
            next.clean_pass_at = None;
        } else if deps.store.lists.user_index_is_consistent()
            || deps.config.erasure_settle <= chrono::Duration::zero()
            || job.clean_pass_at.is_some()
        {
            // A clean pass over an index that shows everything, or a
            // second one, begun after the settling time (above).
            finished = true;
        } else {
            next.clean_pass_at = Some(deps.clock.now());
        }
        next.found_in_pass = false;
    }
    if finished {
        deps.store.totals.delete_user_stats(owner_id, &user_id).await?;
        if next.conversations_deleted > 0 {
            // Before the job is marked done: a crash in between announces
            // again, with the same event id.
            let event = events::user_erased(
                owner_id,
                &user_id,
                next.conversations_deleted,
                &job.erasure_id,
                deps.clock.now(),
            );
            deps.events
                .send_events(&[event])
                .await
                .map_err(|e| DomainError::Unavailable(e.to_string()))?;
        }
        next.done = true;
        next.user_id = None;
        next.cursor = None;
        next.clean_pass_at = None;
        next.finished_at = Some(deps.clock.now());
    }
    next.step = step + 1;
    next.version = job.version + 1;
    match deps.store.erasures.put_erasure(&next, job.version).await {
        Ok(()) => {}
        // Another delivery of this step recorded it first; it queues the
        // successor.
        Err(StoreError::Conflict(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    if finished {
        deps.metrics.record(&[
            ("UsersErased", 1.0, "Count"),
            ("ConversationsErased", next.conversations_deleted as f64, "Count"),
        ]);
    } else if queue_next {
        send_write(deps, &step_command(&next, next.step)).await?;
    }
    Ok(())
}

// ---- The erasure of one conversation (also `DELETE /conversations/{id}`).

/// [`delete_conversation`], answering how many messages the conversation
/// held when this call found it (`None`: missing, or another owner's).
///
/// `recount`: whether the user's last conversation is looked up again
/// (a user's erasure deletes their totals at its end instead: no need).
pub async fn delete_conversation_counted(
    deps: &Deps,
    owner_id: &str,
    conversation_id: &str,
    recount: bool,
) -> Result<Option<u64>, DomainError> {
    // A string that is not a conversation id names nothing that could
    // exist (a 404); a well-formed id that is missing or another owner's is
    // erased already, as far as this caller can know (idempotent).
    if !is_conversation_id(conversation_id) {
        return Err(DomainError::NotFound);
    }
    for _ in 0..8 {
        let Some(mut record) = deps.store.conversations.get_conversation(conversation_id).await? else {
            return Ok(None);
        };
        if record.conversation.owner_id != owner_id {
            return Ok(None);
        }
        // 1. Mark it: from now on it reads as missing and takes no writes.
        // (One whose key is gone reads as being erased already; the mark
        // is written all the same, for the worker, which reads no key.)
        if !record.deleting || record.shredded {
            let expected = record.version;
            record.deleting = true;
            record.version = expected + 1;
            match deps.store.conversations.put_conversation(&record, expected).await {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // 2. A guard behind every write accepted before the mark, in the
        // conversation's FIFO group: the worker deletes whatever a write that
        // read the conversation before the mark stores after step 3.
        send_write(
            deps,
            &crate::outbox::command(
                deps,
                owner_id,
                conversation_id,
                WriteKind::Erase {
                    user_id: Some(record.conversation.user_id.clone()),
                    agent_id: Some(record.conversation.agent_id.clone()),
                },
            ),
        )
        .await?;
        // 3. and 4.; a crash in between leaves the mark: a retry finishes
        // (and so does the worker, when it reaches the guard).
        if finish_erasure_recounting(deps, &record, recount).await? {
            return Ok(Some(record.conversation.message_count));
        }
    }
    Err(DomainError::Unavailable(
        "the conversation is being written heavily; retry".into(),
    ))
}

/// The end of an erasure of a conversation marked `deleting`: everything
/// under it, then the conversation, its indexes, pair and totals. False
/// when the conversation changed meanwhile (read it again). Idempotent: the
/// API and the worker (at the erasure's guard) may both run it.
pub async fn finish_erasure(deps: &Deps, record: &ConversationRecord) -> Result<bool, DomainError> {
    finish_erasure_recounting(deps, record, true).await
}

async fn finish_erasure_recounting(
    deps: &Deps,
    record: &ConversationRecord,
    recount: bool,
) -> Result<bool, DomainError> {
    let conversation_id = record.id();
    deps.store.messages.delete_conversation_items(conversation_id).await?;
    let c = &record.conversation;
    let counted = c.status != ConversationStatus::Active;
    let stats = counted.then(|| StatsDelta {
        conversations: -1,
        messages: -(record.counted_messages.unwrap_or(c.message_count) as i64),
        seconds: -c.duration_seconds.unwrap_or(0),
        at: None,
    });
    match deps
        .store
        .conversations
        .remove_conversation(record, record.version, stats)
        .await
    {
        Ok(()) => {
            // Writes that raced the mark may have left items behind.
            deps.store.messages.delete_conversation_items(conversation_id).await?;
            if counted && recount {
                recount_last_conversation(deps, &record.conversation).await?;
            }
            Ok(true)
        }
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// After an erasure the user's totals read as if the conversation never
/// existed: their last conversation is the newest counted one left.
async fn recount_last_conversation(deps: &Deps, erased: &Conversation) -> Result<(), DomainError> {
    let Some(stats) = deps.store.totals.user_stats(&erased.owner_id, &erased.user_id).await? else {
        return Ok(());
    };
    if stats.last_conversation_at != Some(erased.start_time) {
        return Ok(());
    }
    let mut cursor: Option<String> = None;
    let now = deps.clock.now();
    // Newest first: the first counted one is the last; bounded pages.
    for _ in 0..20 {
        let page = deps
            .store
            .lists
            .list_conversations(
                &erased.owner_id,
                &ConversationList::User(erased.user_id.clone()),
                cursor.as_deref(),
                100,
            )
            .await?;
        let found = page
            .items
            .iter()
            .find(|r| !r.deleting && r.conversation.status != ConversationStatus::Active && !expired(r, now))
            .map(|r| r.conversation.start_time);
        if found.is_some() || page.next_cursor.is_none() {
            deps.store
                .totals
                .set_last_conversation_at(&erased.owner_id, &erased.user_id, found)
                .await?;
            return Ok(());
        }
        cursor = page.next_cursor;
    }
    Ok(())
}
