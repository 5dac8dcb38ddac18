//! The `persist-writes` worker's rules: apply queued write commands to the
//! store in queue order, exactly once, with one item write per exchange.
//!
//! The worker is the only writer of a conversation's messages (one FIFO
//! group per conversation), so a commit needs no transaction. A commit is,
//! in this order and each step only when needed:
//!
//! 1. the `externalId` claims of its messages (each names its message, so
//!    a retried claim of the same message is not a repeat);
//! 2. the flagged-message pointers;
//! 3. the conversation item, conditional on its version, when only a flag
//!    moved (the first flag, a higher severity), so that a conversation
//!    never shows a flagged message before its own flag;
//! 4. the messages, packed into chunks keyed by the index of their first
//!    message, each conditional on its key being free and each carrying the
//!    conversation's head as of its last message (counters, previews, the
//!    rate window and the tags of the last [`RECENT_COMMANDS`] commands);
//! 5. the conversation item, conditional on its version, when the commit
//!    touches the user's totals (the end of the session, messages stored
//!    after it), atomically with them.
//!
//! A crash between any two steps leaves a state the redelivered commands
//! finish: claims and pointers are idempotent when replayed (a claim of the
//! same message, the same pointer); a command whose chunk is stored is
//! recognised by its tag and not stored again, but what it does to the
//! conversation item (a first flag, a severity) is applied again, which
//! changes nothing when it was written; an end is applied while the session
//! is still active; and messages stored after the end that the user's
//! totals do not count yet ([`ConversationRecord::counted_messages`] below
//! the head's count) are counted, once. An end's conversation item is
//! written after the chunks, so its snapshot of the counters (what lists
//! of ended conversations show) never runs ahead of them. A chunk key found taken is read back: if it holds our commands
//! another worker stored them (a visibility timeout let two hold the
//! group), otherwise the state is read again and the commit planned anew,
//! checking every command against the stored chunks.
//!
//! In order: records are grouped by conversation (the FIFO group); when one
//! record of a group fails — a failed write, a body that does not decode, a
//! command in a newer format — every later record of that group in the
//! batch is reported failed too, unapplied, so redelivery keeps the order
//! (what never applies reaches the dead-letter queue with the records behind
//! it, from where a redrive replays them in order).

use std::collections::{HashMap, HashSet};

use convo_schema::commands::{
    AcceptedMessage, EndReason, TitleJob, TitleReason, WRITE_COMMAND_VERSION, WriteCommand, WriteKind,
};
use convo_schema::{
    Conversation, ConversationStatus, FlagStatus, Message, SafetyAction, SafetyFinding, SafetyStage, SafetyVerdict,
    Severity, TitleSource,
};
use futures::future::join_all;

use convo_schema::events::CloudEvent;

use crate::error::DomainError;
use crate::events::{self, FlaggedMessage};
use crate::ports::*;
use crate::{Config, Deps};

/// A command the conversation does not remember that was accepted longer
/// ago than this may be a re-send from outside SQS's 5-minute
/// deduplication window (a client's retry that re-sends a stored command, a
/// dead-letter redrive): before it is applied, the chunks stored since it
/// was accepted are read for its messages. Fresh commands never pay for it:
/// within the window SQS drops a re-send, and redeliveries are always among
/// the commands the head remembers.
pub const REPLAY_CHECK_AFTER_SECONDS: i64 = 4 * 60;

/// Consecutive commands are packed into one chunk while their messages'
/// content and metadata stay under this many bytes (a chunk and the
/// conversation item then fit one 4 KB read unit); a command is never split,
/// so one larger command makes one larger chunk.
pub const CHUNK_TARGET_BYTES: usize = 2048;

/// One queue record as the worker sees it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The record's id, named in the batch response when it fails.
    pub record_id: String,
    /// The FIFO group (the conversation id), when the queue reports it.
    pub group: Option<String>,
    /// The decoded command, or why the body could not be decoded.
    pub command: Result<WriteCommand, String>,
}

impl Delivery {
    pub fn decode(record_id: String, group: Option<String>, body: &str) -> Self {
        let command = serde_json::from_str::<WriteCommand>(body)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                // A command of a later format is refused (retried, then a
                // dead letter), never applied with what this code does not
                // know dropped: say, by an older worker during a rollout.
                if c.v > WRITE_COMMAND_VERSION {
                    Err(format!(
                        "write command format {} is newer than this worker's ({WRITE_COMMAND_VERSION})",
                        c.v
                    ))
                } else {
                    Ok(c)
                }
            });
        Self {
            record_id,
            group,
            command,
        }
    }

    fn group_key(&self) -> String {
        match (&self.group, &self.command) {
            (Some(g), _) => g.clone(),
            (None, Ok(c)) => c.conversation_id.clone(),
            (None, Err(_)) => format!("undecodable:{}", self.record_id),
        }
    }
}

/// What happened to a batch: the record ids to report as failed, and counts
/// for metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchOutcome {
    pub failed: Vec<String>,
    pub messages_persisted: u64,
    pub commands_applied: u64,
    pub duplicates_skipped: u64,
    /// The longest time from acceptance (202) to commit in the batch.
    pub max_lag_ms: i64,
}

