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

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use convo_schema::api::UserExportPage;
use convo_schema::{ErrorCode, ValidationError};
use serde::{Deserialize, Serialize};

use crate::Deps;
use crate::error::DomainError;
use crate::service::{self, ListParams, MessageParams};

/// The most messages one export page holds.
pub const MESSAGES_PER_PAGE: usize = 500;
/// Conversations read per page of the user's list.
const CONVERSATIONS_PER_LIST: usize = 20;

/// Where an export page starts.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
struct Position {
    /// The cursor of the page of the user's conversation list (none: the
    /// first page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    list: Option<String>,
    /// The last conversation of that page exported whole (none: none yet).
    /// An id, not a count, so that a conversation started meanwhile (the
    /// newest come first) shifts nothing: the list's cursor is by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    done: Option<String>,
    /// Inside the next conversation: the cursor of its messages (none: from
    /// its first message, the conversation itself not yet exported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    messages: Option<String>,
}

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
    deps: &Deps,
    owner_id: &str,
    user_id: &str,
    cursor: Option<&str>,
) -> Result<UserExportPage, DomainError> {
    let mut at = cursor.map(decode).transpose()?.unwrap_or_default();
    let limit = CONVERSATIONS_PER_LIST.to_string();
    let mut out = UserExportPage {
        user_id: String::new(),
        conversations: Vec::new(),
        messages: Vec::new(),
        next_cursor: None,
    };
    // The id as stored (the identity rule), and a refusal of a bad one.
    out.user_id = service::user_stats(deps, owner_id, user_id).await?.user_id;
    loop {
        let page = service::list_conversations(
            deps,
            owner_id,
            ListParams {
                user_id: Some(&out.user_id),
                cursor: at.list.as_deref(),
                limit: Some(&limit),
                ..ListParams::default()
            },
        )
        .await?;
        // Past the last one exported whole (all of them when it is gone).
        let start = at
            .done
            .as_ref()
            .and_then(|done| page.conversations.iter().position(|c| &c.conversation_id == done))
            .map_or(0, |i| i + 1);
        for conversation in page.conversations.iter().skip(start) {
            if at.messages.is_none() {
                out.conversations.push(conversation.clone());
            }
            loop {
                let room = MESSAGES_PER_PAGE - out.messages.len();
                if room == 0 {
                    out.next_cursor = Some(encode(&at));
                    return Ok(out);
                }
                let room = room.min(200).to_string();
                let messages = service::list_messages(
                    deps,
                    owner_id,
                    &conversation.conversation_id,
                    MessageParams {
                        cursor: at.messages.as_deref(),
                        limit: Some(&room),
                        order: Some("asc"),
                        ..MessageParams::default()
                    },
                )
                .await;
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
            at.done = Some(conversation.conversation_id.clone());
        }
        match page.next_cursor {
            Some(next) => {
                at = Position {
                    list: Some(next),
                    done: None,
                    messages: None,
                };
            }
            None => return Ok(out),
        }
    }
}
