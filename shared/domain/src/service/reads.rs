//! Reading a conversation's messages, a page at a time.

use super::*;
use crate::ApiDeps;

pub async fn list_messages(
    deps: &ApiDeps,
    owner_id: &str,
    conversation_id: &str,
    q: &MessagesQuery,
) -> Result<MessagePage, DomainError> {
    let MessagesQuery {
        limit,
        order,
        since,
        until,
        flagged,
        ..
    } = *q;
    let (record, after) = load_after(deps, owner_id, conversation_id, q.after.as_deref(), true).await?;
    if flagged {
        // The sparse index holds the flags in index order; a time window is
        // applied to what it lists, so a page can then hold fewer than
        // `limit` messages and still point on.
        let page = deps
            .store
            .messages
            .list_flagged_messages(conversation_id, order, q.cursor.as_deref(), limit)
            .await?;
        return Ok(MessagePage {
            conversation_id: conversation_id.to_string(),
            messages: page
                .items
                .into_iter()
                .filter(|m| {
                    !m.removed && since.is_none_or(|t| m.created_at >= t) && until.is_none_or(|t| m.created_at < t)
                })
                .collect(),
            next_cursor: page.next_cursor,
            after,
        });
    }
    let page = deps
        .store
        .messages
        .list_messages(
            conversation_id,
            &MessageQuery {
                cursor: q.cursor.clone(),
                limit,
                order,
                since,
                until,
                known_count: Some(record.conversation.message_count),
            },
        )
        .await?;
    // A removed message's tombstone keeps its index; it is not answered
    // (a page can then hold fewer than `limit` messages).
    Ok(MessagePage {
        conversation_id: conversation_id.to_string(),
        messages: page.items.into_iter().filter(|m| !m.removed).collect(),
        next_cursor: page.next_cursor,
        after,
    })
}
