//! Field-level envelope encryption of what a person wrote or was told
//! (issue 16). Sealed under the data key of the conversation's (owner,
//! user), each value bound to its owner, conversation, item and field (see
//! [`crate::crypto::Place`]):
//!
//! - a message's `content`, its tool calls' `arguments` (one value), its
//!   `metadata` (the whole object) and its `audioUrl`, bound to the
//!   message id (the API seals them before the queue, when the index is not
//!   assigned yet; the id is as unique and never changes);
//! - a conversation's `title`, `userName`, `metadata`, `reviewNote` and
//!   previews, bound to the conversation (the previews to the field
//!   `preview`: the first and last one are both a message's preview).
//!
//! The API seals messages before they are queued ([`seal_accepted`]); the
//! worker stores them as they come and never holds a key. Everything else
//! goes through [`SealedStore`], which seals each write and opens each read,
//! so that every reader gets clear text and every store holds none. A
//! conversation whose key was destroyed (its user erased) reads as being
//! erased: missing to the API, and finished by a repeated erasure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use convo_schema::commands::AcceptedMessage;
use convo_schema::{Conversation, FlagStatus, Message, Metadata, Sealed, SealedFields, Timestamp, ToolCall, UserStats};

use crate::crypto::{CryptoError, DataKey, Place};
use crate::ports::*;

pub use crate::model::{
    AUDIO_URL, CONTENT, FIRST_PREVIEW, LAST_PREVIEW, METADATA, PREVIEW, REVIEW_NOTE, TITLE, TOOL_CALLS, USER_NAME,
};
/// The item name of a conversation-level value.
const CONVERSATION: &str = "conversation";

/// Where a conversation's previews are bound (the first and the last one
/// alike: both are a message's preview).
fn preview_place<'a>(owner: &'a str, conversation: &'a str) -> Place<'a> {
    Place {
        owner,
        conversation,
        item: CONVERSATION,
        field: PREVIEW,
    }
}

/// The field a value is bound to: the two previews are both `preview`.
fn bound_field(name: &str) -> &str {
    match name {
        FIRST_PREVIEW | LAST_PREVIEW => PREVIEW,
        other => other,
    }
}

fn seal_one(key: &DataKey, place: Place<'_>, text: &str) -> Result<Sealed, CryptoError> {
    key.seal(&place, text.as_bytes()).map(Sealed)
}

fn open_text(key: &DataKey, place: Place<'_>, sealed: &Sealed) -> Result<String, CryptoError> {
    let plain = key.open(&place, &sealed.0)?;
    String::from_utf8(plain).map_err(|_| CryptoError::Corrupt)
}

/// The personal fields of one message, wherever it is (an accepted message
/// on the queue, a stored one).
struct MessageFields<'a> {
    content: &'a mut String,
    tool_calls: &'a mut Vec<ToolCall>,
    metadata: &'a mut Metadata,
    audio_url: &'a mut Option<String>,
    sealed: &'a mut SealedFields,
}

impl MessageFields<'_> {
    /// Seals what is in clear (a field already sealed stays as it is).
    fn seal(self, key: &DataKey, owner: &str, conversation: &str, message_id: &str) -> Result<(), CryptoError> {
        let place = |field| Place {
            owner,
            conversation,
            item: message_id,
            field,
        };
        if !self.content.is_empty() {
            self.sealed
                .insert(CONTENT.into(), seal_one(key, place(CONTENT), self.content)?);
            self.content.clear();
        }
        if self.tool_calls.iter().any(|c| !c.arguments.is_empty()) {
            let arguments: Vec<String> = self
                .tool_calls
                .iter_mut()
                .map(|c| std::mem::take(&mut c.arguments))
                .collect();
            let json = serde_json::to_string(&arguments).map_err(|_| CryptoError::Corrupt)?;
            self.sealed
                .insert(TOOL_CALLS.into(), seal_one(key, place(TOOL_CALLS), &json)?);
        }
        if !self.metadata.is_empty() {
            let json = serde_json::to_string(&*self.metadata).map_err(|_| CryptoError::Corrupt)?;
            self.sealed
                .insert(METADATA.into(), seal_one(key, place(METADATA), &json)?);
            self.metadata.clear();
        }
        if let Some(url) = self.audio_url.take() {
            self.sealed
                .insert(AUDIO_URL.into(), seal_one(key, place(AUDIO_URL), &url)?);
        }
        Ok(())
    }

    /// Opens every sealed field into its clear one; a value that does not
    /// open (altered, moved, another key) is an error, never returned.
    fn open(self, key: &DataKey, owner: &str, conversation: &str, message_id: &str) -> Result<(), CryptoError> {
        let place = |field| Place {
            owner,
            conversation,
            item: message_id,
            field,
        };
        let sealed = std::mem::take(self.sealed);
        for (field, value) in &sealed {
            let text = open_text(key, place(field.as_str()), value)?;
            match field.as_str() {
                CONTENT => *self.content = text,
                TOOL_CALLS => {
                    let arguments: Vec<String> = serde_json::from_str(&text).map_err(|_| CryptoError::Corrupt)?;
                    if arguments.len() != self.tool_calls.len() {
                        return Err(CryptoError::Corrupt);
                    }
                    for (call, a) in self.tool_calls.iter_mut().zip(arguments) {
                        call.arguments = a;
                    }
                }
                METADATA => *self.metadata = serde_json::from_str(&text).map_err(|_| CryptoError::Corrupt)?,
                AUDIO_URL => *self.audio_url = Some(text),
                // A field this code does not know: kept sealed.
                _ => {
                    self.sealed.insert(field.clone(), value.clone());
                }
            }
        }
        Ok(())
    }
}

