//! The local key ring (issue 16): one AES-256
//! data key per (owner, user), stored only wrapped — sealed under the
//! key-wrapping key with the owner and user as associated data — in its own
//! database file (`keys.redb`), apart from the conversations, so that a copy
//! of `convo.redb` holds nothing a destroyed key could open. The
//! key-wrapping key comes from `CONVO_MASTER_KEY` (base64 of 32 bytes) or
//! `<data-dir>/master-key` (made on first run, mode 0600). Unwrapped keys
//! are cached in memory.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use convo_domain::crypto::{DataKey, KeyCache, Place};
use convo_domain::ports::{KeyError, KeyId, KeyRing};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const WRAPPED: TableDefinition<&str, &[u8]> = TableDefinition::new("wrapped_keys");
const MASTER_FILE: &str = "master-key";

fn unavailable(e: impl std::fmt::Display) -> KeyError {
    KeyError::Unavailable(e.to_string())
}

/// The key-wrapping key: `CONVO_MASTER_KEY`, else the data directory's
/// file, else a new one written there (mode 0600). In memory (tests, an
/// in-memory server) a fresh random one.
pub fn load_or_create_master_key(data_dir: Option<&Path>) -> Result<DataKey, String> {
    let decode = |raw: &str, from: &str| -> Result<DataKey, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|_| format!("{from} is not base64"))?;
        DataKey::from_bytes(&bytes).map_err(|_| format!("{from} must hold 32 bytes"))
    };
    if let Ok(raw) = std::env::var("CONVO_MASTER_KEY")
        && !raw.trim().is_empty()
    {
        return decode(&raw, "CONVO_MASTER_KEY");
    }
    let Some(dir) = data_dir else {
        return DataKey::generate().map(|(k, _)| k).map_err(|e| e.to_string());
    };
    let path = dir.join(MASTER_FILE);
    if let Ok(raw) = std::fs::read_to_string(&path) {
        return decode(&raw, &path.display().to_string());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (key, bytes) = DataKey::generate().map_err(|e| e.to_string())?;
    write_private(&path, &base64::engine::general_purpose::STANDARD.encode(bytes))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(key)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(text.as_bytes())
    }
    #[cfg(not(unix))]
    std::fs::write(path, text)
}

pub struct LocalKeyRing {
    db: Arc<Database>,
    master: DataKey,
    cache: KeyCache,
}

fn id(owner: &str, user: &str) -> String {
    crate::db::key(&[owner, user])
}

/// What a wrapped key is bound to: its owner, user and id.
fn place<'a>(owner: &'a str, user: &'a str, kid: &'a str) -> Place<'a> {
    Place {
        owner,
        conversation: kid,
        item: user,
        field: "data-key",
    }
}

/// A stored key: its id (8 bytes) and the key sealed under the master key.
fn stored_value(kid: KeyId, wrapped: &[u8]) -> Vec<u8> {
    let mut v = kid.to_be_bytes().to_vec();
    v.extend_from_slice(wrapped);
    v
}

impl LocalKeyRing {
    /// `keys.redb` under `data_dir` (memory when `None`).
    pub fn open(data_dir: Option<&Path>, master: DataKey) -> Result<Self, String> {
        let db = match data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let path = dir.join("keys.redb");
                Database::create(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?
            }
            None => Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(|e| e.to_string())?,
        };
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(WRAPPED).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        Ok(Self {
            db: Arc::new(db),
            master,
            cache: KeyCache::default(),
        })
    }

    /// The stored key of (owner, user): its id and the key.
    fn read(&self, owner: &str, user: &str) -> Result<Option<(KeyId, Arc<DataKey>)>, KeyError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(WRAPPED).map_err(unavailable)?;
        let Some(value) = table.get(id(owner, user).as_str()).map_err(unavailable)? else {
            return Ok(None);
        };
        self.unwrap_value(owner, user, value.value()).map(Some)
    }

    fn unwrap_value(&self, owner: &str, user: &str, value: &[u8]) -> Result<(KeyId, Arc<DataKey>), KeyError> {
        if value.len() < 8 {
            return Err(KeyError::Corrupt("a stored key is truncated".into()));
        }
        let (kid, wrapped) = value.split_at(8);
        let mut eight = [0u8; 8];
        eight.copy_from_slice(kid);
        let kid = u64::from_be_bytes(eight);
        if let Some(k) = self.cache.get(owner, user, kid) {
            return Ok((kid, k));
        }
        let kid_text = kid.to_string();
        let bytes = self
            .master
            .open(&place(owner, user, &kid_text), wrapped)
            .map_err(|e| KeyError::Corrupt(e.to_string()))?;
        let key = Arc::new(DataKey::from_bytes(&bytes).map_err(|e| KeyError::Corrupt(e.to_string()))?);
        self.cache.put(owner, user, kid, key.clone());
        Ok((kid, key))
    }
}

