//! [`SealedStore`]: the store decorator that seals every personal field it
//! is given and opens every one it reads, with the keys of a key ring.

use super::*;

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

/// The roles of a store that carry personal data (conversations, the
/// message log, the lists), sealing every personal field they are given and
/// opening every one they read, with the keys of a [`KeyRing`]. The other
/// roles (totals, idempotency, the sweeper's index, erasure jobs, health)
/// hold no sealed field and are not wrapped.
pub struct SealedStore {
    conversations: Arc<dyn Conversations>,
    messages: Arc<dyn MessageLog>,
    lists: Arc<dyn ConversationLists>,
    keys: Arc<dyn KeyRing>,
    known: Mutex<HashMap<String, KeyRef>>,
}

impl SealedStore {
    pub fn new(
        conversations: Arc<dyn Conversations>,
        messages: Arc<dyn MessageLog>,
        lists: Arc<dyn ConversationLists>,
        keys: Arc<dyn KeyRing>,
    ) -> Self {
        Self {
            conversations,
            messages,
            lists,
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
            None => match self.conversations.get_conversation(conversation_id).await? {
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
impl Conversations for SealedStore {
    async fn create_conversation(
        &self,
        record: &ConversationRecord,
        reuse_active: bool,
    ) -> Result<Created, StoreError> {
        let sealed = self.seal(record).await?;
        match self.conversations.create_conversation(&sealed, reuse_active).await? {
            Created::New => Ok(Created::New),
            Created::Existing(r) => Ok(Created::Existing(Box::new(self.open(*r).await?))),
        }
    }

    async fn get_conversation(&self, conversation_id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        match self.conversations.get_conversation(conversation_id).await? {
            Some(r) => Ok(Some(self.open(r).await?)),
            None => Ok(None),
        }
    }

    async fn get_conversation_for_read(&self, conversation_id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        match self.conversations.get_conversation_for_read(conversation_id).await? {
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
        self.conversations
            .put_conversation_with(&sealed, expected_version, stats)
            .await
    }

    async fn remove_conversation(
        &self,
        record: &ConversationRecord,
        expected_version: u64,
        stats: Option<StatsDelta>,
    ) -> Result<(), StoreError> {
        self.conversations
            .remove_conversation(record, expected_version, stats)
            .await
    }
}

#[async_trait]
impl MessageLog for SealedStore {
    async fn put_chunk(&self, chunk: &Chunk) -> Result<ChunkWrite, StoreError> {
        let sealed = self.seal_chunk(chunk).await?;
        self.messages.put_chunk(&sealed).await
    }

    async fn chunks_desc(
        &self,
        conversation_id: &str,
        below: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Chunk>, StoreError> {
        let chunks = self.messages.chunks_desc(conversation_id, below, limit).await?;
        let mut out = Vec::with_capacity(chunks.len());
        for c in chunks {
            out.push(self.open_chunk(c).await?);
        }
        Ok(out)
    }

    async fn rewrite_chunk(&self, chunk: &Chunk) -> Result<(), StoreError> {
        let sealed = self.seal_chunk(chunk).await?;
        self.messages.rewrite_chunk(&sealed).await
    }

    async fn update_head(&self, conversation_id: &str, first_index: u64, head: &HeadState) -> Result<(), StoreError> {
        self.messages.update_head(conversation_id, first_index, head).await
    }

    async fn claim_external_ids(
        &self,
        conversation_id: &str,
        claims: &[(String, String)],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.messages
            .claim_external_ids(conversation_id, claims, expires_at)
            .await
    }

    async fn put_flag_pointers(
        &self,
        conversation_id: &str,
        pointers: &[(u64, u64)],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.messages
            .put_flag_pointers(conversation_id, pointers, expires_at)
            .await
    }

    async fn list_messages(&self, conversation_id: &str, query: &MessageQuery) -> Result<Page<Message>, StoreError> {
        let mut page = self.messages.list_messages(conversation_id, query).await?;
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
            .messages
            .list_flagged_messages(conversation_id, order, cursor, limit)
            .await?;
        self.open_messages(conversation_id, &mut page.items).await?;
        Ok(page)
    }

    async fn existing_external_ids(
        &self,
        conversation_id: &str,
        external_ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        self.messages.existing_external_ids(conversation_id, external_ids).await
    }

    async fn delete_conversation_items(&self, conversation_id: &str) -> Result<(), StoreError> {
        self.messages.delete_conversation_items(conversation_id).await
    }
}

#[async_trait]
impl ConversationLists for SealedStore {
    async fn list_conversations(
        &self,
        owner_id: &str,
        list: &ConversationList,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        let page = self.lists.list_conversations(owner_id, list, cursor, limit).await?;
        Ok(Page {
            items: self.open_all(page.items).await?,
            next_cursor: page.next_cursor,
        })
    }

    async fn list_flagged_conversations(
        &self,
        owner_id: &str,
        status: FlagStatus,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        let page = self
            .lists
            .list_flagged_conversations(owner_id, status, cursor, limit)
            .await?;
        Ok(Page {
            items: self.open_all(page.items).await?,
            next_cursor: page.next_cursor,
        })
    }

    fn user_index_is_consistent(&self) -> bool {
        self.lists.user_index_is_consistent()
    }
}
