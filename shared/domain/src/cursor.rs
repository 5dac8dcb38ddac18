//! Opaque page cursors, shared by every store adapter.
//!
//! A cursor names the scope it was issued for (a conversation, an owner's
//! user) and a position inside it. A cursor that does not decode, or that
//! was issued for another scope, is refused: a client can never page into
//! data it did not ask for by editing one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::ports::StoreError;

#[derive(Serialize, Deserialize)]
struct Wire {
    s: String,
    p: String,
}

pub fn encode(scope: &str, position: &str) -> String {
    let json = serde_json::to_vec(&Wire {
        s: scope.to_string(),
        p: position.to_string(),
    })
    .unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Returns the position of a cursor issued for `scope`.
pub fn decode(scope: &str, cursor: &str) -> Result<String, StoreError> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| StoreError::InvalidCursor)?;
    let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| StoreError::InvalidCursor)?;
    if wire.s != scope {
        return Err(StoreError::InvalidCursor);
    }
    Ok(wire.p)
}

/// The index a cursor from `encode(scope, index)` names, if one is given.
pub fn decode_index(scope: &str, cursor: Option<&str>) -> Result<Option<u64>, StoreError> {
    cursor
        .map(|c| decode(scope, c)?.parse().map_err(|_| StoreError::InvalidCursor))
        .transpose()
}

/// A cursor into a conversation's messages: the first index of the chunk
/// to read from and the index of the next message to return.
pub fn encode_at(scope: &str, chunk: u64, index: u64) -> String {
    encode(scope, &format!("{chunk}.{index}"))
}

/// The `(chunk, index)` of a cursor from [`encode_at`]; the index is never
/// before its chunk.
pub fn decode_at(scope: &str, cursor: &str) -> Result<(u64, u64), StoreError> {
    let position = decode(scope, cursor)?;
    let (chunk, index) = position.split_once('.').ok_or(StoreError::InvalidCursor)?;
    let chunk: u64 = chunk.parse().map_err(|_| StoreError::InvalidCursor)?;
    let index: u64 = index.parse().map_err(|_| StoreError::InvalidCursor)?;
    if index < chunk {
        return Err(StoreError::InvalidCursor);
    }
    Ok((chunk, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_its_scope_only() {
        let c = encode("C#1\u{1f}x", "42");
        assert_eq!(decode("C#1\u{1f}x", &c).unwrap(), "42");
        let c = encode("C#1", "42");
        assert_eq!(decode("C#1", &c).unwrap(), "42");
        assert_eq!(decode("C#2", &c), Err(StoreError::InvalidCursor));
        assert_eq!(decode("C#1", "not a cursor!"), Err(StoreError::InvalidCursor));
        assert_eq!(decode("C#1", &c[..c.len() - 2]), Err(StoreError::InvalidCursor));
    }

    #[test]
    fn message_positions_round_trip_and_stay_inside_their_chunk() {
        let c = encode_at("M#1", 40, 43);
        assert_eq!(decode_at("M#1", &c), Ok((40, 43)));
        for bad in ["43.40", "x.1", "1", "1.2.3", "-1.2"] {
            assert_eq!(
                decode_at("M#1", &encode("M#1", bad)),
                Err(StoreError::InvalidCursor),
                "{bad}"
            );
        }
    }

    proptest::proptest! {
        /// No string decodes into a panic, and every cursor decodes back
        /// to its position in its own scope only.
        #[test]
        fn any_cursor_decodes_or_is_refused(raw in "\\PC{0,60}", scope in "\\PC{0,20}", position in "\\PC{0,20}") {
            let _ = decode(&scope, &raw);
            let _ = decode_at(&scope, &raw);
            let c = encode(&scope, &position);
            proptest::prop_assert_eq!(decode(&scope, &c), Ok(position.clone()));
            let other = format!("{scope}x");
            proptest::prop_assert_eq!(decode(&other, &c), Err(StoreError::InvalidCursor));
        }
    }
}
