//! The local key ring (issue 16, in progress; not used yet): one AES-256
//! data key per (owner, user), stored only wrapped — sealed under the
//! key-wrapping key with the owner and user as associated data — in its own
//! database file (`keys.redb`), apart from the conversations, so that a copy
//! of `convo.redb` holds nothing a destroyed key could open. The
//! key-wrapping key comes from `CONVO_MASTER_KEY` (base64 of 32 bytes) or
//! `<data-dir>/master-key` (made on first run, mode 0600). Unwrapped keys
//! are cached in memory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use convo_domain::crypto::{DataKey, Place};
use convo_domain::ports::{KeyError, KeyRing};
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
    cache: Mutex<HashMap<(String, String), Arc<DataKey>>>,
}

fn id(owner: &str, user: &str) -> String {
    crate::db::key(&[owner, user])
}

fn place<'a>(owner: &'a str, user: &'a str) -> Place<'a> {
    Place {
        owner,
        conversation: "",
        item: user,
        field: "data-key",
    }
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
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, owner: &str, user: &str) -> Option<Arc<DataKey>> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(owner.to_string(), user.to_string()))
            .cloned()
    }

    fn remember(&self, owner: &str, user: &str, key: Arc<DataKey>) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((owner.to_string(), user.to_string()), key);
    }

    fn read(&self, owner: &str, user: &str) -> Result<Option<Arc<DataKey>>, KeyError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(WRAPPED).map_err(unavailable)?;
        let Some(wrapped) = table.get(id(owner, user).as_str()).map_err(unavailable)? else {
            return Ok(None);
        };
        let bytes = self
            .master
            .open(&place(owner, user), wrapped.value())
            .map_err(|e| KeyError::Corrupt(e.to_string()))?;
        let key = DataKey::from_bytes(&bytes).map_err(|e| KeyError::Corrupt(e.to_string()))?;
        Ok(Some(Arc::new(key)))
    }
}

#[async_trait]
impl KeyRing for LocalKeyRing {
    async fn data_key(&self, owner: &str, user: &str) -> Result<Arc<DataKey>, KeyError> {
        if let Some(k) = self.existing_key(owner, user).await? {
            return Ok(k);
        }
        let (key, bytes) = DataKey::generate().map_err(|e| unavailable(e.to_string()))?;
        let wrapped = self.master.seal(&place(owner, user), &bytes).map_err(unavailable)?;
        // One writer at a time (redb): the first key stored wins, and a
        // second maker reads it back.
        let txn = self.db.begin_write().map_err(unavailable)?;
        let existing = {
            let mut table = txn.open_table(WRAPPED).map_err(unavailable)?;
            let k = id(owner, user);
            let found = table.get(k.as_str()).map_err(unavailable)?.map(|v| v.value().to_vec());
            if found.is_none() {
                table.insert(k.as_str(), wrapped.as_slice()).map_err(unavailable)?;
            }
            found
        };
        txn.commit().map_err(unavailable)?;
        let key = match existing {
            None => Arc::new(key),
            Some(_) => self.read(owner, user)?.ok_or_else(|| unavailable("the key vanished"))?,
        };
        self.remember(owner, user, key.clone());
        Ok(key)
    }

    async fn existing_key(&self, owner: &str, user: &str) -> Result<Option<Arc<DataKey>>, KeyError> {
        if let Some(k) = self.cached(owner, user) {
            return Ok(Some(k));
        }
        let found = self.read(owner, user)?;
        if let Some(k) = &found {
            self.remember(owner, user, k.clone());
        }
        Ok(found)
    }

    async fn destroy(&self, owner: &str, user: &str) -> Result<(), KeyError> {
        let txn = self.db.begin_write().map_err(unavailable)?;
        txn.open_table(WRAPPED)
            .map_err(unavailable)?
            .remove(id(owner, user).as_str())
            .map_err(unavailable)?;
        txn.commit().map_err(unavailable)?;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(owner.to_string(), user.to_string()));
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
        let mia = ring.data_key("toyco", "mia").await.unwrap();
        let sealed = mia.seal(&here, b"my secret").unwrap();
        // The same key again (cached), and another user's is another key.
        assert_eq!(
            ring.data_key("toyco", "mia")
                .await
                .unwrap()
                .open(&here, &sealed)
                .unwrap(),
            b"my secret"
        );
        let leo = ring.data_key("toyco", "leo").await.unwrap();
        assert!(leo.open(&here, &sealed).is_err());
        drop(ring);

        // Reopened with the master key from the file: the stored key opens it.
        let ring = LocalKeyRing::open(Some(&d), load_or_create_master_key(Some(&d)).unwrap()).unwrap();
        let again = ring.existing_key("toyco", "mia").await.unwrap().expect("kept");
        assert_eq!(again.open(&here, &sealed).unwrap(), b"my secret");
        // What is stored is the key sealed under the master key for this
        // (owner, user): 32 bytes and the seal, opening nowhere else.
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
        assert_eq!(stored.len(), 32 + convo_domain::crypto::OVERHEAD);
        let master = load_or_create_master_key(Some(&d)).unwrap();
        assert!(master.open(&place("toyco", "mia"), &stored).is_ok());
        assert!(master.open(&place("toyco", "leo"), &stored).is_err());

        // Destroyed: gone for good, and a new key for the same user opens nothing old.
        ring.destroy("toyco", "mia").await.unwrap();
        ring.destroy("toyco", "mia").await.unwrap();
        assert!(ring.existing_key("toyco", "mia").await.unwrap().is_none());
        let fresh = ring.data_key("toyco", "mia").await.unwrap();
        assert_eq!(
            fresh.open(&here, &sealed),
            Err(convo_domain::crypto::CryptoError::Corrupt)
        );

        // Another master key cannot unwrap the stored keys: a typed error.
        drop(ring);
        let (other, _) = DataKey::generate().unwrap();
        let ring = LocalKeyRing::open(Some(&d), other).unwrap();
        assert!(matches!(
            ring.existing_key("toyco", "leo").await,
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
