//! The API operations: what each HTTP route does, independent of HTTP.
//! Every operation takes the caller's owner id (the JWT `sub`); another
//! owner's conversation is reported exactly like a missing one.

use std::collections::HashMap;
use std::sync::Arc;

use convo_schema::api::*;
use convo_schema::commands::{AcceptedMessage, EndReason, WRITE_COMMAND_VERSION, WriteCommand, WriteKind};
use convo_schema::limits::*;
use convo_schema::{
    Conversation, ConversationStatus, ErrorCode, FlagStatus, Message, Metadata, SafetyAction, Timestamp, TitleSource,
    ToolCall, UserStats, ValidationError, identity, validate,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::Deps;
use crate::crypto::DataKey;
use crate::error::DomainError;
use crate::error::key_error;
use crate::events;
pub use crate::model::{expired, is_conversation_id};
pub use crate::outbox::{MAX_COMMAND_BYTES, queue_events, send_write};
use crate::ports::*;
use crate::tokens::{self, Tokenizer};

/// An `Idempotency-Key` header and the fingerprint of the request body.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: String,
}

impl IdempotencyKey {
    /// Checks the key and fingerprints the request it came with.
    pub fn new(key: &str, body: &[u8]) -> Result<Self, ValidationError> {
        // A header value is ASCII: anything else would be read differently
        // by different clients and proxies.
        if key.trim().is_empty()
            || key.len() > MAX_EXTERNAL_ID_CHARS
            || !key.bytes().all(|b| (b' '..=b'~').contains(&b))
        {
            return Err(ValidationError::invalid(
                "Idempotency-Key",
                format!("Idempotency-Key must hold 1 to {MAX_EXTERNAL_ID_CHARS} printable ASCII characters"),
            ));
        }
        let digest = Sha256::digest(body);
        Ok(Self {
            key: key.to_string(),
            fingerprint: digest.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }
}

/// Loads a conversation the owner may see; anything else is `NotFound`.
pub async fn load_owned(deps: &Deps, owner_id: &str, conversation_id: &str) -> Result<ConversationRecord, DomainError> {
    if !is_conversation_id(conversation_id) {
        return Err(DomainError::NotFound);
    }
    owned(deps, owner_id, deps.store.get_conversation(conversation_id).await?)
}

/// As [`load_owned`], for the message reads (context, messages): the store
/// may answer from an eventually consistent read, half the price of the
/// strongly consistent one, and a conversation changed in the last second
/// may read as it was (a new one is never missed).
pub async fn load_owned_for_read(
    deps: &Deps,
    owner_id: &str,
    conversation_id: &str,
) -> Result<ConversationRecord, DomainError> {
    if !is_conversation_id(conversation_id) {
        return Err(DomainError::NotFound);
    }
    owned(
        deps,
        owner_id,
        deps.store.get_conversation_for_read(conversation_id).await?,
    )
}

/// Loads a conversation for a read that may name a write with
/// `after=<commandId>`: once that write is applied (or the wait of
/// `read_after_wait` runs out) the record is returned with what was found.
/// The first read is the one the route makes anyway (eventually consistent
/// when `cheap`); only while the write is not applied does it poll, with
/// small strongly consistent reads of the conversation, backing off.
pub async fn load_after(
    deps: &Deps,
    owner_id: &str,
    conversation_id: &str,
    after: Option<&str>,
    cheap: bool,
) -> Result<(ConversationRecord, Option<AfterStatus>), DomainError> {
    let after = after.map(command_id_param).transpose()?;
    let record = if cheap {
        load_owned_for_read(deps, owner_id, conversation_id).await?
    } else {
        load_owned(deps, owner_id, conversation_id).await?
    };
    openable(deps, &record)?;
    let Some(command_id) = after else {
        return Ok((record, None));
    };
    if record.has_applied(command_id) {
        return Ok((record, Some(AfterStatus::Applied)));
    }
    let wait = deps.config.read_after_wait.to_std().unwrap_or_default();
    let deadline = std::time::Instant::now() + wait;
    let mut pause = std::time::Duration::from_millis(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(200));
        let record = load_owned(deps, owner_id, conversation_id).await?;
        if record.has_applied(command_id) {
            return Ok((record, Some(AfterStatus::Applied)));
        }
        if std::time::Instant::now() >= deadline {
            return Ok((record, Some(AfterStatus::Pending)));
        }
    }
}

/// The `after` query parameter: a command id as a 202 gave it.
fn command_id_param(raw: &str) -> Result<&str, ValidationError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_EXTERNAL_ID_CHARS
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(raw)
    } else {
        Err(ValidationError::invalid(
            "after",
            "after must be the commandId of a write (letters, digits, - and _)",
        ))
    }
}

