//! Sealed values: what a person wrote or was told, encrypted under their
//! data key (see `convo_domain::sealing`). Stored as raw bytes where the
//! format has them (DynamoDB binary, MessagePack), as base64 in JSON (the
//! queue's command bodies, the embedded store's records).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One sealed value: `0x01 ‖ nonce ‖ ciphertext ‖ tag`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sealed(pub Vec<u8>);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}

/// The sealed fields of one item, by field name.
pub type SealedFields = BTreeMap<String, Sealed>;

impl Serialize for Sealed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&STANDARD.encode(&self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

struct SealedVisitor;

impl<'de> serde::de::Visitor<'de> for SealedVisitor {
    type Value = Sealed;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sealed value (bytes, or base64)")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Sealed, E> {
        STANDARD.decode(v).map(Sealed).map_err(E::custom)
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Sealed, E> {
        Ok(Sealed(v.to_vec()))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Sealed, E> {
        Ok(Sealed(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Sealed, A::Error> {
        let mut out = Vec::new();
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Sealed(out))
    }
}

impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Sealed, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(SealedVisitor)
        } else {
            deserializer.deserialize_bytes(SealedVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_carries_base64_and_reads_it_back() {
        let v = Sealed(vec![1, 0, 255, 7]);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, "\"AQD/Bw==\"");
        assert_eq!(serde_json::from_str::<Sealed>(&json).unwrap(), v);
        assert!(serde_json::from_str::<Sealed>("\"not base64!\"").is_err());
        assert!(serde_json::from_str::<Sealed>("12").is_err());
    }
}
