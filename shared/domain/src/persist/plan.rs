//! A commit, planned in memory (`plan_commit`, pure) and written in its
//! crash-safe order (`write_plan`).

use super::*;

/// Writes a plan in the order that keeps every crash point recoverable
/// (see the module's documentation).
pub async fn write_plan(store: &crate::deps::Stores, plan: &Plan) -> Result<(), StoreError> {
    if !plan.changed {
        return Ok(());
    }
    let id = plan.record.id();
    let expires = plan.record.conversation.expires_at;
    if !plan.claims.is_empty() {
        store.messages.claim_external_ids(id, &plan.claims, expires).await?;
    }
    if !plan.flag_pointers.is_empty() {
        store
            .messages
            .put_flag_pointers(id, &plan.flag_pointers, expires)
            .await?;
    }
    // A flag alone goes first, so that a conversation never shows a flagged
    // message before its own flag (replayed, it changes nothing). What
    // touches the user's totals (an end, messages after it) goes last, so
    // that the conversation item's snapshot of the counters never runs
    // ahead of the chunks.
    let meta_first = plan.meta_changed && plan.stats.is_none();
    if meta_first {
        store
            .conversations
            .put_conversation_with(&plan.record, plan.expected_version, None)
            .await?;
    }
    for (chunk, tags) in plan.chunks.iter().zip(&plan.chunk_commands) {
        match store.messages.put_chunk(chunk).await? {
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
        store.messages.update_head(id, newest, &plan.record.head).await?;
    }
    if plan.meta_changed && !meta_first {
        store
            .conversations
            .put_conversation_with(&plan.record, plan.expected_version, plan.stats)
            .await?;
    }
    Ok(())
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
pub(crate) fn message_weight(m: &Message) -> usize {
    let metadata = if m.metadata.is_empty() {
        0
    } else {
        serde_json::to_vec(&m.metadata).map(|v| v.len()).unwrap_or(0)
    };
    let sealed: usize = m.sealed.values().map(|v| v.0.len() + 4).sum();
    m.content.len() + metadata + m.audio_url.as_ref().map_or(0, String::len) + sealed + 80
}

/// Adds a command to the ones the head remembers, forgetting the oldest.
pub(crate) fn remember(head: &mut HeadState, tag: CommandTag) {
    head.recent_commands.push(tag);
    let overflow = head.recent_commands.len().saturating_sub(RECENT_COMMANDS);
    head.recent_commands.drain(..overflow);
}

/// Counts an applied append in its minute (by acceptance time).
pub(crate) fn count_rate(head: &mut HeadState, cmd: &WriteCommand) {
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

pub(crate) fn needs_title(rec: &ConversationRecord) -> bool {
    rec.conversation.title_source != Some(TitleSource::User) && rec.conversation.title_generated_at.is_none()
}

pub(crate) fn title_job(rec: &ConversationRecord, reason: TitleReason) -> TitleJob {
    TitleJob {
        conversation_id: rec.conversation.conversation_id.clone(),
        owner_id: rec.conversation.owner_id.clone(),
        reason,
    }
}
