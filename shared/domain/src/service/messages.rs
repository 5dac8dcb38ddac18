//! Writes to a conversation's messages: append, end, remove, clear — each
//! validated, screened where it carries content, and queued in order.

use super::*;
use crate::ApiDeps;

/// Validates, screens and enqueues an exchange; answers before anything is
/// stored. The worker assigns indexes and applies it in queue order.
pub async fn append_messages(
    deps: &ApiDeps,
    owner_id: &str,
    conversation_id: &str,
    req: AppendRequest,
    idempotency: Option<IdempotencyKey>,
) -> Result<AppendResponse, DomainError> {
    let now = deps.clock.now();
    validate::append(&req, now)?;
    let record = load_owned(deps, owner_id, conversation_id).await?;
    let key = message_key(deps, &record).await?;
    let response = accept(deps, conversation_id, "append", idempotency, || async {
        ensure_active(&record)?;
        rate_limit(deps, &record, now)?;
        let command_id = deps.ids.new_id();
        let redact = |text: String| match record.conversation.redact_pii {
            true => deps.moderator.redact(&text).unwrap_or(text),
            false => text,
        };
        let mut all: Vec<AcceptedMessage> = req
            .messages
            .into_iter()
            .map(|m| {
                let tool_calls = m.tool_calls.unwrap_or_default();
                // Screened as written, the tools' arguments with the
                // content; stored masked when the conversation asks (the
                // verdict says what kind of data was found).
                let (safety, risk) = if tool_calls.is_empty() {
                    deps.moderator.screen_turn(&m.content)
                } else {
                    let mut all = m.content.clone();
                    for call in &tool_calls {
                        all.push('\n');
                        all.push_str(&call.arguments);
                    }
                    deps.moderator.screen_turn(&all)
                };
                AcceptedMessage {
                    // A message with an externalId has the id that externalId
                    // always gets in this conversation: a re-send, which the
                    // worker drops as a repeat, is answered with the id of
                    // the message stored first.
                    message_id: match &m.external_id {
                        Some(e) => external_message_id(conversation_id, e),
                        None => deps.ids.new_id(),
                    },
                    safety,
                    role: m.role,
                    content: redact(m.content),
                    created_at: m.created_at.unwrap_or(now),
                    external_id: m.external_id,
                    direction: m.direction,
                    audio_url: m.audio_url,
                    metadata: match record.conversation.redact_pii {
                        true => redact_values(m.metadata.unwrap_or_default(), &redact),
                        false => m.metadata.unwrap_or_default(),
                    },
                    tool_calls: tool_calls
                        .into_iter()
                        .map(|call| ToolCall {
                            arguments: redact(call.arguments),
                            ..call
                        })
                        .collect(),
                    tool_call_id: m.tool_call_id,
                    sealed: Default::default(),
                    risk,
                }
            })
            .collect();
        // Sealed after screening (the moderator reads the clear text), before
        // the queue: its bodies, dead letters and the worker never hold it.
        if let Some(key) = &key {
            for m in all.iter_mut() {
                let preview = crate::model::preview_of_accepted(m);
                crate::sealing::seal_accepted(key, owner_id, conversation_id, m, &preview)
                    .map_err(|e| DomainError::Unavailable(format!("cannot seal a message: {e}")))?;
            }
        }
        // An externalId repeated within the request is stored once, as one
        // repeated across requests is: the first message with it, whose id
        // and verdict the repeats are answered with.
        let mut first_with: HashMap<String, usize> = HashMap::new();
        let mut messages: Vec<AcceptedMessage> = Vec::with_capacity(all.len());
        let mut views = Vec::with_capacity(all.len());
        for m in all {
            let repeat_of = m.external_id.as_ref().and_then(|e| first_with.get(e).copied());
            let stored = match repeat_of {
                Some(at) => &messages[at],
                None => {
                    if let Some(e) = &m.external_id {
                        first_with.insert(e.clone(), messages.len());
                    }
                    messages.push(m);
                    &messages[messages.len() - 1]
                }
            };
            views.push(AcceptedMessageView {
                message_id: stored.message_id.clone(),
                role: stored.role,
                external_id: stored.external_id.clone(),
                safety: stored.safety.clone(),
            });
        }
        let response = AppendResponse {
            conversation_id: conversation_id.to_string(),
            command_id: command_id.clone(),
            accepted_at: now,
            blocked: messages.iter().any(|m| m.safety.action == SafetyAction::Blocked),
            messages: views,
        };
        let command = WriteCommand {
            v: WRITE_COMMAND_VERSION,
            command_id,
            conversation_id: conversation_id.to_string(),
            owner_id: owner_id.to_string(),
            accepted_at: now,
            kind: WriteKind::Append { messages },
        };
        Ok((command, response))
    })
    .await?;
    let count = |a: SafetyAction| response.messages.iter().filter(|m| m.safety.action == a).count() as f64;
    deps.metrics.record(&[
        ("MessagesAccepted", response.messages.len() as f64, "Count"),
        ("MessagesFlagged", count(SafetyAction::Flagged), "Count"),
        ("MessagesBlocked", count(SafetyAction::Blocked), "Count"),
    ]);
    Ok(response)
}