fn fields_of(m: &mut Message) -> MessageFields<'_> {
    MessageFields {
        content: &mut m.content,
        tool_calls: &mut m.tool_calls,
        metadata: &mut m.metadata,
        audio_url: &mut m.audio_url,
        sealed: &mut m.sealed,
    }
}

/// Seals an accepted message before it is queued: its personal fields, and
/// its preview (which the worker keeps as the conversation's first or last
/// preview without opening it).
pub fn seal_accepted(
    key: &DataKey,
    owner: &str,
    conversation: &str,
    m: &mut AcceptedMessage,
    preview: &str,
) -> Result<(), CryptoError> {
    let preview = seal_one(key, preview_place(owner, conversation), preview)?;
    MessageFields {
        content: &mut m.content,
        tool_calls: &mut m.tool_calls,
        metadata: &mut m.metadata,
        audio_url: &mut m.audio_url,
        sealed: &mut m.sealed,
    }
    .seal(key, owner, conversation, &m.message_id)?;
    m.sealed.insert(PREVIEW.into(), preview);
    Ok(())
}

/// The message a worker stores for an accepted one: its sealed fields, but
/// not the preview (the conversation keeps that).
pub fn stored_fields(m: &AcceptedMessage) -> SealedFields {
    let mut fields = m.sealed.clone();
    fields.remove(PREVIEW);
    fields
}

pub fn seal_message(key: &DataKey, owner: &str, m: &mut Message) -> Result<(), CryptoError> {
    let (conversation, id) = (m.conversation_id.clone(), m.message_id.clone());
    fields_of(m).seal(key, owner, &conversation, &id)
}

pub fn open_message(key: &DataKey, owner: &str, m: &mut Message) -> Result<(), CryptoError> {
    let (conversation, id) = (m.conversation_id.clone(), m.message_id.clone());
    fields_of(m).open(key, owner, &conversation, &id)
}

/// Empties what a message says (a message under a destroyed key).
fn strip_message(m: &mut Message) {
    m.content.clear();
    m.tool_calls.iter_mut().for_each(|c| c.arguments.clear());
    m.metadata.clear();
    m.audio_url = None;
    m.sealed.clear();
}

/// The conversation's personal fields in clear, by name.
fn conversation_text<'a>(c: &'a mut Conversation, name: &str) -> Option<&'a mut Option<String>> {
    match name {
        TITLE => Some(&mut c.title),
        USER_NAME => Some(&mut c.user_name),
        REVIEW_NOTE => Some(&mut c.review_note),
        FIRST_PREVIEW => Some(&mut c.first_message_preview),
        LAST_PREVIEW => Some(&mut c.last_message_preview),
        _ => None,
    }
}

const CONVERSATION_TEXT: [&str; 5] = [TITLE, USER_NAME, REVIEW_NOTE, FIRST_PREVIEW, LAST_PREVIEW];