fn owned(deps: &Deps, owner_id: &str, found: Option<ConversationRecord>) -> Result<ConversationRecord, DomainError> {
    match found {
        Some(rec) if rec.conversation.owner_id == owner_id && !rec.deleting && !expired(&rec, deps.clock.now()) => {
            Ok(rec)
        }
        _ => Err(DomainError::NotFound),
    }
}

/// A sealed conversation needs a key ring to be read or written: a
/// function composed without one (the worker, the end of a session, the
/// sweeper) never serves its content or adds to it. Fails closed: an
/// error, never the sealed fields served empty or a message stored in clear.
fn openable(deps: &Deps, rec: &ConversationRecord) -> Result<(), DomainError> {
    if rec.key_id.is_some() && deps.keys.is_none() {
        return Err(DomainError::Internal(format!(
            "conversation {} is sealed and this function holds no key ring",
            rec.id()
        )));
    }
    Ok(())
}

/// A user id given in a path or query, in the form it is stored under
/// (the identity rule: `convo_schema::identity`).
fn user_id_param(raw: &str) -> Result<String, ValidationError> {
    identity::party_id("userId", raw)
}

pub async fn create_conversation(
    deps: &Deps,
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
    if let Some(keys) = deps.keys.as_ref().filter(|_| deps.config.encryption) {
        // The user's data key (made on their first conversation): the
        // store seals the conversation's personal fields under it.
        let (key_id, _) = keys
            .current_key(owner_id, &record.conversation.user_id)
            .await
            .map_err(key_error)?;
        record.key_id = Some(key_id);
    }
    for _ in 0..3 {
        match deps.store.create_conversation(&record, req.reuse_active).await {
            Ok(Created::New) => {
                // The key is read again, past any cache: if the user's
                // erasure destroyed it between its read above and this
                // write, the conversation is erased and the caller told to
                // retry (a new key is made then), so that nothing is ever
                // accepted under a dead key.
                if let (Some(keys), Some(key_id)) = (&deps.keys, record.key_id)
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

/// Validates, screens and enqueues an exchange; answers before anything is
/// stored. The worker assigns indexes and applies it in queue order.
pub async fn append_messages(
    deps: &Deps,
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
        let now = deps.clock.now();
        let command = WriteCommand {
            v: WRITE_COMMAND_VERSION,
            command_id: deps.ids.new_id(),
            conversation_id: conversation_id.to_string(),
            owner_id: owner_id.to_string(),
            accepted_at: now,
            kind: WriteKind::End {
                reason: EndReason::Client,
            },
        };
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

/// Refuses an append when the conversation already holds
/// `appends_per_minute` appends accepted in the current minute, with the
/// seconds until the next minute. The count is kept by the worker with the
/// newest messages and read here with the conversation, so it costs no
/// request of its own; appends accepted but not stored yet are not in it
/// (see the README: a burst faster than the worker can pass by that many).
fn rate_limit(deps: &Deps, record: &ConversationRecord, now: Timestamp) -> Result<(), DomainError> {
    let limit = deps.config.appends_per_minute;
    let minute = now.timestamp().div_euclid(60);
    let head = &record.head;
    if limit == 0 || head.rate_window != Some(minute) || u64::from(head.rate_count) < limit {
        return Ok(());
    }
    let window_end = chrono::DateTime::from_timestamp((minute + 1) * 60, 0).unwrap_or(now);
    let retry_after_seconds = ((window_end - now).num_milliseconds().max(1) as u64).div_ceil(1000);
    Err(DomainError::RateLimited { retry_after_seconds })
}

fn ensure_active(record: &ConversationRecord) -> Result<(), DomainError> {
    match record.conversation.status {
        ConversationStatus::Active => Ok(()),
        _ => Err(DomainError::ended()),
    }
}

/// Builds and enqueues a write at most once per (conversation, operation,
/// key): a retry with the same key and body gets the first answer again. The
/// command is stored with the answer before it is sent, so a retry after a
/// failed or unknown send sends the very same command again (the FIFO queue
/// and the worker drop the duplicate) — nothing is lost, nothing doubled.
async fn accept<T, F, Fut>(
    deps: &Deps,
    conversation_id: &str,
    operation: &str,
    key: Option<IdempotencyKey>,
    build: F,
) -> Result<T, DomainError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(WriteCommand, T), DomainError>>,
{
    let Some(key) = key else {
        let (command, answer) = build().await?;
        send_write(deps, &command).await?;
        return Ok(answer);
    };
    let scoped = format!("{operation}#{}", key.key);
    let now = deps.clock.now();
    if let Some(record) = deps.store.get_idempotency(conversation_id, &scoped, now).await? {
        return replay(deps, conversation_id, &scoped, &key, record).await;
    }
    let (command, answer) = build().await?;
    crate::outbox::check_command_size(&command)?;
    let record = IdempotencyRecord {
        fingerprint: key.fingerprint.clone(),
        command: Some(serde_json::to_string(&command).map_err(|e| DomainError::Internal(e.to_string()))?),
        response: serde_json::to_string(&answer).map_err(|e| DomainError::Internal(e.to_string()))?,
    };
    let expires = now + deps.config.idempotency_ttl;
    if !deps
        .store
        .put_idempotency(conversation_id, &scoped, &record, now, expires)
        .await?
    {
        // A concurrent request with the same key won: answer as it does.
        let Some(winner) = deps.store.get_idempotency(conversation_id, &scoped, now).await? else {
            return Err(DomainError::Unavailable("idempotency key contended; retry".into()));
        };
        return replay(deps, conversation_id, &scoped, &key, winner).await;
    }
    // On failure the record stays: a retry sends this same command.
    deps.writes.send_write(&command).await?;
    if let Err(e) = deps.store.settle_idempotency(conversation_id, &scoped).await {
        tracing::warn!(error = %e, "could not settle an idempotency key; a retry will resend its command");
    }
    Ok(answer)
}

/// The first answer for a repeated key, after making sure its command is
/// on the queue.
async fn replay<T: DeserializeOwned>(
    deps: &Deps,
    conversation_id: &str,
    scoped: &str,
    key: &IdempotencyKey,
    record: IdempotencyRecord,
) -> Result<T, DomainError> {
    if record.fingerprint != key.fingerprint {
        return Err(reused_key());
    }
    if let Some(raw) = &record.command {
        let command: WriteCommand =
            serde_json::from_str(raw).map_err(|e| DomainError::Internal(format!("stored command unreadable: {e}")))?;
        deps.writes.send_write(&command).await?;
        if let Err(e) = deps.store.settle_idempotency(conversation_id, scoped).await {
            tracing::warn!(error = %e, "could not settle an idempotency key");
        }
    }
    serde_json::from_str(&record.response)
        .map_err(|e| DomainError::Internal(format!("stored idempotent answer unreadable: {e}")))
}

fn reused_key() -> DomainError {
    DomainError::Conflict(
        ErrorCode::IdempotencyKeyReused,
        "this Idempotency-Key was used for a different request".into(),
    )
}

/// Reads the owner's conversation, applies `change`, and writes it back
/// conditional on the version read; a lost race reads again (a busy worker
/// moves the version with every batch).
async fn modify_owned<F>(
    deps: &Deps,
    owner_id: &str,
    conversation_id: &str,
    change: F,
) -> Result<Conversation, DomainError>
where
    F: Fn(&mut Conversation) -> Result<(), DomainError>,
{
    for _ in 0..8 {
        let mut record = load_owned(deps, owner_id, conversation_id).await?;
        let expected = record.version;
        change(&mut record.conversation)?;
        record.version = expected + 1;
        match deps.store.put_conversation(&record, expected).await {
            Ok(()) => return Ok(record.conversation),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(DomainError::Unavailable(
        "the conversation is being written heavily; retry".into(),
    ))
}

/// Sets a user title, merges metadata, or archives an ended conversation.
pub async fn patch_conversation(
    deps: &Deps,
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

fn merge_metadata(target: &mut Metadata, changes: &Metadata) {
    for (k, v) in changes {
        if v.is_null() {
            target.remove(k);
        } else {
            target.insert(k.clone(), v.clone());
        }
    }
}

pub async fn get_conversation(deps: &Deps, owner_id: &str, conversation_id: &str) -> Result<Conversation, DomainError> {
    Ok(get_conversation_after(deps, owner_id, conversation_id, None).await?.0)
}

/// `GET /conversations/{id}?after=`: the conversation once the write is
/// applied (see [`load_after`]).
pub async fn get_conversation_after(
    deps: &Deps,
    owner_id: &str,
    conversation_id: &str,
    after: Option<&str>,
) -> Result<(Conversation, Option<AfterStatus>), DomainError> {
    let (record, status) = load_after(deps, owner_id, conversation_id, after, false).await?;
    Ok((record.conversation, status))
}

/// The query string of `GET /conversations`: every filter is optional.
#[derive(Debug, Default, Clone, Copy)]
pub struct ListParams<'a> {
    pub user_id: Option<&'a str>,
    pub agent_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub flagged: Option<&'a str>,
    pub cursor: Option<&'a str>,
    pub limit: Option<&'a str>,
}

/// The filters of a listing, validated.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListFilter {
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub status: Option<ConversationStatus>,
    pub flagged: Option<bool>,
}

impl ListFilter {
    pub fn parse(p: &ListParams<'_>) -> Result<Self, ValidationError> {
        Ok(Self {
            user_id: p.user_id.map(|raw| identity::party_id("userId", raw)).transpose()?,
            agent_id: p.agent_id.map(|raw| identity::party_id("agentId", raw)).transpose()?,
            status: p
                .status
                .map(|s| {
                    ConversationStatus::parse(s)
                        .ok_or_else(|| ValidationError::invalid("status", "status must be active, ended or archived"))
                })
                .transpose()?,
            flagged: p.flagged.map(|f| validate::boolean("flagged", f)).transpose()?,
        })
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
    deps: &Deps,
    owner_id: &str,
    p: ListParams<'_>,
) -> Result<ConversationPage, DomainError> {
    let filter = ListFilter::parse(&p)?;
    let limit = validate::limit("limit", p.limit, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)?;
    let list = filter.list();
    let now = deps.clock.now();
    let mut conversations = Vec::new();
    let mut cursor = p.cursor.map(str::to_string);
    for _ in 0..MAX_LIST_ROUNDS {
        // Never ask for more than the page still needs, so that the
        // store's cursor is exactly where this page stops.
        let page = deps
            .store
            .list_conversations(owner_id, &list, cursor.as_deref(), limit - conversations.len())
            .await?;
        for r in page.items {
            if !r.deleting && !expired(&r, now) && filter.matches(&r.conversation) {
                openable(deps, &r)?;
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

/// Records a review of a flagged conversation: who, when, the new state and
/// a note. A reviewed conversation leaves the unreviewed list.
pub async fn review_conversation(
    deps: &Deps,
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

/// Erases a conversation and everything stored with it, and takes it out of
/// the user's totals. Idempotent, and silent about existence: a missing or
/// foreign id answers the same as an erased one.
pub async fn delete_conversation(deps: &Deps, owner_id: &str, conversation_id: &str) -> Result<(), DomainError> {
    crate::erasure::delete_conversation_counted(deps, owner_id, conversation_id, true)
        .await
        .map(|_| ())
}

/// The key a conversation's new messages are sealed under (`None`: the
/// conversation is stored in clear). A conversation whose key is gone is
/// being erased: it reads as missing.
async fn message_key(deps: &Deps, record: &ConversationRecord) -> Result<Option<Arc<DataKey>>, DomainError> {
    openable(deps, record)?;
    let (Some(keys), Some(id)) = (&deps.keys, record.key_id) else {
        return Ok(None);
    };
    let c = &record.conversation;
    match keys.key(&c.owner_id, &c.user_id, id).await.map_err(key_error)? {
        Some(k) => Ok(Some(k)),
        None => Err(DomainError::NotFound),
    }
}

/// Every string in a metadata object, masked (what a framework adapter
/// keeps there can hold what was said).
fn redact_values(metadata: Metadata, redact: &impl Fn(String) -> String) -> Metadata {
    fn walk(v: serde_json::Value, redact: &impl Fn(String) -> String) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => serde_json::Value::String(redact(s)),
            serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(|v| walk(v, redact)).collect()),
            serde_json::Value::Object(o) => {
                serde_json::Value::Object(o.into_iter().map(|(k, v)| (k, walk(v, redact))).collect())
            }
            other => other,
        }
    }
    metadata.into_iter().map(|(k, v)| (k, walk(v, redact))).collect()
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
    deps: &Deps,
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
    let now = deps.clock.now();
    let command = WriteCommand {
        v: WRITE_COMMAND_VERSION,
        command_id: deps.ids.new_id(),
        conversation_id: conversation_id.to_string(),
        owner_id: owner_id.to_string(),
        accepted_at: now,
        kind: WriteKind::Remove {
            message_id: message.message_id.clone(),
            index: message.message_index,
        },
    };
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
    deps: &Deps,
    owner_id: &str,
    conversation_id: &str,
) -> Result<ClearMessagesResponse, DomainError> {
    load_owned(deps, owner_id, conversation_id).await?;
    let now = deps.clock.now();
    let command = WriteCommand {
        v: WRITE_COMMAND_VERSION,
        command_id: deps.ids.new_id(),
        conversation_id: conversation_id.to_string(),
        owner_id: owner_id.to_string(),
        accepted_at: now,
        kind: WriteKind::Clear,
    };
    send_write(deps, &command).await?;
    Ok(ClearMessagesResponse {
        conversation_id: conversation_id.to_string(),
        command_id: command.command_id,
        accepted_at: now,
    })
}

/// The query string of `GET /reviews`.
#[derive(Debug, Default)]
pub struct ReviewParams<'a> {
    pub status: Option<&'a str>,
    pub cursor: Option<&'a str>,
    pub limit: Option<&'a str>,
}

/// The owner's flagged conversations in a review state (default
/// unreviewed), most recently flagged first.
pub async fn list_reviews(deps: &Deps, owner_id: &str, p: ReviewParams<'_>) -> Result<ConversationPage, DomainError> {
    let status = match p.status {
        None => FlagStatus::Unreviewed,
        Some(s) => FlagStatus::parse(s).ok_or_else(|| {
            ValidationError::invalid("status", "status must be unreviewed, reviewed, dismissed or escalated")
        })?,
    };
    let limit = validate::limit("limit", p.limit, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)?;
    let page = deps
        .store
        .list_flagged_conversations(owner_id, status, p.cursor, limit)
        .await?;
    let now = deps.clock.now();
    let mut conversations = Vec::with_capacity(page.items.len());
    for r in page.items {
        if !r.deleting && r.conversation.expires_at.is_none_or(|t| t > now) {
            openable(deps, &r)?;
            conversations.push(r.conversation);
        }
    }
    Ok(ConversationPage {
        conversations,
        next_cursor: page.next_cursor,
    })
}

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
    deps: &Deps,
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

fn context_message(m: Message) -> ContextMessage {
    ContextMessage {
        role: m.role,
        content: m.content,
        tool_calls: m.tool_calls,
        tool_call_id: m.tool_call_id,
    }
}

/// Messages (oldest first) as an LLM call takes them: a tool result whose
/// call is not among them (it fell outside the window, or was blocked) is
/// left out, since a model API refuses a result without its call.
fn pair_tool_results(messages: Vec<(ContextMessage, Option<usize>)>) -> Vec<(ContextMessage, Option<usize>)> {
    let mut calls = std::collections::HashSet::new();
    let mut paired: Vec<(ContextMessage, Option<usize>)> = Vec::with_capacity(messages.len());
    for (m, cost) in messages {
        calls.extend(m.tool_calls.iter().map(|c| c.id.clone()));
        if let Some(id) = &m.tool_call_id
            && !calls.contains(id)
        {
            continue;
        }
        paired.push((m, cost));
    }
    // Nor a call without its result, once something follows it (a result
    // that was blocked or removed); the newest message's calls may still
    // be running.
    let answered: std::collections::HashSet<String> =
        paired.iter().filter_map(|(m, _)| m.tool_call_id.clone()).collect();
    let last = paired.len().saturating_sub(1);
    let mut out = Vec::with_capacity(paired.len());
    for (i, (mut m, mut cost)) in paired.into_iter().enumerate() {
        if i < last && !m.tool_calls.is_empty() {
            let before = m.tool_calls.len();
            m.tool_calls.retain(|c| answered.contains(&c.id));
            if m.tool_calls.is_empty() && m.content.trim().is_empty() {
                continue;
            }
            if m.tool_calls.len() != before {
                // Changed: counted again.
                cost = None;
            }
        }
        out.push((m, cost));
    }
    out
}

/// How many token-budget reads may count tokens at once in one process.
/// Counting is CPU work (up to 200 messages of 16 KiB); it runs on the
/// blocking pool, never on the async executor, and at most this many at
/// once, so that heavy reads queue among themselves instead of slowing
/// every other request (the local server serves every owner from one
/// process; a Lambda execution environment serves one request at a time).
const TOKEN_COUNTERS: usize = 2;
static COUNTING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(TOKEN_COUNTERS);

/// Each message's cost in a chat request, counted off the executor.
async fn count_tokens(
    tokenizer: Tokenizer,
    messages: Vec<ContextMessage>,
) -> Result<(Vec<ContextMessage>, Vec<usize>), DomainError> {
    let _permit = COUNTING
        .acquire()
        .await
        .map_err(|_| DomainError::Internal("the token counters are closed".into()))?;
    tokio::task::spawn_blocking(move || {
        let costs = messages.iter().map(|m| tokenizer.message(m)).collect();
        (messages, costs)
    })
    .await
    .map_err(|e| DomainError::Internal(format!("token counting failed: {e}")))
}

/// The recent messages, oldest first, ready for an LLM. Blocked messages are
/// left out: the agent must not answer them.
pub async fn context(
    deps: &Deps,
    owner_id: &str,
    conversation_id: &str,
    max_messages: Option<&str>,
    max_age: Option<&str>,
    after: Option<&str>,
) -> Result<ContextResponse, DomainError> {
    let p = ContextParams {
        max_messages,
        max_age,
        after,
        ..ContextParams::default()
    };
    context_with(deps, owner_id, conversation_id, p).await
}

/// The query string of `GET /conversations/{id}/context`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ContextParams<'a> {
    pub max_messages: Option<&'a str>,
    pub max_age: Option<&'a str>,
    /// A token budget: the newest whole messages that fit in it.
    pub max_tokens: Option<&'a str>,
    /// `o200k_base` (default) or `cl100k_base`.
    pub tokenizer: Option<&'a str>,
    pub after: Option<&'a str>,
}

/// The largest token budget taken (the largest context windows hold a
/// few million tokens; convo returns at most 200 messages anyway).
pub const MAX_CONTEXT_TOKENS: usize = 10_000_000;

/// The context, bounded by messages, age and tokens: the newest messages
/// (blocked ones left out) while each bound holds, returned oldest first.
/// With a token budget, what the messages cost in a chat request (framing
/// and the reply's priming included) fits in it, counted with the chosen
/// tokenizer, and `maxMessages` defaults to its maximum.
pub async fn context_with(
    deps: &Deps,
    owner_id: &str,
    conversation_id: &str,
    p: ContextParams<'_>,
) -> Result<ContextResponse, DomainError> {
    let budget = p
        .max_tokens
        .map(|raw| validate::limit("maxTokens", Some(raw), MAX_CONTEXT_TOKENS, MAX_CONTEXT_TOKENS))
        .transpose()?;
    let tokenizer = Tokenizer::parse(p.tokenizer)?;
    let default_messages = if budget.is_some() {
        MAX_CONTEXT_MESSAGES
    } else {
        DEFAULT_CONTEXT_MESSAGES
    };
    let wanted = validate::limit("maxMessages", p.max_messages, default_messages, MAX_CONTEXT_MESSAGES)?;
    let since = match p.max_age {
        Some(raw) => validate::max_age("maxAge", raw)?.and_then(|age| deps.clock.now().checked_sub_signed(age)),
        None => None,
    };
    let (record, after) = load_after(deps, owner_id, conversation_id, p.after, true).await?;
    // Newest first; with a budget, in smaller pages, as it may be spent soon.
    let page_size = if budget.is_some() { wanted.min(40) } else { wanted };
    let mut picked: Vec<(ContextMessage, Option<usize>)> = Vec::with_capacity(wanted);
    let mut used = tokens::REPLY_PRIMING;
    let mut full = false;
    let mut cursor = None;
    // Bounded: blocked messages are rare; stop after a few pages regardless.
    for _ in 0..8 {
        let page = deps
            .store
            .list_messages(
                conversation_id,
                &MessageQuery {
                    cursor,
                    limit: page_size,
                    order: Order::Desc,
                    since,
                    until: None,
                    known_count: Some(record.conversation.message_count),
                },
            )
            .await?;
        let candidates: Vec<ContextMessage> = page
            .items
            .into_iter()
            .filter(|m| !m.blocked && !m.removed)
            .map(context_message)
            .collect();
        // Each message is counted once, a page at a time, off the executor.
        let (candidates, costs) = match budget {
            Some(_) => {
                let (m, c) = count_tokens(tokenizer, candidates).await?;
                (m, c.into_iter().map(Some).collect::<Vec<_>>())
            }
            None => {
                let n = candidates.len();
                (candidates, vec![None; n])
            }
        };
        for (m, cost) in candidates.into_iter().zip(costs) {
            if let (Some(limit), Some(cost)) = (budget, cost) {
                if used + cost > limit {
                    full = true;
                    break;
                }
                used += cost;
            }
            picked.push((m, cost));
            if picked.len() == wanted {
                full = true;
                break;
            }
        }
        if full || page.next_cursor.is_none() {
            break;
        }
        cursor = page.next_cursor;
    }
    picked.reverse();
    let paired = pair_tool_results(picked);
    let tokens = match budget {
        Some(_) => {
            // Only a message pairing changed is counted again.
            let changed: Vec<ContextMessage> = paired
                .iter()
                .filter(|(_, c)| c.is_none())
                .map(|(m, _)| m.clone())
                .collect();
            let recounted: usize = if changed.is_empty() {
                0
            } else {
                count_tokens(tokenizer, changed).await?.1.into_iter().sum()
            };
            Some(tokens::REPLY_PRIMING + paired.iter().filter_map(|(_, c)| *c).sum::<usize>() + recounted)
        }
        None => None,
    };
    let messages: Vec<ContextMessage> = paired.into_iter().map(|(m, _)| m).collect();
    Ok(ContextResponse {
        conversation_id: conversation_id.to_string(),
        messages,
        tokens,
        after,
    })
}

pub async fn user_stats(deps: &Deps, owner_id: &str, user_id: &str) -> Result<UserStats, DomainError> {
    let user_id = user_id_param(user_id)?;
    Ok(deps.store.user_stats(owner_id, &user_id).await?.unwrap_or(UserStats {
        user_id,
        ..UserStats::default()
    }))
}

/// `GET /health`, which needs no token: liveness only. It calls nothing
/// (an anonymous caller cannot make the service spend requests on AWS) and
/// shows nothing of any tenant.
pub fn liveness(deps: &Deps) -> serde_json::Value {
    serde_json::json!({"status": "healthy", "timestamp": deps.clock.now()})
}

/// `GET /health/deep`, for an operator (`Config::operators`): the store and
/// the queues, with their figures. Answers `Forbidden` to anyone else.
pub async fn deep_health(deps: &Deps, owner_id: &str) -> Result<(bool, serde_json::Value), DomainError> {
    if !deps.config.operators.iter().any(|o| o == owner_id) {
        return Err(DomainError::Forbidden(
            "the deep health is for operators (CONVO_OPERATORS); GET /health answers liveness to anyone".into(),
        ));
    }
    let (store, writes, titles, events) = futures::join!(
        deps.store.health(),
        deps.writes.health(),
        deps.titles.health(),
        deps.events.health()
    );
    let ok = store.ok && writes.ok && titles.ok && events.ok;
    let body = serde_json::json!({
        "status": if ok { "healthy" } else { "unhealthy" },
        "timestamp": deps.clock.now(),
        "components": [store, writes, titles, events],
    });
    Ok((ok, body))
}
