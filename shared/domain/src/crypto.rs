//! Field-level envelope encryption (issue 16): AES-256-GCM
//! through aws-lc-rs, a random 96-bit nonce per value, and associated data
//! binding each ciphertext to its owner, conversation, item and field, so
//! that a ciphertext moved to another item or field fails to open (and is
//! reported as corrupt, never returned).
//!
//! The keys: one data key per (owner, user) (the `KeyRing` port),
//! wrapped by KMS or a local key-wrapping key; what is sealed where is in
//! the `sealing` module.
//!
//! A sealed value is `0x01 ‖ nonce (12) ‖ ciphertext ‖ tag (16)`: 29 bytes
//! more than the plaintext, stored as binary.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// The format byte of a sealed value.
const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
/// What sealing adds to a value.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Too short to be a sealed value.
    #[error("the ciphertext is truncated")]
    Truncated,
    /// A format this code does not know.
    #[error("the ciphertext has an unknown format {0}")]
    UnknownFormat(u8),
    /// The tag does not match: another key, another place, or altered bytes.
    #[error("the ciphertext is corrupt or belongs elsewhere")]
    Corrupt,
    /// Not 32 bytes.
    #[error("a data key must be 32 bytes")]
    BadKey,
    /// The system's random source failed.
    #[error("no randomness available")]
    NoRandomness,
}

/// Where a value lives: what a ciphertext is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a> {
    pub owner: &'a str,
    pub conversation: &'a str,
    /// The message id, or a name for a conversation-level value ("title").
    pub item: &'a str,
    /// The field ("content", "toolCalls", "metadata", "preview", …).
    pub field: &'a str,
}

impl Place<'_> {
    /// The associated data: each part length-prefixed, so that no two
    /// places share a byte string ("a", "bc" vs "ab", "c").
    fn aad(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"convo/v1");
        for part in [self.owner, self.conversation, self.item, self.field] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }
}

/// A 256-bit AES-GCM key (a data key, or the local key-wrapping key).
pub struct DataKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(…)")
    }
}

impl DataKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::BadKey);
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| CryptoError::BadKey)?;
        Ok(DataKey {
            key: LessSafeKey::new(unbound),
        })
    }

    /// A new random key, and its bytes (to be wrapped and stored).
    pub fn generate() -> Result<(Self, [u8; 32]), CryptoError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| CryptoError::NoRandomness)?;
        Ok((Self::from_bytes(&bytes)?, bytes))
    }

    /// Seals `plaintext` for `place` under a fresh random nonce.
    pub fn seal(&self, place: &Place<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CryptoError::NoRandomness)?;
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(place.aad()), &mut body)
            .map_err(|_| CryptoError::Corrupt)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a value sealed for `place`; anything else is a typed error.
    pub fn open(&self, place: &Place<'_>, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (&version, rest) = sealed.split_first().ok_or(CryptoError::Truncated)?;
        if version != VERSION {
            return Err(CryptoError::UnknownFormat(version));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Truncated);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Truncated)?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(place.aad()), &mut body)
            .map_err(|_| CryptoError::Corrupt)?;
        Ok(plain.to_vec())
    }
}

/// Unwrapped data keys kept in memory: bounded in number and in age, so a
/// warm function makes no key-service call per append, and a key destroyed
/// elsewhere is forgotten here within [`KeyCache::ttl`].
type CachedKeys = std::collections::HashMap<(String, String, u64), (std::time::Instant, Arc<DataKey>)>;

pub struct KeyCache {
    entries: std::sync::Mutex<CachedKeys>,
    capacity: usize,
    ttl: std::time::Duration,
}

use std::sync::Arc;

impl KeyCache {
    /// At most 10,000 keys, for at most 15 minutes each.
    pub const CAPACITY: usize = 10_000;
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

    pub fn new(capacity: usize, ttl: std::time::Duration) -> Self {
        Self {
            entries: Default::default(),
            capacity,
            ttl,
        }
    }

    pub fn ttl(&self) -> std::time::Duration {
        self.ttl
    }

