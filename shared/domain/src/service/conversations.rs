//! Conversations: create (with `reuseActive`), read, list, patch, erase.

use super::*;
use crate::ApiDeps;

pub async fn create_conversation(
    deps: &ApiDeps,
    owner_id: &str,
    req: CreateConversationRequest,
) -> Result<(Conversation, bool), DomainError> {
    validate::create(&req)?;
    let channel = req.channel.clone().unwrap_or_else(|| "web".to_string());
    let (user_id, agent_id) = if channel.eq_ignore_ascii_case("sms") {
        (
            identity::sms_party_id("userId", &req.user_id)?,
            identity::sms_party_id("agentId", &req.agent_id)?,
        )
    } else {
        (
            identity::party_id("userId", &req.user_id)?,
            identity::party_id("agentId", &req.agent_id)?,
        )
    };
    let now = deps.clock.now();
    let conversation = Conversation {
        conversation_id: deps.ids.new_id(),
        owner_id: owner_id.to_string(),
        status: ConversationStatus::Active,
        kind: req.kind.clone().unwrap_or_else(|| "chat".to_string()),
        channel,
        user_id,
        user_name: req.user_name.clone(),
        agent_id,
        agent_name: req.agent_name.clone(),
        created_at: now,
        start_time: now,
        last_activity_at: now,
        end_time: None,
        duration_seconds: None,
        duration_minutes: None,
        title_source: req.title.as_ref().map(|_| TitleSource::User),
        title: req.title.clone(),
        title_generated_at: None,
        message_count: 0,
        first_message_preview: None,
        last_message_preview: None,
        flagged: false,
        flag_type: None,
        flag_reason: None,
        severity: None,
        flag_status: None,
        flagged_at: None,
        reviewed_by: None,
        reviewed_at: None,
        review_note: None,
        metadata: req.metadata.clone().unwrap_or_default(),
        archived_at: None,
        redact_pii: req.redact_pii.unwrap_or(deps.config.redact_pii),
        expires_at: req
            .retention_days
            .map(|d| chrono::Duration::days(d as i64))
            .or(deps.config.retention)
            .map(|keep| now + keep),
    };
    let mut record = ConversationRecord::new(conversation);
    if deps.config.encryption {
        let keys = &deps.keys;
        // The user's data key (made on their first conversation): the
        // store seals the conversation's personal fields under it.
        let (key_id, _) = keys
            .current_key(owner_id, &record.conversation.user_id)
            .await
            .map_err(key_error)?;
        record.key_id = Some(key_id);
    }
    for _ in 0..3 {
        match deps
            .store
            .conversations
            .create_conversation(&record, req.reuse_active)
            .await
        {
            Ok(Created::New) => {
                // The key is read again, past any cache: if the user's
                // erasure destroyed it between its read above and this
                // write, the conversation is erased and the caller told to
                // retry (a new key is made then), so that nothing is ever
                // accepted under a dead key.
                if let (keys, Some(key_id)) = (&deps.keys, record.key_id)
                    && !keys
                        .confirm(owner_id, &record.conversation.user_id, key_id)
                        .await
                        .map_err(key_error)?
                {
                    delete_conversation(deps, owner_id, record.id()).await?;
                    return Err(DomainError::Unavailable(
                        "the user's data was being erased; retry".into(),
                    ));
                }
                queue_events(deps, &[events::conversation_created(&record.conversation)]).await;
                return Ok((record.conversation, true));
            }
            Err(e) => return Err(e.into()),
            // The pair's active conversation is being erased (or its key is
            // gone: say, a backup restored after its user's erasure): the
            // erasure is finished, which frees the pair, and a new one made.
            Ok(Created::Existing(existing)) if existing.deleting => {
                delete_conversation(deps, owner_id, existing.id()).await?;
            }
            Ok(Created::Existing(existing)) => return Ok((existing.conversation, false)),
        }
    }
    Err(DomainError::Unavailable(
        "the pair's active conversation is being erased; retry".into(),
    ))
}

/// Sets a user title, merges metadata, or archives an ended conversation.
pub async fn patch_conversation(
    deps: &ApiDeps,
    owner_id: &str,
    conversation_id: &str,
    req: PatchConversationRequest,
) -> Result<Conversation, DomainError> {
    validate::patch(&req)?;
    if req.title.is_none() && req.metadata.is_none() && req.status.is_none() {
        // An empty patch (RFC 7396: `{}` changes nothing) answers the
        // conversation as it is.
        return get_conversation(deps, owner_id, conversation_id).await;
    }
    modify_owned(deps, owner_id, conversation_id, |c| {
        if let Some(title) = &req.title {
            c.title = Some(title.clone());
            c.title_source = Some(TitleSource::User);
        }
        if let Some(changes) = &req.metadata {
            merge_metadata(&mut c.metadata, changes);
            validate::metadata("metadata", &c.metadata)?;
        }
        if req.status.is_some() && c.status != ConversationStatus::Archived {
            if c.status != ConversationStatus::Ended {
                return Err(DomainError::Conflict(
                    ErrorCode::ConversationNotEnded,
                    "only an ended conversation can be archived; end it first".into(),
                ));
            }
            c.status = ConversationStatus::Archived;
            c.archived_at = Some(deps.clock.now());
        }
        Ok(())
    })
    .await
}

