//! The local key ring (issue 16): one AES-256 data key per (owner, user),
//! stored only wrapped — sealed under the key-wrapping key with the owner,
//! user and key id as associated data — in a file of its own
//! (`<data-dir>/keys`), apart from the conversations, so that a copy of
//! `convo.redb` holds nothing a destroyed key could open. The file is
//! rewritten whole and renamed into place on every change: a destroyed key
//! leaves no old copy in it (a database's copy-on-write pages would keep
//! one). The key-wrapping key comes from `CONVO_MASTER_KEY` (base64 of 32
//! bytes) or `<data-dir>/master-key` (made on first run, mode 0600).
//! Unwrapped keys are cached in memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use convo_domain::crypto::{DataKey, KeyCache, Place};
use convo_domain::ports::{KeyError, KeyId, KeyRing};

const MASTER_FILE: &str = "master-key";
const KEYS_FILE: &str = "keys";
/// The key file's first bytes: its name and format.
const MAGIC: &[u8; 8] = b"convoK01";

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

/// (owner, user) → (key id, the key sealed under the key-wrapping key).
type Wrapped = BTreeMap<(String, String), (KeyId, Vec<u8>)>;

pub struct LocalKeyRing {
    file: Option<PathBuf>,
    master: DataKey,
    keys: Mutex<Wrapped>,
    cache: KeyCache,
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

fn put_part(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_be_bytes());
    out.extend_from_slice(part);
}

