//! The webhooks' signing secret (`whsec_<base64>`).

use std::path::Path;

use base64::Engine;

const SECRET_FILE: &str = "webhook-secret";
const SECRET_PREFIX: &str = "whsec_";

/// The signing key: `CONVO_WEBHOOK_SECRET`, else the one kept in the data
/// directory, else a new one kept there (mode 0600). Answers the key and
/// where it came from.
pub fn load_or_create_secret(data_dir: &Path) -> Result<(Vec<u8>, String), String> {
    let decode = |raw: &str, from: &str| -> Result<Vec<u8>, String> {
        let b64 = raw
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| format!("the webhook secret ({from}) must be whsec_<base64>"))?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| format!("the webhook secret ({from}) is not whsec_<base64>"))?;
        if key.len() < 24 {
            return Err(format!("the webhook secret ({from}) must hold at least 24 bytes"));
        }
        Ok(key)
    };
    if let Ok(s) = std::env::var("CONVO_WEBHOOK_SECRET")
        && !s.trim().is_empty()
    {
        return Ok((decode(&s, "CONVO_WEBHOOK_SECRET")?, "CONVO_WEBHOOK_SECRET".into()));
    }
    let path = data_dir.join(SECRET_FILE);
    if let Ok(s) = std::fs::read_to_string(&path)
        && !s.trim().is_empty()
    {
        return Ok((decode(&s, &path.display().to_string())?, path.display().to_string()));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let key: [u8; 32] = rand::random();
    let secret = format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    crate::auth::write_private(&path, &secret).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((key.to_vec(), path.display().to_string()))
}
