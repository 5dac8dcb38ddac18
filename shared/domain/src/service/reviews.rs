//! Flags and reviews: a reviewer's verdict, and the owner's review list.

use super::*;
use crate::ApiDeps;

/// Records a review of a flagged conversation: who, when, the new state and
/// a note. A reviewed conversation leaves the unreviewed list.
pub async fn review_conversation(
    deps: &ApiDeps,
    owner_id: &str,
    conversation_id: &str,
    req: ReviewRequest,
) -> Result<Conversation, DomainError> {
    if let Some(note) = &req.note
        && (note.chars().count() > MAX_NOTE_CHARS || note.trim().is_empty())
    {
        return Err(
            ValidationError::invalid("note", format!("note must hold 1 to {MAX_NOTE_CHARS} characters")).into(),
        );
    }
    let reviewed = modify_owned(deps, owner_id, conversation_id, |c| {
        if !c.flagged {
            return Err(DomainError::Conflict(
                ErrorCode::ConversationNotFlagged,
                "the conversation has not been flagged; there is nothing to review".into(),
            ));
        }
        c.flag_status = Some(req.flag_status.into());
        c.reviewed_by = Some(owner_id.to_string());
        c.reviewed_at = Some(deps.clock.now());
        c.review_note = req.note.clone();
        Ok(())
    })
    .await?;
    queue_events(deps, &[events::conversation_reviewed(&reviewed)]).await;
    Ok(reviewed)
}

/// The owner's flagged conversations in a review state (default
/// unreviewed), most recently flagged first.
pub async fn list_reviews(deps: &ApiDeps, owner_id: &str, q: &ReviewQuery) -> Result<ConversationPage, DomainError> {
    let page = deps
        .store
        .lists
        .list_flagged_conversations(owner_id, q.status, q.cursor.as_deref(), q.limit)
        .await?;
    let now = deps.clock.now();
    let mut conversations = Vec::with_capacity(page.items.len());
    for r in page.items {
        if !r.deleting && r.conversation.expires_at.is_none_or(|t| t > now) {
            conversations.push(r.conversation);
        }
    }
    Ok(ConversationPage {
        conversations,
        next_cursor: page.next_cursor,
    })
}