pub fn seal_record(key: &DataKey, r: &mut ConversationRecord) -> Result<(), CryptoError> {
    let owner = r.conversation.owner_id.clone();
    let id = r.conversation.conversation_id.clone();
    let place = |field| Place {
        owner: &owner,
        conversation: &id,
        item: CONVERSATION,
        field,
    };
    for name in CONVERSATION_TEXT {
        if let Some(slot) = conversation_text(&mut r.conversation, name)
            && let Some(text) = slot.take()
        {
            r.sealed
                .insert(name.into(), seal_one(key, place(bound_field(name)), &text)?);
        }
    }
    if !r.conversation.metadata.is_empty() {
        let json = serde_json::to_string(&r.conversation.metadata).map_err(|_| CryptoError::Corrupt)?;
        r.sealed.insert(METADATA.into(), seal_one(key, place(METADATA), &json)?);
        r.conversation.metadata.clear();
    }
    Ok(())
}

pub fn open_record(key: &DataKey, r: &mut ConversationRecord) -> Result<(), CryptoError> {
    let owner = r.conversation.owner_id.clone();
    let id = r.conversation.conversation_id.clone();
    let place = |field| Place {
        owner: &owner,
        conversation: &id,
        item: CONVERSATION,
        field,
    };
    let sealed = std::mem::take(&mut r.sealed);
    for (name, value) in &sealed {
        let text = open_text(key, place(bound_field(name)), value)?;
        if name == METADATA {
            r.conversation.metadata = serde_json::from_str(&text).map_err(|_| CryptoError::Corrupt)?;
        } else if let Some(slot) = conversation_text(&mut r.conversation, name) {
            *slot = Some(text);
        } else {
            r.sealed.insert(name.clone(), value.clone());
        }
    }
    if let Some(last) = r.last_sealed.take() {
        // The newest chunk's last message wins over the snapshot.
        let content = open_text(
            key,
            Place {
                owner: &owner,
                conversation: &id,
                item: &last.message_id,
                field: CONTENT,
            },
            &last.content,
        )?;
        r.conversation.last_message_preview = Some(crate::model::preview(&content));
    }
    Ok(())
}

/// Empties a conversation's personal fields (its key was destroyed).
fn strip_record(r: &mut ConversationRecord) {
    for name in CONVERSATION_TEXT {
        if let Some(slot) = conversation_text(&mut r.conversation, name) {
            *slot = None;
        }
    }
    r.conversation.metadata.clear();
    r.sealed.clear();
    r.last_sealed = None;
}

fn corrupt(what: &str, e: CryptoError) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn key_unavailable(e: KeyError) -> StoreError {
    match e {
        KeyError::Unavailable(m) => StoreError::Unavailable(m),
        KeyError::Corrupt(m) => StoreError::Corrupt(m),
    }
}

/// Whose key a conversation's data is under.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyRef {
    owner: String,
    user: String,
    id: Option<KeyId>,
}

impl KeyRef {
    fn of(r: &ConversationRecord) -> Self {
        KeyRef {
            owner: r.conversation.owner_id.clone(),
            user: r.conversation.user_id.clone(),
            id: r.key_id,
        }
    }
}

enum Access {
    /// Stored in clear (before encryption, or with it off).
    Clear,
    Key(Arc<DataKey>),
    /// The key was destroyed: nothing of it can be read again.
    Shredded,
}

/// A conversation record opened with its key's access.
fn open_with(access: &Access, mut r: ConversationRecord) -> Result<ConversationRecord, StoreError> {
    match access {
        Access::Clear => {}
        Access::Key(k) => open_record(k, &mut r).map_err(|e| corrupt("a conversation's sealed field", e))?,
        Access::Shredded => {
            strip_record(&mut r);
            r.deleting = true;
            r.shredded = true;
        }
    }
    Ok(r)
}

/// Conversations whose key is known (a conversation never changes key).
const KNOWN_LIMIT: usize = 10_000;

/// A [`ConversationStore`] that seals every personal field it is given and
/// opens every one it reads, with the keys of a [`KeyRing`].
pub struct SealedStore {
    inner: Arc<dyn ConversationStore>,
    keys: Arc<dyn KeyRing>,
    known: Mutex<HashMap<String, KeyRef>>,
}

impl SealedStore {
    pub fn new(inner: Arc<dyn ConversationStore>, keys: Arc<dyn KeyRing>) -> Self {
        Self {
            inner,
            keys,
            known: Mutex::new(HashMap::new()),
        }
    }

