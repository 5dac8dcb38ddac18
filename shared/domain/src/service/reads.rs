//! Reading a conversation's messages, a page at a time.

use super::*;
use crate::ApiDeps;

/// The query string of `GET /conversations/{id}/messages`.
#[derive(Debug, Default)]
pub struct MessageParams<'a> {
    pub cursor: Option<&'a str>,
    pub limit: Option<&'a str>,
    pub order: Option<&'a str>,
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    /// `true`: only the flagged (and blocked) messages.
    pub flagged: Option<&'a str>,
    /// A write's commandId: answer once it is applied.
    pub after: Option<&'a str>,
}

pub async fn list_messages(
    deps: &ApiDeps,
    owner_id: &str,
    conversation_id: &str,
    p: MessageParams<'_>,
) -> Result<MessagePage, DomainError> {
    let limit = validate::limit("limit", p.limit, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)?;
    let order = match p.order {
        None | Some("asc") => Order::Asc,
        Some("desc") => Order::Desc,
        Some(_) => {
            return Err(ValidationError::invalid("order", "order must be asc or desc").into());
        }
    };
    let since = p.since.map(|s| validate::timestamp("since", s)).transpose()?;
    let until = p.until.map(|s| validate::timestamp("until", s)).transpose()?;
    let flagged = p
        .flagged
        .map(|f| validate::boolean("flagged", f))
        .transpose()?
        .unwrap_or(false);
    let (record, after) = load_after(deps, owner_id, conversation_id, p.after, true).await?;
    if flagged {
        // The sparse index holds the flags in index order; a time window is
        // applied to what it lists, so a page can then hold fewer than
        // `limit` messages and still point on.
        let page = deps
            .store
            .messages
            .list_flagged_messages(conversation_id, order, p.cursor, limit)
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
                cursor: p.cursor.map(str::to_string),
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