/// Applies a batch. Groups are independent and run concurrently.
pub async fn persist_batch(deps: &Deps, deliveries: Vec<Delivery>) -> BatchOutcome {
    let mut groups: Vec<(String, Vec<Delivery>)> = Vec::new();
    for d in deliveries {
        let key = d.group_key();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(d),
            None => groups.push((key, vec![d])),
        }
    }
    let results = join_all(groups.into_iter().map(|(_, list)| persist_group(deps, list))).await;
    let mut outcome = BatchOutcome::default();
    for r in results {
        outcome.failed.extend(r.failed);
        outcome.messages_persisted += r.messages_persisted;
        outcome.commands_applied += r.commands_applied;
        outcome.duplicates_skipped += r.duplicates_skipped;
        outcome.max_lag_ms = outcome.max_lag_ms.max(r.max_lag_ms);
    }
    deps.metrics.record(&[
        ("MessagesPersisted", outcome.messages_persisted as f64, "Count"),
        ("BatchItemFailures", outcome.failed.len() as f64, "Count"),
        ("DuplicatesSkipped", outcome.duplicates_skipped as f64, "Count"),
        ("PersistLatency", outcome.max_lag_ms as f64, "Milliseconds"),
    ]);
    outcome
}

const CONFLICT_RETRIES: usize = 5;

async fn persist_group(deps: &Deps, list: Vec<Delivery>) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    let mut next = 0;
    let mut conflicts = 0;
    while next < list.len() {
        let cmd = match &list[next].command {
            Ok(cmd) => cmd,
            Err(reason) => {
                // A record this worker cannot apply (a newer format during a
                // rollout, a body it cannot read) fails with every record
                // behind it in its group, as any other failure does: applying
                // those first would break the group's order (an end ahead of
                // a message). They are retried together; a newer worker
                // applies them in order, and what never decodes reaches the
                // dead-letter queue, where nothing is lost.
                tracing::error!(record_id = %list[next].record_id, %reason, "write command not applicable by this worker");
                fail_rest(&mut outcome, &list[next..]);
                return outcome;
            }
        };
        if matches!(cmd.kind, WriteKind::EraseUser { .. }) {
            // A step of a user's erasure job: its group is the job's own.
            match crate::erasure::run_command(deps, cmd).await {
                Ok(()) => {
                    outcome.commands_applied += 1;
                    next += 1;
                }
                Err(e) => {
                    tracing::warn!(erasure_id = %cmd.conversation_id, error = %e, "an erasure step failed; retried");
                    fail_rest(&mut outcome, &list[next..]);
                    return outcome;
                }
            }
            continue;
        }
        if matches!(cmd.kind, WriteKind::Erase { .. }) {
            match erase_leftovers(deps, cmd).await {
                Ok(()) => next += 1,
                Err(e) => {
                    tracing::warn!(conversation_id = %cmd.conversation_id, error = %e, "could not sweep an erased conversation");
                    fail_rest(&mut outcome, &list[next..]);
                    return outcome;
                }
            }
            continue;
        }
        if matches!(cmd.kind, WriteKind::Remove { .. } | WriteKind::Clear) {
            match apply_removal(deps, cmd).await {
                Ok(()) => {
                    outcome.commands_applied += 1;
                    next += 1;
                }
                Err(e) => {
                    tracing::warn!(conversation_id = %cmd.conversation_id, error = %e, "could not remove messages");
                    fail_rest(&mut outcome, &list[next..]);
                    return outcome;
                }
            }
            continue;
        }
        let record = match deps.store.get_conversation(&cmd.conversation_id).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                // The conversation was erased after the write was accepted.
                tracing::warn!(conversation_id = %cmd.conversation_id, "write for a conversation that no longer exists; dropped");
                next += 1;
                continue;
            }
            Err(e) => {
                tracing::warn!(conversation_id = %cmd.conversation_id, error = %e, "could not load conversation");
                fail_rest(&mut outcome, &list[next..]);
                return outcome;
            }
        };
        if record.deleting {
            tracing::warn!(conversation_id = %cmd.conversation_id, "write for a conversation being erased; dropped");
            next += 1;
            continue;
        }
        let run_end = run_end(&list, next);
        let commands: Vec<&WriteCommand> = list[next..run_end]
            .iter()
            .filter_map(|d| d.command.as_ref().ok())
            .collect();
        let external_ids: Vec<String> = commands
            .iter()
            .flat_map(|c| match &c.kind {
                WriteKind::Append { messages } => messages.iter().filter_map(|m| m.external_id.clone()).collect(),
                WriteKind::End { .. }
                | WriteKind::Erase { .. }
                | WriteKind::EraseUser { .. }
                | WriteKind::Remove { .. }
                | WriteKind::Clear => Vec::new(),
            })
            .collect();
        let existing = if external_ids.is_empty() {
            HashMap::new()
        } else {
            match deps
                .store
                .existing_external_ids(&cmd.conversation_id, &external_ids)
                .await
            {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(conversation_id = %cmd.conversation_id, error = %e, "could not read external ids");
                    fail_rest(&mut outcome, &list[next..]);
                    return outcome;
                }
            }
        };
        // After a conflict another worker may have stored these commands
        // and moved the head past them: look every one up, not only the old.
        let stored = match already_stored(deps, &record, &commands, conflicts > 0).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(conversation_id = %cmd.conversation_id, error = %e, "could not check old commands");
                fail_rest(&mut outcome, &list[next..]);
                return outcome;
            }
        };
        let plan = plan_commit(record, &commands, existing, &stored, &deps.config);
        match write_plan(deps.store.as_ref(), &plan).await {
            Ok(()) => {
                for job in &plan.title_jobs {
                    if let Err(e) = deps.titles.send_title(job).await {
                        // The commit stands; failing the records makes SQS
                        // redeliver them, and a redelivered end re-sends its
                        // title job (see `plan_commit`).
                        tracing::warn!(conversation_id = %job.conversation_id, error = %e, "could not queue title job");
                        fail_rest(&mut outcome, &list[next..]);
                        return outcome;
                    }
                }
                if !plan.events.is_empty()
                    && let Err(e) = deps.events.send_events(&plan.events).await
                {
                    // As for a title job: the commit stands, and the
                    // redelivered commands queue the same events again.
                    tracing::warn!(conversation_id = %cmd.conversation_id, error = %e, "could not queue events");
                    fail_rest(&mut outcome, &list[next..]);
                    return outcome;
                }
                let now = deps.clock.now();
                for c in &commands {
                    outcome.max_lag_ms = outcome.max_lag_ms.max((now - c.accepted_at).num_milliseconds());
                }
                outcome.messages_persisted += plan.chunks.iter().map(|c| c.messages.len() as u64).sum::<u64>();
                outcome.commands_applied += plan.applied;
                outcome.duplicates_skipped += plan.duplicates;
                next = run_end;
                conflicts = 0;
            }
            Err(StoreError::Conflict(what)) if conflicts < CONFLICT_RETRIES => {
                // Someone else wrote the conversation (a PATCH, a title, a
                // second worker): read it again and re-plan; what was
                // applied is recognised.
                tracing::debug!(conversation_id = %cmd.conversation_id, %what, "commit conflict; retrying");
                conflicts += 1;
            }
            Err(e) => {
                tracing::warn!(conversation_id = %cmd.conversation_id, error = %e, "commit failed");
                fail_rest(&mut outcome, &list[next..]);
                return outcome;
            }
        }
    }
    outcome
}