pub(crate) fn merge_metadata(target: &mut Metadata, changes: &Metadata) {
    for (k, v) in changes {
        if v.is_null() {
            target.remove(k);
        } else {
            target.insert(k.clone(), v.clone());
        }
    }
}

pub async fn get_conversation(
    deps: &ApiDeps,
    owner_id: &str,
    conversation_id: &str,
) -> Result<Conversation, DomainError> {
    Ok(get_conversation_after(deps, owner_id, conversation_id, None).await?.0)
}

/// `GET /conversations/{id}?after=`: the conversation once the write is
/// applied (see [`load_after`]).
pub async fn get_conversation_after(
    deps: &ApiDeps,
    owner_id: &str,
    conversation_id: &str,
    after: Option<&str>,
) -> Result<(Conversation, Option<AfterStatus>), DomainError> {
    let (record, status) = load_after(deps, owner_id, conversation_id, after, false).await?;
    Ok((record.conversation, status))
}

/// The filters of a listing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListFilter {
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub status: Option<ConversationStatus>,
    pub flagged: Option<bool>,
}

impl ListFilter {
    pub fn of(q: &ListQuery) -> Self {
        Self {
            user_id: q.user_id.clone(),
            agent_id: q.agent_id.clone(),
            status: q.status,
            flagged: q.flagged,
        }
    }

    /// The index that serves this filter: the most selective one it names
    /// (a user's conversations are fewer than an agent's, an agent's fewer
    /// than the flagged ones or one status). The other filters are applied
    /// to what that index lists.
    pub fn list(&self) -> ConversationList {
        match (&self.user_id, &self.agent_id, self.flagged, self.status) {
            (Some(u), ..) => ConversationList::User(u.clone()),
            (None, Some(a), ..) => ConversationList::Agent(a.clone()),
            (None, None, Some(true), _) => ConversationList::Flagged,
            (None, None, _, Some(s)) => ConversationList::Status(s),
            _ => ConversationList::All,
        }
    }

    pub fn matches(&self, c: &Conversation) -> bool {
        self.user_id.as_ref().is_none_or(|u| *u == c.user_id)
            && self.agent_id.as_ref().is_none_or(|a| *a == c.agent_id)
            && self.status.is_none_or(|s| s == c.status)
            && self.flagged.is_none_or(|f| f == c.flagged)
    }
}

/// How many index pages one listing request reads at most while filters
/// leave them short: a page may then hold fewer than `limit` conversations
/// and still carry a `nextCursor`.
pub const MAX_LIST_ROUNDS: usize = 8;

/// The owner's conversations, newest first, filtered.
pub async fn list_conversations(
    deps: &ApiDeps,
    owner_id: &str,
    q: &ListQuery,
) -> Result<ConversationPage, DomainError> {
    let filter = ListFilter::of(q);
    let limit = q.limit;
    let list = filter.list();
    let now = deps.clock.now();
    let mut conversations = Vec::new();
    let mut cursor = q.cursor.clone();
    for _ in 0..MAX_LIST_ROUNDS {
        // Never ask for more than the page still needs, so that the
        // store's cursor is exactly where this page stops.
        let page = deps
            .store
            .lists
            .list_conversations(owner_id, &list, cursor.as_deref(), limit - conversations.len())
            .await?;
        for r in page.items {
            if !r.deleting && !expired(&r, now) && filter.matches(&r.conversation) {
                conversations.push(r.conversation);
            }
        }
        cursor = page.next_cursor;
        if cursor.is_none() || conversations.len() == limit {
            break;
        }
    }
    Ok(ConversationPage {
        conversations,
        next_cursor: cursor,
    })
}

/// Erases a conversation and everything stored with it, and takes it out of
/// the user's totals. Idempotent, and silent about existence: a missing or
/// foreign id answers the same as an erased one.
pub async fn delete_conversation(deps: &Deps, owner_id: &str, conversation_id: &str) -> Result<(), DomainError> {
    crate::erasure::delete_conversation_counted(deps, owner_id, conversation_id, true)
        .await
        .map(|_| ())
}
