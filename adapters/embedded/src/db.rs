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

/// Compacts `convo.redb` under `data_dir` (when it exists): live pages move
/// to the front of the file and the file is cut after them, so that what
/// was erased or consumed (an erased user's records and index keys, queue
/// bodies) no longer lies in freed pages of the file. Needs the only handle
/// of the database: called before it is opened and after the server stops.
/// Returns whether the file changed.
pub fn compact_database(data_dir: &Path) -> Result<bool, String> {
    let path = data_dir.join("convo.redb");
    if !path.exists() {
        return Ok(false);
    }
    let mut db = Database::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut changed = false;
    // Each pass moves what it can; a bound keeps a stubborn file finite.
    for _ in 0..64 {
        if !db
            .compact()
            .map_err(|e| format!("cannot compact {}: {e}", path.display()))?
        {
            break;
        }
        changed = true;
    }
    Ok(changed)
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