/// The file: `MAGIC`, then per key its owner and user (length-prefixed),
/// the wrapped key's length, the key id (8 bytes) and the wrapped key.
fn encode(keys: &Wrapped) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for ((owner, user), (kid, wrapped)) in keys {
        put_part(&mut out, owner.as_bytes());
        put_part(&mut out, user.as_bytes());
        out.extend_from_slice(&(wrapped.len() as u32).to_be_bytes());
        out.extend_from_slice(&kid.to_be_bytes());
        out.extend_from_slice(wrapped);
    }
    out
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if rest.len() < n {
        return Err("the key file is truncated".into());
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn take_u32(rest: &mut &[u8]) -> Result<usize, String> {
    let mut four = [0u8; 4];
    four.copy_from_slice(take(rest, 4)?);
    Ok(u32::from_be_bytes(four) as usize)
}

fn decode(bytes: &[u8]) -> Result<Wrapped, String> {
    let mut rest = bytes;
    if take(&mut rest, MAGIC.len())? != MAGIC {
        return Err("not a convo key file".into());
    }
    let mut keys = Wrapped::new();
    while !rest.is_empty() {
        let n = take_u32(&mut rest)?;
        let owner = String::from_utf8(take(&mut rest, n)?.to_vec()).map_err(|e| e.to_string())?;
        let n = take_u32(&mut rest)?;
        let user = String::from_utf8(take(&mut rest, n)?.to_vec()).map_err(|e| e.to_string())?;
        let n = take_u32(&mut rest)?;
        let mut eight = [0u8; 8];
        eight.copy_from_slice(take(&mut rest, 8)?);
        let wrapped = take(&mut rest, n)?.to_vec();
        keys.insert((owner, user), (u64::from_be_bytes(eight), wrapped));
    }
    Ok(keys)
}

/// Writes `bytes` to `path` through a temporary file, synced, renamed into
/// place (the old file, with whatever it held, is replaced whole).
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    {
        #[cfg(unix)]
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?
        };
        #[cfg(not(unix))]
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

impl LocalKeyRing {
    /// The key file under `data_dir` (memory only when `None`).
    pub fn open(data_dir: Option<&Path>, master: DataKey) -> Result<Self, String> {
        let file = match data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                Some(dir.join(KEYS_FILE))
            }
            None => None,
        };
        let keys = match &file {
            Some(path) if path.exists() => {
                let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))?
            }
            _ => Wrapped::new(),
        };
        Ok(Self {
            file,
            master,
            keys: Mutex::new(keys),
            cache: KeyCache::default(),
        })
    }

    fn save(&self, keys: &Wrapped) -> Result<(), KeyError> {
        match &self.file {
            Some(path) => replace_file(path, &encode(keys)).map_err(unavailable),
            None => Ok(()),
        }
    }

    /// The stored key of (owner, user): its id and the key.
    fn read(&self, owner: &str, user: &str) -> Result<Option<(KeyId, Arc<DataKey>)>, KeyError> {
        let found = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(owner.to_string(), user.to_string()))
            .cloned();
        match found {
            Some((kid, wrapped)) => self.unwrap_key(owner, user, kid, &wrapped).map(|k| Some((kid, k))),
            None => Ok(None),
        }
    }

    fn unwrap_key(&self, owner: &str, user: &str, kid: KeyId, wrapped: &[u8]) -> Result<Arc<DataKey>, KeyError> {
        if let Some(k) = self.cache.get(owner, user, kid) {
            return Ok(k);
        }
        let kid_text = kid.to_string();
        let bytes = self
            .master
            .open(&place(owner, user, &kid_text), wrapped)
            .map_err(|e| KeyError::Corrupt(e.to_string()))?;
        let key = Arc::new(DataKey::from_bytes(&bytes).map_err(|e| KeyError::Corrupt(e.to_string()))?);
        self.cache.put(owner, user, kid, key.clone());
        Ok(key)
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
        {
            // One maker at a time: the first key stored wins.
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            let slot = (owner.to_string(), user.to_string());
            if !keys.contains_key(&slot) {
                let mut next = keys.clone();
                next.insert(slot, (kid, wrapped));
                self.save(&next)?;
                *keys = next;
                let key = Arc::new(key);
                self.cache.put(owner, user, kid, key.clone());
                return Ok((kid, key));
            }
        }
        self.read(owner, user)?.ok_or_else(|| unavailable("the key vanished"))
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

    async fn confirm(&self, owner: &str, user: &str, kid: KeyId) -> Result<bool, KeyError> {
        Ok(self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(owner.to_string(), user.to_string()))
            .is_some_and(|(found, _)| *found == kid))
    }

    async fn destroy(&self, owner: &str, user: &str) -> Result<(), KeyError> {
        {
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            let slot = (owner.to_string(), user.to_string());
            if keys.contains_key(&slot) {
                let mut next = keys.clone();
                next.remove(&slot);
                self.save(&next)?;
                *keys = next;
            }
        }
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
        let file = std::fs::read(d.join(KEYS_FILE)).unwrap();
        let (stored_id, stored) = decode(&file).unwrap()[&("toyco".to_string(), "mia".to_string())].clone();
        assert_eq!(stored_id, mia_id);
        assert_eq!(stored.len(), 32 + convo_domain::crypto::OVERHEAD);
        let master = load_or_create_master_key(Some(&d)).unwrap();
        let kid = mia_id.to_string();
        assert!(master.open(&place("toyco", "mia", &kid), &stored).is_ok());
        assert!(master.open(&place("toyco", "leo", &kid), &stored).is_err());
        assert!(master.open(&place("toyco", "mia", "1"), &stored).is_err());

        // Destroyed: gone for good, and a new key for the same user is
        // another key, opening nothing old.
        ring.destroy("toyco", "mia").await.unwrap();
        ring.destroy("toyco", "mia").await.unwrap();
        assert!(ring.key("toyco", "mia", mia_id).await.unwrap().is_none());
        // Gone from the file for good: its bytes are nowhere in it.
        let file = std::fs::read(d.join(KEYS_FILE)).unwrap();
        assert!(!file.windows(stored.len()).any(|w| w == stored.as_slice()));
        assert!(
            decode(&file)
                .unwrap()
                .contains_key(&("toyco".to_string(), "leo".to_string()))
        );
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