/// The tags of old commands (see [`REPLAY_CHECK_AFTER_SECONDS`]) whose
/// messages are already stored: read from the newest chunk back to the
/// ones stored before the oldest such command was accepted.
async fn already_stored(
    deps: &Deps,
    record: &ConversationRecord,
    commands: &[&WriteCommand],
    every: bool,
) -> Result<HashSet<CommandTag>, StoreError> {
    let cutoff = deps.clock.now() - chrono::Duration::seconds(REPLAY_CHECK_AFTER_SECONDS);
    // A command's messages are stored together (a chunk holds whole
    // commands), so any one of them found means the command was applied.
    let old: Vec<(&WriteCommand, Vec<&str>)> = commands
        .iter()
        .filter(|c| {
            (every || c.accepted_at < cutoff) && !record.head.recent_commands.contains(&command_tag(&c.command_id))
        })
        .filter_map(|c| match &c.kind {
            WriteKind::Append { messages } => Some((*c, messages.iter().map(|m| m.message_id.as_str()).collect())),
            WriteKind::End { .. }
            | WriteKind::Erase { .. }
            | WriteKind::EraseUser { .. }
            | WriteKind::Remove { .. }
            | WriteKind::Clear => None,
        })
        .collect();
    let Some(oldest) = old.iter().map(|(c, _)| c.accepted_at).min() else {
        return Ok(HashSet::new());
    };
    // acceptedAt grows with the index (up to the skew between two API
    // instances); a minute's margin covers it.
    let stop = oldest - chrono::Duration::seconds(60);
    let wanted: HashSet<&str> = old.iter().flat_map(|(_, ids)| ids.iter().copied()).collect();
    let mut found: HashSet<String> = HashSet::new();
    let mut cursor = None;
    loop {
        let page = deps
            .store
            .list_messages(
                record.id(),
                &MessageQuery {
                    cursor,
                    limit: 200,
                    order: Order::Desc,
                    ..MessageQuery::default()
                },
            )
            .await?;
        let past = page.items.last().is_none_or(|m| m.accepted_at < stop);
        found.extend(
            page.items
                .into_iter()
                .filter(|m| wanted.contains(m.message_id.as_str()))
                .map(|m| m.message_id),
        );
        match page.next_cursor {
            Some(c) if !past => cursor = Some(c),
            _ => break,
        }
    }
    Ok(old
        .iter()
        .filter(|(_, ids)| ids.iter().any(|m| found.contains(*m)))
        .map(|(c, _)| command_tag(&c.command_id))
        .collect())
}

