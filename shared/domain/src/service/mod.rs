//! The API operations: what each HTTP route does, independent of HTTP.
//! Every operation takes the caller's owner id (the JWT `sub`); another
//! owner's conversation is reported exactly like a missing one.

use crate::ApiDeps;
use std::collections::HashMap;
use std::sync::Arc;

use convo_schema::api::*;
use convo_schema::commands::{AcceptedMessage, EndReason, WRITE_COMMAND_VERSION, WriteCommand, WriteKind};
use convo_schema::limits::*;
use convo_schema::{
    Conversation, ConversationStatus, ErrorCode, Message, Metadata, SafetyAction, Timestamp, TitleSource, ToolCall,
    UserStats, ValidationError, identity, validate,
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
use crate::tokens::{self, Count, Tokenizer};
pub use convo_schema::queries::{
    ContextParams, ContextQuery, ListParams, ListQuery, MessageParams, MessagesQuery, ReviewParams, ReviewQuery,
    UserContextParams, UserContextQuery,
};

mod context;
mod conversations;
mod health;
mod messages;
mod reads;
mod reviews;
mod users;

pub use context::*;
pub use conversations::*;
pub use health::*;
pub use messages::*;
pub use reads::*;
pub use reviews::*;
pub use users::*;

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
    owned(
        deps,
        owner_id,
        deps.store.conversations.get_conversation(conversation_id).await?,
    )
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
        deps.store
            .conversations
            .get_conversation_for_read(conversation_id)
            .await?,
    )
}

/// Loads a conversation for a read that may name a write with
/// `after=<commandId>`: once that write is applied (or the wait of
/// `read_after_wait` runs out) the record is returned with what was found.
/// The first read is the one the route makes anyway (eventually consistent
/// when `cheap`); only while the write is not applied does it poll, with
/// small strongly consistent reads of the conversation, backing off.
pub async fn load_after(
    deps: &ApiDeps,
    owner_id: &str,
    conversation_id: &str,
    after: Option<&str>,
    cheap: bool,
) -> Result<(ConversationRecord, Option<AfterStatus>), DomainError> {
    let record = if cheap {
        load_owned_for_read(deps, owner_id, conversation_id).await?
    } else {
        load_owned(deps, owner_id, conversation_id).await?
    };
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

fn owned(deps: &Deps, owner_id: &str, found: Option<ConversationRecord>) -> Result<ConversationRecord, DomainError> {
    match found {
        Some(rec) if rec.conversation.owner_id == owner_id && !rec.deleting && !expired(&rec, deps.clock.now()) => {
            Ok(rec)
        }
        _ => Err(DomainError::NotFound),
    }
}

/// A user id given in a path or query, in the form it is stored under
/// (the identity rule: `convo_schema::identity`).
fn user_id_param(raw: &str) -> Result<String, ValidationError> {
    identity::party_id("userId", raw)
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
    if let Some(record) = deps
        .store
        .idempotency
        .get_idempotency(conversation_id, &scoped, now)
        .await?
    {
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
        .idempotency
        .put_idempotency(conversation_id, &scoped, &record, now, expires)
        .await?
    {
        // A concurrent request with the same key won: answer as it does.
        let Some(winner) = deps
            .store
            .idempotency
            .get_idempotency(conversation_id, &scoped, now)
            .await?
        else {
            return Err(DomainError::Unavailable("idempotency key contended; retry".into()));
        };
        return replay(deps, conversation_id, &scoped, &key, winner).await;
    }
    // On failure the record stays: a retry sends this same command.
    deps.writes.send_write(&command).await?;
    if let Err(e) = deps
        .store
        .idempotency
        .settle_idempotency(conversation_id, &scoped)
        .await
    {
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
        if let Err(e) = deps.store.idempotency.settle_idempotency(conversation_id, scoped).await {
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
        match deps.store.conversations.put_conversation(&record, expected).await {
            Ok(()) => return Ok(record.conversation),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(DomainError::Unavailable(
        "the conversation is being written heavily; retry".into(),
    ))
}

/// The key a conversation's new messages are sealed under (`None`: the
/// conversation is stored in clear). A conversation whose key is gone is
/// being erased: it reads as missing.
async fn message_key(deps: &ApiDeps, record: &ConversationRecord) -> Result<Option<Arc<DataKey>>, DomainError> {
    let (keys, Some(id)) = (&deps.keys, record.key_id) else {
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
