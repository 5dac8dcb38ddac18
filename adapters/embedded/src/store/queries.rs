//! Reads through the indexes: a page of a listing, the records before a
//! point in time (the sweeper's and the expiry's).

use super::*;

impl EmbeddedStore {
    /// One page, newest first, of an index table whose keys start with
    /// `prefix` and end in the conversation id, and the cursor after it
    /// (bound to `prefix`: a cursor from elsewhere is refused).
    pub(super) async fn index_page(
        &self,
        index: Table,
        prefix: String,
        cursor_in: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        let scope = format!("{}{SEP}{prefix}", index.name());
        let upper = match cursor_in {
            Some(c) => {
                let pos = cursor::decode(&scope, c)?;
                if !pos.starts_with(&prefix) {
                    return Err(StoreError::InvalidCursor);
                }
                pos
            }
            None => format!("{prefix}\u{7f}"),
        };
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(index).map_err(unavailable)?;
            let convs = txn.open_table(CONVERSATIONS).map_err(unavailable)?;
            let chunks = txn.open_table(CHUNKS).map_err(unavailable)?;
            let mut items = Vec::new();
            let mut last_key = None;
            let mut more = false;
            for entry in index.range(prefix.as_str()..upper.as_str()).map_err(unavailable)?.rev() {
                let (k, _) = entry.map_err(unavailable)?;
                if items.len() == limit {
                    more = true;
                    break;
                }
                let k = k.value().to_string();
                let id = k.rsplit(SEP).next().unwrap_or_default().to_string();
                if let Some(record) = load_record(&convs, &chunks, &id)? {
                    items.push(record);
                }
                last_key = Some(k);
            }
            let next_cursor = if more {
                last_key.map(|k| cursor::encode(&scope, &k))
            } else {
                None
            };
            Ok(Page { items, next_cursor })
        })
        .await
    }

    /// The conversations of a time-ordered index table (keys `<time>␟<id>`)
    /// below `hi`, oldest first, at most `limit`.
    /// The records of an index's entries below `hi` (and after `after`),
    /// at most `limit` entries examined; the last key examined when there
    /// were `limit` of them.
    pub(super) async fn records_before(
        &self,
        index: Table,
        after: Option<String>,
        hi: String,
        limit: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        use std::ops::Bound;
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let index = txn.open_table(index).map_err(unavailable)?;
            let convs = txn.open_table(CONVERSATIONS).map_err(unavailable)?;
            let chunks = txn.open_table(CHUNKS).map_err(unavailable)?;
            let mut items = Vec::new();
            let mut examined = 0;
            let mut last = None;
            let lo = match after.as_deref() {
                Some(a) if a < hi.as_str() => Bound::Excluded(a),
                Some(_) => {
                    return Ok(Page {
                        items: Vec::new(),
                        next_cursor: None,
                    });
                }
                None => Bound::Unbounded,
            };
            for entry in index
                .range::<&str>((lo, Bound::Excluded(hi.as_str())))
                .map_err(unavailable)?
            {
                if examined == limit {
                    break;
                }
                examined += 1;
                let (k, _) = entry.map_err(unavailable)?;
                let k = k.value().to_string();
                let id = k.rsplit(SEP).next().unwrap_or_default();
                if let Some(record) = load_record(&convs, &chunks, id)? {
                    items.push(record);
                }
                last = Some(k);
            }
            Ok(Page {
                items,
                next_cursor: last.filter(|_| examined == limit),
            })
        })
        .await
    }
}
