//! The `persist-writes` worker's rules: apply queued write commands to the
//! store in queue order, exactly once.
//!
//! Exactly once: each conversation remembers the ids of its most recent
//! commands ([`RECENT_COMMANDS`]); a commit is conditional on the version it
//! read, so two workers can never both apply one command, and a redelivered
//! command (a crash after the commit, a replayed batch) is recognised and
//! acknowledged without change. SQS FIFO redelivers only the unacknowledged
//! tail of a group, which is always among the most recent commands.
//!
//! In order: records are grouped by conversation (the FIFO group); when one
//! record of a group fails, every later record of that group in the batch is
//! reported failed too, unapplied, so redelivery keeps the order. The
//! exception is a record that cannot be decoded: it carries no write, so the
//! records behind it are applied and it alone is retried, until SQS parks it
//! in the dead-letter queue.

use std::collections::HashSet;

use convo_schema::commands::{AcceptedMessage, EndReason, TitleJob, TitleReason, WriteCommand, WriteKind};
use convo_schema::limits::PREVIEW_CHARS;
use convo_schema::{ConversationStatus, FlagStatus, Message, SafetyAction, Severity, TitleSource};
use futures::future::join_all;

use crate::ports::*;
use crate::{Config, Deps};

/// How many applied command ids a conversation remembers. SQS redelivers at
/// most one unacknowledged batch (≤ 10 records) per FIFO group; 32 leaves a
/// wide margin.
pub const RECENT_COMMANDS: usize = 32;

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
        let command = serde_json::from_str::<WriteCommand>(body).map_err(|e| e.to_string());
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
                // It can never succeed and changes no state, so it cannot
                // break the order of the others: it alone is reported (and
                // reaches the dead-letter queue after maxReceiveCount) while
                // the records behind it go on. Failing them with it would
                // send them to the dead-letter queue together.
                tracing::error!(record_id = %list[next].record_id, %reason, "undecodable write command");
                outcome.failed.push(list[next].record_id.clone());
                next += 1;
                continue;
            }
        };
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
        let chunk_end = chunk_end(&list, next, deps.store.max_messages_per_commit());
        let commands: Vec<&WriteCommand> = list[next..chunk_end]
            .iter()
            .filter_map(|d| d.command.as_ref().ok())
            .collect();
        let external_ids: Vec<String> = commands
            .iter()
            .flat_map(|c| match &c.kind {
                WriteKind::Append { messages } => messages.iter().filter_map(|m| m.external_id.clone()).collect(),
                WriteKind::End { .. } => Vec::new(),
            })
            .collect();
        let existing = if external_ids.is_empty() {
            HashSet::new()
        } else {
            match deps
                .store
                .existing_external_ids(&cmd.conversation_id, &external_ids)
                .await
            {
                Ok(set) => set,
                Err(e) => {
                    tracing::warn!(conversation_id = %cmd.conversation_id, error = %e, "could not read external ids");
                    fail_rest(&mut outcome, &list[next..]);
                    return outcome;
                }
            }
        };
        let plan = plan_commit(record, &commands, existing, &deps.config);
        let result = if plan.changed {
            deps.store.commit(&plan.commit).await
        } else {
            Ok(())
        };
        match result {
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
                let now = deps.clock.now();
                for c in &commands {
                    outcome.max_lag_ms = outcome.max_lag_ms.max((now - c.accepted_at).num_milliseconds());
                }
                outcome.messages_persisted += plan.commit.messages.len() as u64;
                outcome.commands_applied += plan.applied;
                outcome.duplicates_skipped += plan.duplicates;
                next = chunk_end;
                conflicts = 0;
            }
            Err(StoreError::Conflict(what)) if conflicts < CONFLICT_RETRIES => {
                // Someone else wrote the conversation (a PATCH, a title): read
                // it again and re-plan; applied commands are recognised.
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

fn fail_rest(outcome: &mut BatchOutcome, rest: &[Delivery]) {
    outcome.failed.extend(rest.iter().map(|d| d.record_id.clone()));
}

/// The end (exclusive) of the run of decodable commands starting at `start`
/// whose messages fit in one commit (always at least one command).
fn chunk_end(list: &[Delivery], start: usize, max_messages: usize) -> usize {
    let mut total = 0usize;
    let mut end = start;
    while end < list.len() {
        let Ok(cmd) = &list[end].command else { break };
        let n = match &cmd.kind {
            WriteKind::Append { messages } => messages.len(),
            WriteKind::End { .. } => 0,
        };
        if end > start && total + n > max_messages {
            break;
        }
        total += n;
        end += 1;
    }
    end
}

/// The result of applying commands to a conversation in memory.
#[derive(Debug)]
pub struct Plan {
    pub commit: Commit,
    /// False when every command was already applied: nothing to write.
    pub changed: bool,
    pub title_jobs: Vec<TitleJob>,
    pub applied: u64,
    pub duplicates: u64,
}

/// Applies `commands` to `record` in order, pure and deterministic.
pub fn plan_commit(
    record: ConversationRecord,
    commands: &[&WriteCommand],
    mut existing_external: HashSet<String>,
    config: &Config,
) -> Plan {
    let expected_version = record.version;
    let mut rec = record;
    let mut messages = Vec::new();
    let mut stats = None;
    let mut release_pair = false;
    let mut title_jobs = Vec::new();
    let mut applied = 0;
    let mut duplicates = 0;
    for cmd in commands {
        if rec.applied_commands.contains(&cmd.command_id) {
            duplicates += 1;
            // A redelivered end whose title job may not have been queued.
            if matches!(cmd.kind, WriteKind::End { .. }) && needs_title(&rec) {
                title_jobs.push(title_job(&rec, TitleReason::SessionEnded));
            }
            continue;
        }
        if cmd.owner_id != rec.conversation.owner_id {
            tracing::error!(command_id = %cmd.command_id, "write command names another owner; dropped");
            continue;
        }
        match &cmd.kind {
            WriteKind::Append { messages: incoming } => {
                let before = messages.len();
                for m in incoming {
                    if let Some(ext) = &m.external_id
                        && !existing_external.insert(ext.clone())
                    {
                        duplicates += 1;
                        continue;
                    }
                    messages.push(append_message(&mut rec, m, cmd));
                }
                // Accepted before the end was applied, stored after it: the
                // write is kept (it was answered 202) and the user's totals,
                // already counted at the end, take it in.
                if rec.conversation.status != ConversationStatus::Active {
                    let late = (messages.len() - before) as i64;
                    let delta = stats.get_or_insert_with(StatsDelta::default);
                    delta.messages += late;
                }
                let c = &rec.conversation;
                if c.title.is_none() && !rec.title_requested && c.message_count >= config.early_title_after_messages {
                    rec.title_requested = true;
                    title_jobs.push(title_job(&rec, TitleReason::EarlyExchanges));
                }
            }
            WriteKind::End { reason } => {
                if rec.conversation.status == ConversationStatus::Active {
                    let ended = end_conversation(&mut rec, *reason, cmd);
                    let delta = stats.get_or_insert_with(StatsDelta::default);
                    delta.conversations += ended.conversations;
                    delta.messages += ended.messages;
                    delta.seconds += ended.seconds;
                    delta.at = ended.at;
                    release_pair = true;
                    if rec.conversation.title_source != Some(TitleSource::User) {
                        rec.title_requested = true;
                        title_jobs.push(title_job(&rec, TitleReason::SessionEnded));
                    }
                }
            }
        }
        rec.applied_commands.push(cmd.command_id.clone());
        applied += 1;
    }
    let overflow = rec.applied_commands.len().saturating_sub(RECENT_COMMANDS);
    rec.applied_commands.drain(..overflow);
    let changed = applied > 0;
    if changed {
        rec.version = expected_version + 1;
    }
    Plan {
        commit: Commit {
            record: rec,
            expected_version,
            messages,
            stats,
            release_pair,
        },
        changed,
        title_jobs,
        applied,
        duplicates,
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

fn append_message(rec: &mut ConversationRecord, m: &AcceptedMessage, cmd: &WriteCommand) -> Message {
    let c = &mut rec.conversation;
    let flagged = m.safety.action != SafetyAction::Safe;
    let blocked = m.safety.action == SafetyAction::Blocked;
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
        flag_reason: if flagged { m.safety.reason.clone() } else { None },
        safety: m.safety.clone(),
        metadata: m.metadata.clone(),
    };
    c.message_count += 1;
    // An ended session's last activity stays within it.
    if c.status == ConversationStatus::Active && cmd.accepted_at > c.last_activity_at {
        c.last_activity_at = cmd.accepted_at;
    }
    let shown = preview(if blocked {
        "[withheld by moderation]"
    } else {
        &m.content
    });
    if c.first_message_preview.is_none() {
        c.first_message_preview = Some(shown.clone());
    }
    c.last_message_preview = Some(shown);
    if flagged {
        let severity = m
            .safety
            .severity
            .unwrap_or(if blocked { Severity::High } else { Severity::Medium });
        if !c.flagged {
            c.flagged = true;
            c.flag_type = Some(m.safety.categories.first().cloned().unwrap_or_else(|| "content".into()));
            c.flag_reason = m.safety.reason.clone();
            c.severity = Some(severity);
            c.flag_status = Some(FlagStatus::Unreviewed);
            c.flagged_at = Some(cmd.accepted_at);
        } else if c.severity.is_none_or(|s| s < severity) {
            c.severity = Some(severity);
        }
    }
    message
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

fn preview(content: &str) -> String {
    let mut out: String = content.chars().take(PREVIEW_CHARS).collect();
    if content.chars().count() > PREVIEW_CHARS {
        out.push('…');
    }
    out
}