    fn learn(&self, conversation_id: &str, r: KeyRef) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= KNOWN_LIMIT {
            known.clear();
        }
        known.insert(conversation_id.to_string(), r);
    }

    async fn access(&self, r: &KeyRef) -> Result<Access, StoreError> {
        let Some(id) = r.id else { return Ok(Access::Clear) };
        match self.keys.key(&r.owner, &r.user, id).await.map_err(key_unavailable)? {
            Some(k) => Ok(Access::Key(k)),
            None => Ok(Access::Shredded),
        }
    }

    /// The key of a conversation known by id only (a chunk's, a page of
    /// messages'), and its owner: remembered from a read, else read once.
    async fn access_of(&self, conversation_id: &str) -> Result<(Access, String), StoreError> {
        let known = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(conversation_id)
            .cloned();
        let r = match known {
            Some(r) => r,
            None => match self.inner.get_conversation(conversation_id).await? {
                Some(rec) => {
                    let r = KeyRef::of(&rec);
                    self.learn(conversation_id, r.clone());
                    r
                }
                None => return Ok((Access::Clear, String::new())),
            },
        };
        Ok((self.access(&r).await?, r.owner))
    }

    async fn open(&self, r: ConversationRecord) -> Result<ConversationRecord, StoreError> {
        let kr = KeyRef::of(&r);
        self.learn(r.id(), kr.clone());
        let access = self.access(&kr).await?;
        open_with(&access, r)
    }

    /// A page of conversations: each distinct key is looked up once, and
    /// all of them at once (a cold page of 200 conversations of one user is
    /// one key lookup, not 200 in a row).
    async fn open_all(&self, records: Vec<ConversationRecord>) -> Result<Vec<ConversationRecord>, StoreError> {
        let refs: Vec<KeyRef> = records.iter().map(KeyRef::of).collect();
        let mut distinct: Vec<&KeyRef> = Vec::new();
        for r in &refs {
            if !distinct.contains(&r) {
                distinct.push(r);
            }
        }
        let accesses = futures::future::try_join_all(distinct.iter().map(|r| self.access(r))).await?;
        let mut out = Vec::with_capacity(records.len());
        for (record, kr) in records.into_iter().zip(&refs) {
            self.learn(record.id(), kr.clone());
            let access = distinct
                .iter()
                .position(|d| *d == kr)
                .and_then(|i| accesses.get(i))
                .ok_or_else(|| StoreError::Corrupt("opening a page: a key was not looked up".into()))?;
            out.push(open_with(access, record)?);
        }
        Ok(out)
    }

    async fn seal(&self, r: &ConversationRecord) -> Result<ConversationRecord, StoreError> {
        let mut r = r.clone();
        let kr = KeyRef::of(&r);
        self.learn(r.id(), kr.clone());
        match self.access(&kr).await? {
            Access::Clear => {}
            Access::Key(k) => seal_record(&k, &mut r).map_err(|e| corrupt("sealing a conversation", e))?,
            // Being erased: what it said goes, nothing is sealed again.
            Access::Shredded if r.deleting => strip_record(&mut r),
            // Its key was destroyed under a write that read it live (a
            // creation racing its user's erasure): refused, so that nothing
            // is stored under a dead key; the caller retries with a new one.
            Access::Shredded => {
                return Err(StoreError::Unavailable(
                    "the user's data key was destroyed meanwhile; retry".into(),
                ));
            }
        }
        Ok(r)
    }

    async fn open_messages(&self, conversation_id: &str, messages: &mut [Message]) -> Result<(), StoreError> {
        if messages.iter().all(|m| m.sealed.is_empty()) {
            return Ok(());
        }
        let (access, owner) = self.access_of(conversation_id).await?;
        open_messages_with(&access, &owner, messages)
    }

    async fn seal_chunk(&self, chunk: &Chunk) -> Result<Chunk, StoreError> {
        let mut chunk = chunk.clone();
        let id = chunk.conversation_id.clone();
        match self.access_of(&id).await? {
            (Access::Clear, _) => {}
            (Access::Key(k), owner) => {
                for m in chunk.messages.iter_mut() {
                    seal_message(&k, &owner, m).map_err(|e| corrupt("sealing a message", e))?;
                }
                if let Some(p) = chunk.head.first_message_preview.take() {
                    let sealed =
                        seal_one(&k, preview_place(&owner, &id), &p).map_err(|e| corrupt("sealing a preview", e))?;
                    chunk.head.sealed_first_preview = Some(sealed);
                }
            }
            (Access::Shredded, _) => {
                chunk.messages.iter_mut().for_each(strip_message);
                chunk.head.first_message_preview = None;
                chunk.head.sealed_first_preview = None;
            }
        }
        Ok(chunk)
    }

    async fn open_chunk(&self, mut chunk: Chunk) -> Result<Chunk, StoreError> {
        let id = chunk.conversation_id.clone();
        let first = chunk.head.sealed_first_preview.take();
        if first.is_some() || chunk.messages.iter().any(|m| !m.sealed.is_empty()) {
            let (access, owner) = self.access_of(&id).await?;
            open_messages_with(&access, &owner, &mut chunk.messages)?;
            if let Some(p) = first {
                chunk.head.first_message_preview = match &access {
                    Access::Key(k) => {
                        Some(open_text(k, preview_place(&owner, &id), &p).map_err(|e| corrupt("a sealed preview", e))?)
                    }
                    _ => None,
                };
            }
        }
        let (clear, _) = Head::last_preview_of(chunk.messages.last());
        chunk.head.last_message_preview = clear;
        chunk.head.last_sealed = None;
        Ok(chunk)
    }
}

