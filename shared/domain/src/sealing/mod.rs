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
use convo_schema::{Conversation, FlagStatus, Message, Metadata, Sealed, SealedFields, Timestamp, ToolCall};

use crate::crypto::{CryptoError, DataKey, Place};
use crate::ports::*;

pub use crate::model::{
    AUDIO_URL, CONTENT, FIRST_PREVIEW, LAST_PREVIEW, METADATA, PREVIEW, REVIEW_NOTE, TITLE, TOOL_CALLS, USER_NAME,
};

mod store;
pub use store::SealedStore;
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