/// The message id of a message with an external id: derived from the
/// conversation and the external id (SHA-256, as a ULID-shaped id), so that
/// every send of one external id in one conversation names one message.
pub fn external_message_id(conversation_id: &str, external_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"convo message id\0");
    hasher.update(conversation_id.as_bytes());
    hasher.update(b"\0");
    hasher.update(external_id.as_bytes());
    let digest = hasher.finalize();
    let mut bits = [0u8; 16];
    bits.copy_from_slice(&digest[..16]);
    ulid::Ulid::from_bytes(bits).to_string()
}

/// Enqueues the end of a session behind every write accepted before it.
pub async fn end_session(
    deps: &Deps,
    owner_id: &str,
    conversation_id: &str,
    idempotency: Option<IdempotencyKey>,
) -> Result<EndResponse, DomainError> {
    let record = load_owned(deps, owner_id, conversation_id).await?;
    accept(deps, conversation_id, "end", idempotency, || async {
        ensure_active(&record)?;
        let command = crate::outbox::command(
            deps,
            owner_id,
            conversation_id,
            WriteKind::End {
                reason: EndReason::Client,
            },
        );
        let now = command.accepted_at;
        let answer = EndResponse {
            conversation_id: conversation_id.to_string(),
            command_id: command.command_id.clone(),
            accepted_at: now,
            status: "ending".to_string(),
        };
        Ok((command, answer))
    })
    .await
}

/// How far back `DELETE /conversations/{id}/messages/{messageId}` looks
/// for the message, in messages from the newest.
pub const REMOVE_SEARCH_MESSAGES: usize = 10_000;

/// Removes one message, after every write accepted before this request:
/// answers at once with the message as it is (the Agents SDK's `pop_item`
/// hands it back), and the worker leaves a tombstone in its place a moment
/// later. `after` waits for a write of the caller's first (so a message
/// just appended can be found).
pub async fn remove_message(
    deps: &ApiDeps,
    owner_id: &str,
    conversation_id: &str,
    message_id: &str,
    after: Option<&str>,
) -> Result<RemoveMessageResponse, DomainError> {
    let (record, seen) = load_after(deps, owner_id, conversation_id, after, false).await?;
    if seen == Some(AfterStatus::Pending) {
        // The message may be the one that write stores: looking now could
        // remove another, or find nothing (409 `request_in_progress`).
        return Err(DomainError::Conflict(
            ErrorCode::RequestInProgress,
            "the write named by after is not stored yet; retry shortly".into(),
        ));
    }
    if !is_conversation_id(message_id) {
        return Err(DomainError::MessageNotFound);
    }
    let mut cursor = None;
    let mut looked = 0;
    let found = loop {
        let page = deps
            .store
            .messages
            .list_messages(
                conversation_id,
                &MessageQuery {
                    cursor,
                    limit: MAX_PAGE_LIMIT,
                    order: Order::Desc,
                    known_count: Some(record.conversation.message_count),
                    ..MessageQuery::default()
                },
            )
            .await?;
        looked += page.items.len();
        if let Some(m) = page.items.into_iter().find(|m| m.message_id == message_id) {
            break Some(m);
        }
        match page.next_cursor {
            Some(c) if looked < REMOVE_SEARCH_MESSAGES => cursor = Some(c),
            _ => break None,
        }
    };
    let message = found.filter(|m| !m.removed).ok_or(DomainError::MessageNotFound)?;
    let command = crate::outbox::command(
        deps,
        owner_id,
        conversation_id,
        WriteKind::Remove {
            message_id: message.message_id.clone(),
            index: message.message_index,
        },
    );
    let now = command.accepted_at;
    send_write(deps, &command).await?;
    Ok(RemoveMessageResponse {
        conversation_id: conversation_id.to_string(),
        command_id: command.command_id,
        accepted_at: now,
        message,
    })
}

/// Removes every message accepted before this request; the conversation
/// stays (LangChain's `clear()`). Applied by the worker after every write
/// accepted before it.
pub async fn clear_messages(
    deps: &ApiDeps,
    owner_id: &str,
    conversation_id: &str,
) -> Result<ClearMessagesResponse, DomainError> {
    load_owned(deps, owner_id, conversation_id).await?;
    let command = crate::outbox::command(deps, owner_id, conversation_id, WriteKind::Clear);
    let now = command.accepted_at;
    send_write(deps, &command).await?;
    Ok(ClearMessagesResponse {
        conversation_id: conversation_id.to_string(),
        command_id: command.command_id,
        accepted_at: now,
    })
}