/// An erasure's guard, run in the conversation's FIFO group behind every
/// write accepted before the erasure: a write that read the conversation
/// before it was marked, and stored a chunk after the erasure swept, is
/// deleted now.
///
/// Once the conversation is gone (the worker finishes an erasure the API
/// has not finished yet: the same idempotent steps), the erasure is
/// announced (`conversation.erased`; a redelivered guard announces it again
/// with the same id).
async fn erase_leftovers(deps: &Deps, cmd: &WriteCommand) -> Result<(), DomainError> {
    let mut gone = false;
    for _ in 0..CONFLICT_RETRIES {
        match deps.store.get_conversation(&cmd.conversation_id).await? {
            Some(record) if !record.deleting => {
                tracing::error!(conversation_id = %cmd.conversation_id, "erase command for a conversation not being erased; ignored");
                return Ok(());
            }
            Some(record) => {
                if crate::erasure::finish_erasure(deps, &record).await? {
                    gone = true;
                    break;
                }
            }
            None => {
                deps.store.delete_conversation_items(&cmd.conversation_id).await?;
                gone = true;
                break;
            }
        }
    }
    if !gone {
        return Err(DomainError::Unavailable("the erased conversation kept changing".into()));
    }
    match &cmd.kind {
        WriteKind::Erase {
            user_id: Some(user_id),
            agent_id,
        } => {
            let event = events::conversation_erased(
                &cmd.owner_id,
                &cmd.conversation_id,
                user_id,
                agent_id.as_deref(),
                cmd.accepted_at,
            );
            deps.events
                .send_events(&[event])
                .await
                .map_err(|e| DomainError::Unavailable(e.to_string()))
        }
        _ => Ok(()),
    }
}

/// How many chunks a removal reads per request.
const REMOVAL_PAGE: usize = 25;