#[async_trait]
impl KeyRing for LocalKeyRing {
    async fn current_key(&self, owner: &str, user: &str) -> Result<(KeyId, Arc<DataKey>), KeyError> {
        if let Some(found) = self.read(owner, user)? {
            return Ok(found);
        }
        let (key, bytes) = DataKey::generate().map_err(|e| unavailable(e.to_string()))?;
        let kid = convo_domain::crypto::new_key_id().map_err(unavailable)?;
        let kid_text = kid.to_string();
        let wrapped = self
            .master
            .seal(&place(owner, user, &kid_text), &bytes)
            .map_err(unavailable)?;
        // One writer at a time (redb): the first key stored wins, and a
        // second maker reads it back.
        let txn = self.db.begin_write().map_err(unavailable)?;
        let existing = {
            let mut table = txn.open_table(WRAPPED).map_err(unavailable)?;
            let k = id(owner, user);
            let found = table.get(k.as_str()).map_err(unavailable)?.map(|v| v.value().to_vec());
            if found.is_none() {
                table
                    .insert(k.as_str(), stored_value(kid, &wrapped).as_slice())
                    .map_err(unavailable)?;
            }
            found
        };
        txn.commit().map_err(unavailable)?;
        match existing {
            None => {
                let key = Arc::new(key);
                self.cache.put(owner, user, kid, key.clone());
                Ok((kid, key))
            }
            Some(value) => self.unwrap_value(owner, user, &value),
        }
    }

    async fn key(&self, owner: &str, user: &str, kid: KeyId) -> Result<Option<Arc<DataKey>>, KeyError> {
        if let Some(k) = self.cache.get(owner, user, kid) {
            return Ok(Some(k));
        }
        Ok(self
            .read(owner, user)?
            .filter(|(found, _)| *found == kid)
            .map(|(_, k)| k))
    }

    async fn destroy(&self, owner: &str, user: &str) -> Result<(), KeyError> {
        let txn = self.db.begin_write().map_err(unavailable)?;
        txn.open_table(WRAPPED)
            .map_err(unavailable)?
            .remove(id(owner, user).as_str())
            .map_err(unavailable)?;
        txn.commit().map_err(unavailable)?;
        self.cache.forget(owner, user);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("convo-keys-{}", ulid::Ulid::new()))
    }

    #[tokio::test]
    async fn one_key_per_user_kept_wrapped_and_shredded_for_good() {
        let d = dir();
        let master = load_or_create_master_key(Some(&d)).unwrap();
        let ring = LocalKeyRing::open(Some(&d), master).unwrap();
        let here = Place {
            owner: "toyco",
            conversation: "c1",
            item: "m1",
            field: "content",
        };
        let (mia_id, mia) = ring.current_key("toyco", "mia").await.unwrap();
        let sealed = mia.seal(&here, b"my secret").unwrap();
        // The same key again, by id too; another user's is another key.
        let (again_id, again) = ring.current_key("toyco", "mia").await.unwrap();
        assert_eq!(again_id, mia_id);
        assert_eq!(again.open(&here, &sealed).unwrap(), b"my secret");
        let (leo_id, leo) = ring.current_key("toyco", "leo").await.unwrap();
        assert_ne!(leo_id, mia_id);
        assert!(leo.open(&here, &sealed).is_err());
        // Asked by another id: not this key.
        assert!(ring.key("toyco", "mia", leo_id).await.unwrap().is_none());
        drop(ring);

        // Reopened with the master key from the file: the stored key opens it.
        let ring = LocalKeyRing::open(Some(&d), load_or_create_master_key(Some(&d)).unwrap()).unwrap();
        let again = ring.key("toyco", "mia", mia_id).await.unwrap().expect("kept");
        assert_eq!(again.open(&here, &sealed).unwrap(), b"my secret");
        // What is stored is the id and the key sealed under the master key
        // for this (owner, user, id): opening nowhere else.
        let stored = {
            let txn = ring.db.begin_read().unwrap();
            let table = txn.open_table(WRAPPED).unwrap();
            table
                .get(id("toyco", "mia").as_str())
                .unwrap()
                .unwrap()
                .value()
                .to_vec()
        };
        assert_eq!(stored.len(), 8 + 32 + convo_domain::crypto::OVERHEAD);
        let master = load_or_create_master_key(Some(&d)).unwrap();
        let kid = mia_id.to_string();
        assert!(master.open(&place("toyco", "mia", &kid), &stored[8..]).is_ok());
        assert!(master.open(&place("toyco", "leo", &kid), &stored[8..]).is_err());
        assert!(master.open(&place("toyco", "mia", "1"), &stored[8..]).is_err());

        // Destroyed: gone for good, and a new key for the same user is
        // another key, opening nothing old.
        ring.destroy("toyco", "mia").await.unwrap();
        ring.destroy("toyco", "mia").await.unwrap();
        assert!(ring.key("toyco", "mia", mia_id).await.unwrap().is_none());
        let (fresh_id, fresh) = ring.current_key("toyco", "mia").await.unwrap();
        assert_ne!(fresh_id, mia_id);
        assert!(ring.key("toyco", "mia", mia_id).await.unwrap().is_none());
        assert_eq!(
            fresh.open(&here, &sealed),
            Err(convo_domain::crypto::CryptoError::Corrupt)
        );

        // Another master key cannot unwrap the stored keys: a typed error.
        drop(ring);
        let (other, _) = DataKey::generate().unwrap();
        let ring = LocalKeyRing::open(Some(&d), other).unwrap();
        assert!(matches!(
            ring.key("toyco", "leo", leo_id).await,
            Err(KeyError::Corrupt(_))
        ));
        // The master key file is private.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.join(MASTER_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