/// Opens a page of one conversation's messages with its key.
fn open_messages_with(access: &Access, owner: &str, messages: &mut [Message]) -> Result<(), StoreError> {
    if messages.iter().all(|m| m.sealed.is_empty()) {
        return Ok(());
    }
    match access {
        Access::Key(k) => {
            for m in messages.iter_mut() {
                open_message(k, owner, m).map_err(|e| corrupt("a sealed message", e))?;
            }
        }
        Access::Shredded => messages.iter_mut().for_each(strip_message),
        Access::Clear => {
            return Err(StoreError::Corrupt(
                "sealed messages in a conversation that names no key".into(),
            ));
        }
    }
    Ok(())
}

#[async_trait]
impl ConversationStore for SealedStore {
    async fn create_conversation(
        &self,
        record: &ConversationRecord,
        reuse_active: bool,
    ) -> Result<Created, StoreError> {
        let sealed = self.seal(record).await?;
        match self.inner.create_conversation(&sealed, reuse_active).await? {
            Created::New => Ok(Created::New),
            Created::Existing(r) => Ok(Created::Existing(Box::new(self.open(*r).await?))),
        }
    }

    async fn get_conversation(&self, conversation_id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        match self.inner.get_conversation(conversation_id).await? {
            Some(r) => Ok(Some(self.open(r).await?)),
            None => Ok(None),
        }
    }

    async fn get_conversation_for_read(&self, conversation_id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        match self.inner.get_conversation_for_read(conversation_id).await? {
            Some(r) => Ok(Some(self.open(r).await?)),
            None => Ok(None),
        }
    }

    async fn put_conversation_with(
        &self,
        record: &ConversationRecord,
        expected_version: u64,
        stats: Option<StatsDelta>,
    ) -> Result<(), StoreError> {
        let sealed = self.seal(record).await?;
        self.inner.put_conversation_with(&sealed, expected_version, stats).await
    }

    async fn put_chunk(&self, chunk: &Chunk) -> Result<ChunkWrite, StoreError> {
        let sealed = self.seal_chunk(chunk).await?;
        self.inner.put_chunk(&sealed).await
    }

