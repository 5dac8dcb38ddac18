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

mod apply;
mod plan;
mod removal;

use apply::*;
pub use plan::*;
use removal::*;

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
        let record = match deps.store.conversations.get_conversation(&cmd.conversation_id).await {
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
                .messages
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
        match write_plan(&deps.store, &plan).await {
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
            .messages
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
