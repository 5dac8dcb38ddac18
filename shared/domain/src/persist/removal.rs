//! What the worker does alone, outside a commit: the leftovers of an erased
//! conversation (at its erasure's guard) and the removal of messages.

use super::*;

/// An erasure's guard, run in the conversation's FIFO group behind every
/// write accepted before the erasure: a write that read the conversation
/// before it was marked, and stored a chunk after the erasure swept, is
/// deleted now.
///
/// Once the conversation is gone (the worker finishes an erasure the API
/// has not finished yet: the same idempotent steps), the erasure is
/// announced (`conversation.erased`; a redelivered guard announces it again
/// with the same id).
pub(crate) async fn erase_leftovers(deps: &Deps, cmd: &WriteCommand) -> Result<(), DomainError> {
    let mut gone = false;
    for _ in 0..CONFLICT_RETRIES {
        match deps.store.conversations.get_conversation(&cmd.conversation_id).await? {
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
                deps.store
                    .messages
                    .delete_conversation_items(&cmd.conversation_id)
                    .await?;
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
pub(crate) const REMOVAL_PAGE: usize = 25;

/// A removal (`Remove` of one message, `Clear` of every message accepted
/// before it): tombstones in place of the messages, the first-message
/// preview cleared from every chunk when the first message goes (each
/// chunk's head carries it), the conversation item rewritten so its copy
/// of the previews names nothing removed, and the command remembered in
/// the newest chunk's head last, so that `after=` sees it applied only
/// once it is. Idempotent: a redelivery writes the same tombstones, and a
/// `Clear` redelivered late leaves the messages accepted after it alone.
pub(crate) async fn apply_removal(deps: &Deps, cmd: &WriteCommand) -> Result<(), StoreError> {
    let Some(record) = deps.store.conversations.get_conversation(&cmd.conversation_id).await? else {
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
        let chunks = deps.store.messages.chunks_desc(&cid, below, limit).await?;
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
                deps.store.messages.rewrite_chunk(&chunk).await?;
            }
        }
        if !first_goes || below == Some(0) {
            break;
        }
    }
    // The conversation item's copy of the previews, as the chunks now read.
    for _ in 0..CONFLICT_RETRIES {
        let Some(mut now) = deps.store.conversations.get_conversation(&cid).await? else {
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
        match deps.store.conversations.put_conversation(&now, expected).await {
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
                return deps.store.messages.update_head(&cid, newest, &now.head).await;
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict(
        "the conversation kept moving during a removal".into(),
    ))
}