/// A removal (`Remove` of one message, `Clear` of every message accepted
/// before it): tombstones in place of the messages, the first-message
/// preview cleared from every chunk when the first message goes (each
/// chunk's head carries it), the conversation item rewritten so its copy
/// of the previews names nothing removed, and the command remembered in
/// the newest chunk's head last, so that `after=` sees it applied only
/// once it is. Idempotent: a redelivery writes the same tombstones, and a
/// `Clear` redelivered late leaves the messages accepted after it alone.
async fn apply_removal(deps: &Deps, cmd: &WriteCommand) -> Result<(), StoreError> {
    let Some(record) = deps.store.get_conversation(&cmd.conversation_id).await? else {
        return Ok(());
    };
    if record.deleting || record.conversation.owner_id != cmd.owner_id {
        return Ok(());
    }
    let cid = record.id().to_string();
    let target = match &cmd.kind {
        WriteKind::Remove { message_id, index } => Some((message_id.as_str(), *index)),
        _ => None,
    };
    let first_goes = target.is_none_or(|(_, index)| index == 0);
    // One message: only its chunk, unless it is the first. Otherwise every
    // chunk, newest first.
    let mut below = match target {
        Some((_, index)) if !first_goes => Some(index + 1),
        _ => None,
    };
    loop {
        let limit = if first_goes { REMOVAL_PAGE } else { 1 };
        let chunks = deps.store.chunks_desc(&cid, below, limit).await?;
        let Some(last) = chunks.last() else { break };
        below = Some(last.first_index);
        for mut chunk in chunks {
            let mut changed = false;
            for m in chunk.messages.iter_mut() {
                let hit = match target {
                    Some((id, index)) => m.message_index == index && m.message_id == id,
                    None => m.accepted_at <= cmd.accepted_at,
                };
                if hit && !m.removed {
                    *m = m.tombstone();
                    changed = true;
                }
            }
            if first_goes {
                let clear = chunk.head.first_message_preview.take().is_some();
                let sealed = chunk.head.sealed_first_preview.take().is_some();
                changed |= clear || sealed;
            }
            if changed {
                deps.store.rewrite_chunk(&chunk).await?;
            }
        }
        if !first_goes || below == Some(0) {
            break;
        }
    }
    // The conversation item's copy of the previews, as the chunks now read.
    for _ in 0..CONFLICT_RETRIES {
        let Some(mut now) = deps.store.get_conversation(&cid).await? else {
            return Ok(());
        };
        if now.deleting {
            return Ok(());
        }
        let Some(newest) = now.head_chunk else { return Ok(()) };
        let expected = now.version;
        now.version += 1;
        remember(&mut now.head, command_tag(&cmd.command_id));
        // A sealed last preview kept from the conversation item may be the
        // removed message's: dropped (readers take the last one from the
        // newest chunk; an ended conversation's list entry gets it back from
        // the title job queued below, which holds the key).
        let refresh = now.key_id.is_some() && now.sealed.remove(crate::model::LAST_PREVIEW).is_some();
        match deps.store.put_conversation(&now, expected).await {
            Ok(()) => {
                if refresh
                    && now.conversation.status != ConversationStatus::Active
                    && let Err(e) = deps
                        .titles
                        .send_title(&title_job(&now, TitleReason::SessionEnded))
                        .await
                {
                    tracing::warn!(conversation_id = %cid, error = %e, "could not queue the previews' refresh");
                }
                return deps.store.update_head(&cid, newest, &now.head).await;
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict(
        "the conversation kept moving during a removal".into(),
    ))
}

/// Writes a plan in the order that keeps every crash point recoverable
/// (see the module's documentation).
pub async fn write_plan(store: &dyn ConversationStore, plan: &Plan) -> Result<(), StoreError> {
    if !plan.changed {
        return Ok(());
    }
    let id = plan.record.id();
    let expires = plan.record.conversation.expires_at;
    if !plan.claims.is_empty() {
        store.claim_external_ids(id, &plan.claims, expires).await?;
    }
    if !plan.flag_pointers.is_empty() {
        store.put_flag_pointers(id, &plan.flag_pointers, expires).await?;
    }
    // A flag alone goes first, so that a conversation never shows a flagged
    // message before its own flag (replayed, it changes nothing). What
    // touches the user's totals (an end, messages after it) goes last, so
    // that the conversation item's snapshot of the counters never runs
    // ahead of the chunks.
    let meta_first = plan.meta_changed && plan.stats.is_none();
    if meta_first {
        store
            .put_conversation_with(&plan.record, plan.expected_version, None)
            .await?;
    }
    for (chunk, tags) in plan.chunks.iter().zip(&plan.chunk_commands) {
        match store.put_chunk(chunk).await? {
            ChunkWrite::Stored => {}
            ChunkWrite::Taken(theirs) if tags.iter().all(|t| theirs.contains(t)) => {
                // Another worker holding the same records stored this very
                // chunk: ours is a duplicate.
            }
            ChunkWrite::Taken(_) => {
                return Err(StoreError::Conflict(format!(
                    "message index {} is taken by other commands",
                    chunk.first_index
                )));
            }
        }
    }
    if plan.chunks.is_empty()
        && plan.head_changed
        && let Some(newest) = plan.record.head_chunk
    {
        store.update_head(id, newest, &plan.record.head).await?;
    }
    if plan.meta_changed && !meta_first {
        store
            .put_conversation_with(&plan.record, plan.expected_version, plan.stats)
            .await?;
    }
    Ok(())
}

fn fail_rest(outcome: &mut BatchOutcome, rest: &[Delivery]) {
    outcome.failed.extend(rest.iter().map(|d| d.record_id.clone()));
}

/// The end (exclusive) of the run of decodable commands starting at `start`
/// (always at least one).
fn run_end(list: &[Delivery], start: usize) -> usize {
    let mut end = start + 1;
    while end < list.len() && list[end].command.as_ref().is_ok_and(|c| !stands_alone(c)) {
        end += 1;
    }
    end
}

/// Commands applied on their own, not in a commit with others.
fn stands_alone(cmd: &WriteCommand) -> bool {
    matches!(
        cmd.kind,
        WriteKind::Erase { .. } | WriteKind::EraseUser { .. } | WriteKind::Remove { .. } | WriteKind::Clear
    )
}

/// The result of applying commands to a conversation in memory, and the
/// writes that store it.
#[derive(Debug)]
pub struct Plan {
    /// The conversation once every command is applied.
    pub record: ConversationRecord,
    /// The version of the conversation item the plan read.
    pub expected_version: u64,
    /// The conversation item must be written (a rarely changing field moved).
    pub meta_changed: bool,
    /// With it, this change to the user's totals.
    pub stats: Option<StatsDelta>,
    /// `(externalId, messageId)` to claim before the messages are stored.
    pub claims: Vec<(String, String)>,
    /// `(messageIndex, chunk first index)` of flagged messages.
    pub flag_pointers: Vec<(u64, u64)>,
    pub chunks: Vec<Chunk>,
    /// The tags of the commands whose messages each chunk holds.
    pub chunk_commands: Vec<Vec<CommandTag>>,
    /// Commands were applied that store no message (repeats): the newest
    /// chunk's head must be rewritten when no chunk is written.
    pub head_changed: bool,
    /// False when every command was already applied: nothing to write.
    pub changed: bool,
    pub title_jobs: Vec<TitleJob>,
    /// The events of what this commit applies, and of the redelivered
    /// commands it recognises (again, with the same ids: their first
    /// queueing may have failed).
    pub events: Vec<CloudEvent>,
    pub applied: u64,
    pub duplicates: u64,
}

fn push_event(events: &mut Vec<CloudEvent>, e: CloudEvent) {
    if !events.iter().any(|x| x.id == e.id) {
        events.push(e);
    }
}

/// The events of one message of `cmd`: its verdict's, and the
/// conversation's first flag when this command set it — now, or in an
/// earlier try whose conversation item was written before a chunk failed
/// (then the flag is already set).
fn announce_message(events: &mut Vec<CloudEvent>, c: &Conversation, seen: &FlaggedMessage<'_>, cmd: &WriteCommand) {
    if seen.safety.action != SafetyAction::Safe && c.flagged_at == Some(cmd.accepted_at) {
        push_event(events, events::conversation_flagged(c, seen));
    }
    for e in events::message_events(c, seen) {
        push_event(events, e);
    }
}

/// What an externalId's claim holds: the message and the command that
/// claimed it. A message's id alone would not do: the id of a message with
/// an externalId is derived from it (every send of one externalId has the
/// same id), so only the command tells a redelivery of the claiming command
/// (whose commit a crash cut after the claim: it goes on) from a re-send by
/// another command (a repeat: dropped).
fn claim_token(m: &AcceptedMessage, cmd: &WriteCommand) -> String {
    format!("{} {}", m.message_id, cmd.command_id)
}

/// Whether a claim is this message's own, by this command. A claim holding
/// a message id alone was written by a worker of format 3 for a command of
/// format 3, whose message ids are random: it matches only that message.
fn own_claim(holder: &str, m: &AcceptedMessage, cmd: &WriteCommand) -> bool {
    holder == claim_token(m, cmd) || holder == m.message_id
}

/// Applies `commands` to `record` in order, pure and deterministic.
/// `existing_external` maps the externalIds already claimed to the message
/// holding each; `stored` holds the tags of commands found stored although
/// the head no longer remembers them (see [`REPLAY_CHECK_AFTER_SECONDS`]).
pub fn plan_commit(
    record: ConversationRecord,
    commands: &[&WriteCommand],
    mut existing_external: HashMap<String, String>,
    stored: &HashSet<CommandTag>,
    config: &Config,
) -> Plan {
    let expected_version = record.version;
    let mut rec = record;
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut chunk_commands: Vec<Vec<CommandTag>> = Vec::new();
    let mut open_bytes = 0usize;
    let mut claims = Vec::new();
    let mut flag_pointers = Vec::new();
    let mut meta_changed = false;
    let mut stats: Option<StatsDelta> = None;
    let mut head_changed = false;
    let mut title_jobs_out = Vec::new();
    let mut events_out: Vec<CloudEvent> = Vec::new();
    let mut applied = 0;
    let mut duplicates = 0;
    let mut claimed_here: HashSet<String> = HashSet::new();
    // Messages stored after the end that the totals do not count yet (the
    // worker stopped between a chunk and the conversation item): count them.
    if let Some(counted) = rec.counted_messages
        && rec.conversation.status != ConversationStatus::Active
        && counted < rec.conversation.message_count
    {
        stats.get_or_insert_with(StatsDelta::default).messages += (rec.conversation.message_count - counted) as i64;
        rec.counted_messages = Some(rec.conversation.message_count);
        meta_changed = true;
    }
    for cmd in commands {
        let tag = command_tag(&cmd.command_id);
        if cmd.owner_id != rec.conversation.owner_id {
            tracing::error!(command_id = %cmd.command_id, "write command names another owner; dropped");
            continue;
        }
        match &cmd.kind {
            WriteKind::Append { messages: incoming } => {
                if rec.head.recent_commands.contains(&tag) || stored.contains(&tag) {
                    duplicates += 1;
                    // Its messages are stored; what they do to the
                    // conversation item may not be (a stop before it).
                    for m in incoming {
                        let repeat = m
                            .external_id
                            .as_ref()
                            .is_some_and(|ext| existing_external.get(ext).is_some_and(|h| !own_claim(h, m, cmd)));
                        if !repeat {
                            flag_conversation(&mut rec.conversation, &m.safety, cmd, &mut meta_changed);
                            let seen = FlaggedMessage {
                                message_id: &m.message_id,
                                message_index: None,
                                role: m.role,
                                safety: &m.safety,
                                accepted_at: cmd.accepted_at,
                            };
                            announce_message(&mut events_out, &rec.conversation, &seen, cmd);
                        }
                    }
                    // ... nor its early title job (a send that failed).
                    let c = &rec.conversation;
                    if rec.head.title_requested && c.title.is_none() && title_jobs_out.is_empty() {
                        title_jobs_out.push(title_job(&rec, TitleReason::EarlyExchanges));
                    }
                    continue;
                }
                let mut stored = Vec::new();
                for m in incoming {
                    if let Some(ext) = &m.external_id {
                        let holder = existing_external.get(ext);
                        let held_by_other = holder.is_some_and(|holder| !own_claim(holder, m, cmd));
                        if held_by_other || !claimed_here.insert(ext.clone()) {
                            duplicates += 1;
                            continue;
                        }
                        // Claimed already by this message (a commit a crash
                        // cut after its claims): the claim stands as it is,
                        // in whichever form it was written.
                        if holder.is_none() {
                            let token = claim_token(m, cmd);
                            existing_external.insert(ext.clone(), token.clone());
                            claims.push((ext.clone(), token));
                        }
                    }
                    let message = append_message(&mut rec, m, cmd, &mut meta_changed);
                    announce_message(&mut events_out, &rec.conversation, &FlaggedMessage::from(&message), cmd);
                    if rec.conversation.status != ConversationStatus::Active {
                        // Accepted before the end was applied, stored after
                        // it: kept (it was answered 202), and counted in the
                        // user's totals once.
                        let counted = rec.counted_messages.unwrap_or(0);
                        if message.message_index >= counted {
                            rec.counted_messages = Some(message.message_index + 1);
                            stats.get_or_insert_with(StatsDelta::default).messages += 1;
                            meta_changed = true;
                        }
                    }
                    stored.push(message);
                }
                count_rate(&mut rec.head, cmd);
                remember(&mut rec.head, tag);
                let c = &rec.conversation;
                if c.title.is_none()
                    && !rec.head.title_requested
                    && c.message_count >= config.early_title_after_messages
                {
                    rec.head.title_requested = true;
                    title_jobs_out.push(title_job(&rec, TitleReason::EarlyExchanges));
                }
                if stored.is_empty() {
                    head_changed = true;
                } else {
                    let bytes: usize = stored.iter().map(message_weight).sum();
                    let open = chunks.last_mut().filter(|_| open_bytes + bytes <= CHUNK_TARGET_BYTES);
                    match open {
                        Some(chunk) => {
                            chunk.messages.extend(stored);
                            open_bytes += bytes;
                            if let Some(tags) = chunk_commands.last_mut() {
                                tags.push(tag);
                            }
                        }
                        None => {
                            chunks.push(Chunk {
                                conversation_id: rec.conversation.conversation_id.clone(),
                                first_index: stored[0].message_index,
                                messages: stored,
                                head: rec.current_head(),
                                expires_at: rec.conversation.expires_at,
                            });
                            chunk_commands.push(vec![tag]);
                            open_bytes = bytes;
                        }
                    }
                    for m in chunks.last().map(|c| c.messages.as_slice()).unwrap_or_default() {
                        if m.flagged && !flag_pointers.iter().any(|(i, _)| *i == m.message_index) {
                            let first = chunks.last().map(|c| c.first_index).unwrap_or_default();
                            flag_pointers.push((m.message_index, first));
                        }
                    }
                }
                // Every chunk carries the head as of its own last message.
                if let Some(chunk) = chunks.last_mut() {
                    chunk.head = rec.current_head();
                    rec.head_chunk = Some(chunk.first_index);
                }
                applied += 1;
            }
            // Applied on their own (`run_end` stops before them).
            WriteKind::Erase { .. } | WriteKind::EraseUser { .. } | WriteKind::Remove { .. } | WriteKind::Clear => {
                continue;
            }
            WriteKind::End { reason } => {
                if rec.conversation.status != ConversationStatus::Active {
                    if rec.end_command == Some(tag) || rec.head.recent_commands.contains(&tag) {
                        duplicates += 1;
                        if rec.end_command == Some(tag) {
                            push_event(&mut events_out, events::session_ended(&rec.conversation, *reason));
                        }
                    } else if rec.head_chunk.is_some() {
                        // An end after the end (the sweeper's came first):
                        // nothing to do, but an `after=` read waits for it.
                        remember(&mut rec.head, tag);
                        head_changed = true;
                        applied += 1;
                    }
                    // A redelivered end whose title job may not have been queued.
                    if needs_title(&rec) {
                        title_jobs_out.push(title_job(&rec, TitleReason::SessionEnded));
                    }
                    continue;
                }
                let ended = end_conversation(&mut rec, *reason, cmd);
                let delta = stats.get_or_insert_with(StatsDelta::default);
                delta.conversations += ended.conversations;
                delta.messages += ended.messages;
                delta.seconds += ended.seconds;
                delta.at = ended.at;
                rec.end_command = Some(tag);
                rec.counted_messages = Some(rec.conversation.message_count);
                meta_changed = true;
                push_event(&mut events_out, events::session_ended(&rec.conversation, *reason));
                // A sealed conversation's job also refreshes the previews the
                // conversation item keeps for lists (this worker cannot: it
                // holds no key, and the last message's preview is sealed).
                if rec.conversation.title_source != Some(TitleSource::User) || rec.key_id.is_some() {
                    title_jobs_out.push(title_job(&rec, TitleReason::SessionEnded));
                }
                applied += 1;
            }
        }
    }
    if meta_changed {
        rec.version = expected_version + 1;
    }
    let changed = meta_changed || !chunks.is_empty() || head_changed;
    Plan {
        record: rec,
        expected_version,
        meta_changed,
        stats,
        claims,
        flag_pointers,
        chunks,
        chunk_commands,
        head_changed,
        changed,
        title_jobs: title_jobs_out,
        events: events_out,
        applied,
        duplicates,
    }
}

/// A message's share of a chunk, for packing: what it adds to the item.
fn message_weight(m: &Message) -> usize {
    let metadata = if m.metadata.is_empty() {
        0
    } else {
        serde_json::to_vec(&m.metadata).map(|v| v.len()).unwrap_or(0)
    };
    let sealed: usize = m.sealed.values().map(|v| v.0.len() + 4).sum();
    m.content.len() + metadata + m.audio_url.as_ref().map_or(0, String::len) + sealed + 80
}

/// Adds a command to the ones the head remembers, forgetting the oldest.
fn remember(head: &mut HeadState, tag: CommandTag) {
    head.recent_commands.push(tag);
    let overflow = head.recent_commands.len().saturating_sub(RECENT_COMMANDS);
    head.recent_commands.drain(..overflow);
}

/// Counts an applied append in its minute (by acceptance time).
fn count_rate(head: &mut HeadState, cmd: &WriteCommand) {
    let minute = cmd.accepted_at.timestamp().div_euclid(60);
    match head.rate_window {
        Some(w) if w == minute => head.rate_count = head.rate_count.saturating_add(1),
        Some(w) if w > minute => {}
        _ => {
            head.rate_window = Some(minute);
            head.rate_count = 1;
        }
    }
}

fn needs_title(rec: &ConversationRecord) -> bool {
    rec.conversation.title_source != Some(TitleSource::User) && rec.conversation.title_generated_at.is_none()
}

fn title_job(rec: &ConversationRecord, reason: TitleReason) -> TitleJob {
    TitleJob {
        conversation_id: rec.conversation.conversation_id.clone(),
        owner_id: rec.conversation.owner_id.clone(),
        reason,
    }
}

fn append_message(
    rec: &mut ConversationRecord,
    m: &AcceptedMessage,
    cmd: &WriteCommand,
    meta_changed: &mut bool,
) -> Message {
    // The conversation stage: the rolling risk moves with every message, in
    // order; the message that brings it to its threshold is stored flagged
    // with a `conversation` finding, and flags the conversation.
    let mut safety = m.safety.clone();
    if let Some(risk) = &m.risk {
        let before = rec.head.risk_milli as f32 / 1000.0;
        let after = crate::screening::next_risk(before, risk);
        rec.head.risk_milli = (after * 1000.0).round() as u32;
        if after >= risk.threshold && before < risk.threshold {
            conversation_finding(&mut safety, after);
        }
    }
    let c = &mut rec.conversation;
    let flagged = safety.action != SafetyAction::Safe;
    let blocked = safety.action == SafetyAction::Blocked;
    let message = Message {
        message_id: m.message_id.clone(),
        conversation_id: c.conversation_id.clone(),
        message_index: c.message_count,
        role: m.role,
        content: m.content.clone(),
        created_at: m.created_at,
        accepted_at: cmd.accepted_at,
        external_id: m.external_id.clone(),
        direction: m.direction,
        audio_url: m.audio_url.clone(),
        flagged,
        blocked,
        flag_reason: if flagged { safety.reason.clone() } else { None },
        safety: safety.clone(),
        metadata: m.metadata.clone(),
        tool_calls: m.tool_calls.clone(),
        tool_call_id: m.tool_call_id.clone(),
        removed: false,
        sealed: crate::sealing::stored_fields(m),
    };
    c.message_count += 1;
    // An ended session's last activity stays within it.
    if c.status == ConversationStatus::Active && cmd.accepted_at > c.last_activity_at {
        c.last_activity_at = cmd.accepted_at;
    }
    // Only the first message sets it: once removed, nothing takes its place.
    // A sealed message comes with its preview sealed by the API.
    match m.sealed.get(crate::model::PREVIEW) {
        Some(sealed) => {
            if message.message_index == 0 {
                rec.conversation.first_message_preview = None;
                rec.sealed.insert(crate::model::FIRST_PREVIEW.into(), sealed.clone());
            }
            rec.conversation.last_message_preview = None;
            rec.sealed.insert(crate::model::LAST_PREVIEW.into(), sealed.clone());
        }
        None => {
            let shown = preview_of(&message);
            if message.message_index == 0 {
                rec.conversation.first_message_preview = Some(shown.clone());
                rec.sealed.remove(crate::model::FIRST_PREVIEW);
            }
            rec.conversation.last_message_preview = Some(shown);
            rec.sealed.remove(crate::model::LAST_PREVIEW);
        }
    }
    flag_conversation(&mut rec.conversation, &safety, cmd, meta_changed);
    message
}

/// Marks a verdict with the conversation stage's grooming finding (the
/// message is then flagged, at high severity at least).
fn conversation_finding(safety: &mut SafetyVerdict, level: f32) {
    if !safety.categories.iter().any(|c| c == "grooming") {
        safety.categories.push("grooming".into());
    }
    safety.findings.push(SafetyFinding {
        category: "grooming".into(),
        stage: SafetyStage::Conversation,
        severity: Severity::High,
        probability: Some((f64::from(level) * 1000.0).round() / 1000.0),
    });
    safety.severity = safety.severity.max(Some(Severity::High));
    if safety.action == SafetyAction::Safe {
        safety.action = SafetyAction::Flagged;
        safety.score = safety.score.min(0.65);
    }
    safety.reason = Some(match safety.reason.take() {
        Some(r) => format!("{r}; conversation grooming"),
        None => "conversation grooming".into(),
    });
}

/// The category a verdict is summarised by: its most severe finding's (the
/// first of equals), else its first category.
fn most_severe_category(safety: &SafetyVerdict) -> String {
    let mut best: Option<&SafetyFinding> = None;
    for f in &safety.findings {
        if best.is_none_or(|b| f.severity > b.severity) {
            best = Some(f);
        }
    }
    best.map(|f| f.category.clone())
        .or_else(|| safety.categories.first().cloned())
        .unwrap_or_else(|| "content".into())
}

/// What a flagged or blocked message does to its conversation: the first
/// flag sets the flag fields (for review), a later one may raise the
/// severity. Applying it twice changes nothing.
/// The conversation is summarised by its most severe category: a later,
/// more severe message moves its type and reason with its severity.
fn flag_conversation(c: &mut Conversation, safety: &SafetyVerdict, cmd: &WriteCommand, meta_changed: &mut bool) {
    if safety.action == SafetyAction::Safe {
        return;
    }
    let blocked = safety.action == SafetyAction::Blocked;
    let severity = safety
        .severity
        .unwrap_or(if blocked { Severity::High } else { Severity::Medium });
    if !c.flagged {
        c.flagged = true;
        c.flag_type = Some(most_severe_category(safety));
        c.flag_reason = safety.reason.clone();
        c.severity = Some(severity);
        c.flag_status = Some(FlagStatus::Unreviewed);
        c.flagged_at = Some(cmd.accepted_at);
        *meta_changed = true;
    } else if c.severity.is_none_or(|s| s < severity) {
        c.severity = Some(severity);
        c.flag_type = Some(most_severe_category(safety));
        c.flag_reason = safety.reason.clone();
        *meta_changed = true;
    }
}

fn end_conversation(rec: &mut ConversationRecord, reason: EndReason, cmd: &WriteCommand) -> StatsDelta {
    let c = &mut rec.conversation;
    // An idle session ended when it was last active, not when swept.
    let end = match reason {
        EndReason::Client => cmd.accepted_at.max(c.last_activity_at),
        EndReason::Idle => c.last_activity_at,
    };
    let seconds = (end - c.start_time).num_seconds().max(0);
    c.status = ConversationStatus::Ended;
    c.end_time = Some(end);
    c.duration_seconds = Some(seconds);
    c.duration_minutes = Some((seconds + 30) / 60);
    StatsDelta {
        conversations: 1,
        messages: c.message_count as i64,
        seconds,
        at: Some(c.start_time),
    }
}
