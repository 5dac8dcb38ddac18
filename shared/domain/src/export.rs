//! `GET /users/{userId}/export`: everything convo holds about a user, as a
//! parent may ask to review it — every conversation with them and every
//! message in it, opened (decrypted), page by page.
//!
//! A page holds at most [`MESSAGES_PER_PAGE`] messages and the
//! conversations they belong to, so a user with years of conversations is
//! exported in many small requests, none near the API's timeout. The cursor
//! says where the next page starts: a page of the user's conversation list,
//! the conversation within it, and the message cursor within that
//! conversation.

use crate::ApiDeps;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use convo_schema::api::UserExportPage;
use convo_schema::{ErrorCode, ValidationError};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::model::Order;
use crate::service::{self, ListQuery, MessagesQuery};

/// The most messages one export page holds.
pub const MESSAGES_PER_PAGE: usize = 500;
/// Conversations read per page of the user's list.
const CONVERSATIONS_PER_LIST: usize = 20;

/// Where an export page starts. The user's list is ordered newest first
/// by (creation time, id); a conversation is placed in it by that key, so a
/// conversation started during the export (newer than any exported) or one
/// erased meanwhile shifts nothing.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
struct Position {
    /// The cursor of the page of the user's conversation list (none: the
    /// first page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    list: Option<String>,
    /// The key (creation in milliseconds, id) of the conversation in
    /// progress, or of the last one exported whole; every conversation
    /// listed before it is done (or started after the export did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<(i64, String)>,
    /// The cursor of the messages of the conversation at `at` while it is
    /// in progress (none: it is done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    messages: Option<String>,
}

/// The most conversations one page holds (each costs its own reads, even
/// an empty one).
pub const CONVERSATIONS_PER_PAGE: usize = 100;

fn invalid_cursor() -> DomainError {
    DomainError::Validation(ValidationError::new(
        ErrorCode::InvalidCursor,
        "cursor",
        "cursor is not one this export issued",
    ))
}

fn decode(raw: &str) -> Result<Position, DomainError> {
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid_cursor())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid_cursor())
}

fn encode(p: &Position) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(p).unwrap_or_default())
}

/// One page of a user's export. The store's own cursors inside the export
/// cursor are checked by the store as any other (bound to their list), so a
/// cursor of another owner's list is refused.
pub async fn export_user(
    deps: &ApiDeps,
    owner_id: &str,
    user_id: &str,
    cursor: Option<&str>,
) -> Result<UserExportPage, DomainError> {
    let mut at = cursor.map(decode).transpose()?.unwrap_or_default();
    let mut out = UserExportPage {
        user_id: String::new(),
        conversations: Vec::new(),
        messages: Vec::new(),
        next_cursor: None,
    };
    // The id as stored (the identity rule), and a refusal of a bad one.
    out.user_id = service::user_stats(deps, owner_id, user_id).await?.user_id;
    loop {
        let query = ListQuery {
            user_id: Some(out.user_id.clone()),
            cursor: at.list.clone(),
            limit: CONVERSATIONS_PER_LIST,
            ..ListQuery::default()
        };
        let page = service::list_conversations(deps, owner_id, &query).await?;
        for conversation in &page.conversations {
            let key = (
                conversation.created_at.timestamp_millis(),
                conversation.conversation_id.clone(),
            );
            let resuming = match &at.at {
                Some(bound) if key > *bound => continue,
                Some(bound) if key == *bound => match at.messages {
                    Some(_) => true,
                    None => continue,
                },
                _ => false,
            };
            if !resuming {
                // A new conversation starts only on a page with room for it.
                if out.messages.len() >= MESSAGES_PER_PAGE || out.conversations.len() >= CONVERSATIONS_PER_PAGE {
                    out.next_cursor = Some(encode(&at));
                    return Ok(out);
                }
                out.conversations.push(conversation.clone());
                at.at = Some(key.clone());
                at.messages = None;
            }
            loop {
                let room = MESSAGES_PER_PAGE - out.messages.len().min(MESSAGES_PER_PAGE);
                if room == 0 {
                    // More of it follows: resumed from its messages' cursor.
                    out.next_cursor = Some(encode(&at));
                    return Ok(out);
                }
                let query = MessagesQuery {
                    cursor: at.messages.clone(),
                    limit: room.min(200),
                    order: Order::Asc,
                    ..MessagesQuery::default()
                };
                let messages = service::list_messages(deps, owner_id, &conversation.conversation_id, &query).await;
                let messages = match messages {
                    Ok(m) => m,
                    // Erased or expired since it was listed: nothing to export.
                    Err(DomainError::NotFound) => break,
                    Err(e) => return Err(e),
                };
                out.messages.extend(messages.messages);
                match messages.next_cursor {
                    Some(next) => at.messages = Some(next),
                    None => break,
                }
            }
            at.messages = None;
        }
        match page.next_cursor {
            Some(next) => at.list = Some(next),
            None => return Ok(out),
        }
    }
}