    pub fn get(&self, owner: &str, user: &str, id: u64) -> Option<Arc<DataKey>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&(owner.to_string(), user.to_string(), id))
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, k)| k.clone())
    }

    pub fn put(&self, owner: &str, user: &str, id: u64, key: Arc<DataKey>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                // Still full of fresh keys: start over (bounded, not
                // precise; a miss costs one unwrap).
                entries.clear();
            }
        }
        entries.insert(
            (owner.to_string(), user.to_string(), id),
            (std::time::Instant::now(), key),
        );
    }

    /// Forgets every key of (owner, user).
    pub fn forget(&self, owner: &str, user: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|(o, u, _), _| o != owner || u != user);
    }
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new(Self::CAPACITY, Self::TTL)
    }
}

/// A random key id.
pub fn new_key_id() -> Result<u64, CryptoError> {
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CryptoError::NoRandomness)?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn place<'a>(item: &'a str, field: &'a str) -> Place<'a> {
        Place {
            owner: "toyco",
            conversation: "01JD8X4T2W6Q1M0C8H5K3R7B2D",
            item,
            field,
        }
    }

    #[test]
    fn a_value_opens_where_it_was_sealed_and_nowhere_else() {
        let (key, _) = DataKey::generate().unwrap();
        let here = place("m1", "content");
        let sealed = key.seal(&here, "I want to sleep forever".as_bytes()).unwrap();
        assert_eq!(sealed.len(), 23 + OVERHEAD);
        assert_eq!(key.open(&here, &sealed).unwrap(), b"I want to sleep forever");
        // Swapped into another message, another field, another
        // conversation or owner: corrupt, never returned.
        for elsewhere in [
            place("m2", "content"),
            place("m1", "metadata"),
            Place {
                conversation: "other",
                ..here
            },
            Place { owner: "other", ..here },
        ] {
            assert_eq!(key.open(&elsewhere, &sealed), Err(CryptoError::Corrupt));
        }
        // Parts are length-prefixed: shifting a boundary changes the place.
        let a = Place {
            item: "ab",
            field: "c",
            ..here
        };
        let b = Place {
            item: "a",
            field: "bc",
            ..here
        };
        assert_eq!(key.open(&b, &key.seal(&a, b"x").unwrap()), Err(CryptoError::Corrupt));
        // Another key: corrupt.
        let (other, _) = DataKey::generate().unwrap();
        assert_eq!(other.open(&here, &sealed), Err(CryptoError::Corrupt));
        // Two seals of one value differ (a fresh nonce each).
        assert_ne!(key.seal(&here, b"same").unwrap(), key.seal(&here, b"same").unwrap());
    }

    #[test]
    fn truncated_altered_or_unknown_values_are_typed_errors() {
        let (key, bytes) = DataKey::generate().unwrap();
        let here = place("m1", "content");
        let sealed = key.seal(&here, b"hello").unwrap();
        assert_eq!(key.open(&here, &[]), Err(CryptoError::Truncated));
        for n in 1..OVERHEAD {
            assert_eq!(key.open(&here, &sealed[..n]), Err(CryptoError::Truncated), "{n} bytes");
        }
        // Cut inside the ciphertext: the tag no longer matches.
        assert_eq!(key.open(&here, &sealed[..sealed.len() - 1]), Err(CryptoError::Corrupt));
        let mut flipped = sealed.clone();
        flipped[OVERHEAD - 3] ^= 1;
        assert_eq!(key.open(&here, &flipped), Err(CryptoError::Corrupt));
        let mut unknown = sealed.clone();
        unknown[0] = 9;
        assert_eq!(key.open(&here, &unknown), Err(CryptoError::UnknownFormat(9)));
        // The same key from its bytes opens it; a short key is refused.
        assert_eq!(
            DataKey::from_bytes(&bytes).unwrap().open(&here, &sealed).unwrap(),
            b"hello"
        );
        assert_eq!(DataKey::from_bytes(&bytes[..16]).unwrap_err(), CryptoError::BadKey);
        // The empty value seals too.
        assert_eq!(key.open(&here, &key.seal(&here, b"").unwrap()).unwrap(), b"");
    }

    proptest! {
        #[test]
        fn any_value_round_trips_and_any_other_bytes_fail_typed(
            value in proptest::collection::vec(any::<u8>(), 0..512),
            junk in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let (key, _) = DataKey::generate().unwrap();
            let here = place("m", "content");
            let sealed = key.seal(&here, &value).unwrap();
            prop_assert_eq!(key.open(&here, &sealed).unwrap(), value);
            // Random bytes never open (and never panic).
            prop_assert!(key.open(&here, &junk).is_err());
        }
    }
}