    async fn chunks_desc(
        &self,
        conversation_id: &str,
        below: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Chunk>, StoreError> {
        let chunks = self.inner.chunks_desc(conversation_id, below, limit).await?;
        let mut out = Vec::with_capacity(chunks.len());
        for c in chunks {
            out.push(self.open_chunk(c).await?);
        }
        Ok(out)
    }

    async fn rewrite_chunk(&self, chunk: &Chunk) -> Result<(), StoreError> {
        let sealed = self.seal_chunk(chunk).await?;
        self.inner.rewrite_chunk(&sealed).await
    }

    async fn update_head(&self, conversation_id: &str, first_index: u64, head: &HeadState) -> Result<(), StoreError> {
        self.inner.update_head(conversation_id, first_index, head).await
    }

    async fn claim_external_ids(
        &self,
        conversation_id: &str,
        claims: &[(String, String)],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.inner.claim_external_ids(conversation_id, claims, expires_at).await
    }

    async fn put_flag_pointers(
        &self,
        conversation_id: &str,
        pointers: &[(u64, u64)],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.inner
            .put_flag_pointers(conversation_id, pointers, expires_at)
            .await
    }

    async fn list_conversations(
        &self,
        owner_id: &str,
        list: &ConversationList,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        let page = self.inner.list_conversations(owner_id, list, cursor, limit).await?;
        Ok(Page {
            items: self.open_all(page.items).await?,
            next_cursor: page.next_cursor,
        })
    }

    async fn list_messages(&self, conversation_id: &str, query: &MessageQuery) -> Result<Page<Message>, StoreError> {
        let mut page = self.inner.list_messages(conversation_id, query).await?;
        self.open_messages(conversation_id, &mut page.items).await?;
        Ok(page)
    }

    async fn list_flagged_messages(
        &self,
        conversation_id: &str,
        order: Order,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Message>, StoreError> {
        let mut page = self
            .inner
            .list_flagged_messages(conversation_id, order, cursor, limit)
            .await?;
        self.open_messages(conversation_id, &mut page.items).await?;
        Ok(page)
    }

    async fn list_flagged_conversations(
        &self,
        owner_id: &str,
        status: FlagStatus,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        let page = self
            .inner
            .list_flagged_conversations(owner_id, status, cursor, limit)
            .await?;
        Ok(Page {
            items: self.open_all(page.items).await?,
            next_cursor: page.next_cursor,
        })
    }

    async fn existing_external_ids(
        &self,
        conversation_id: &str,
        external_ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        self.inner.existing_external_ids(conversation_id, external_ids).await
    }

    async fn user_stats(&self, owner_id: &str, user_id: &str) -> Result<Option<UserStats>, StoreError> {
        self.inner.user_stats(owner_id, user_id).await
    }

    async fn delete_conversation_items(&self, conversation_id: &str) -> Result<(), StoreError> {
        self.inner.delete_conversation_items(conversation_id).await
    }

    async fn remove_conversation(
        &self,
        record: &ConversationRecord,
        expected_version: u64,
        stats: Option<StatsDelta>,
    ) -> Result<(), StoreError> {
        self.inner.remove_conversation(record, expected_version, stats).await
    }

    async fn expired_conversations(&self, now: Timestamp, limit: usize) -> Result<Vec<ConversationRecord>, StoreError> {
        let found = self.inner.expired_conversations(now, limit).await?;
        self.open_all(found).await
    }

    async fn set_last_conversation_at(
        &self,
        owner_id: &str,
        user_id: &str,
        at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.inner.set_last_conversation_at(owner_id, user_id, at).await
    }

    async fn delete_user_stats(&self, owner_id: &str, user_id: &str) -> Result<(), StoreError> {
        self.inner.delete_user_stats(owner_id, user_id).await
    }

    async fn active_started_before(
        &self,
        started_before: Timestamp,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        let page = self.inner.active_started_before(started_before, after, limit).await?;
        Ok(Page {
            items: self.open_all(page.items).await?,
            next_cursor: page.next_cursor,
        })
    }

    async fn sweep_cursor(&self) -> Result<Option<String>, StoreError> {
        self.inner.sweep_cursor().await
    }

    async fn set_sweep_cursor(&self, cursor: Option<&str>) -> Result<(), StoreError> {
        self.inner.set_sweep_cursor(cursor).await
    }

    async fn get_idempotency(
        &self,
        conversation_id: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.get_idempotency(conversation_id, key, now).await
    }

    async fn put_idempotency(
        &self,
        conversation_id: &str,
        key: &str,
        record: &IdempotencyRecord,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner
            .put_idempotency(conversation_id, key, record, now, expires_at)
            .await
    }

    async fn settle_idempotency(&self, conversation_id: &str, key: &str) -> Result<(), StoreError> {
        self.inner.settle_idempotency(conversation_id, key).await
    }

    async fn get_erasure(&self, erasure_id: &str) -> Result<Option<ErasureJob>, StoreError> {
        self.inner.get_erasure(erasure_id).await
    }

    async fn put_erasure(&self, job: &ErasureJob, expected_version: u64) -> Result<(), StoreError> {
        self.inner.put_erasure(job, expected_version).await
    }

    fn user_index_is_consistent(&self) -> bool {
        self.inner.user_index_is_consistent()
    }

    async fn health(&self) -> ComponentHealth {
        self.inner.health().await
    }
}
