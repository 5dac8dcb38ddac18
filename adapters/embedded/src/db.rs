use std::path::Path;
use std::sync::Arc;

use redb::Database;
use redb::backends::InMemoryBackend;

/// Opens (creating if needed) the database file `convo.redb` under
/// `data_dir`, or an in-memory database when `data_dir` is `None`.
pub fn open_database(data_dir: Option<&Path>) -> Result<Arc<Database>, String> {
    let db = match data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let path = dir.join("convo.redb");
            Database::create(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?
        }
        None => Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .map_err(|e| format!("cannot create in-memory database: {e}"))?,
    };
    Ok(Arc::new(db))
}

/// Separates the parts of composite keys. Ids never contain control
/// characters (the schema refuses them), so keys cannot collide.
pub const SEP: char = '\u{1f}';

pub fn key(parts: &[&str]) -> String {
    parts.join(&SEP.to_string())
}

/// Fixed-width decimal, so that byte order is numeric order.
pub fn num(n: u64) -> String {
    format!("{n:020}")
}

/// Milliseconds since the epoch, shifted so negative times still sort.
pub fn millis(t: chrono::DateTime<chrono::Utc>) -> String {
    num((t.timestamp_millis() as i128 + (1i128 << 62)) as u64)
}
