//! Local JWT auth: HS256 tokens signed with a local secret, verified here
//! exactly where API Gateway's JWT authorizer would verify them. The claims
//! are handed to the handlers in the authorizer context of payload 2.0.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "convo-local";
pub const AUDIENCE: &str = "convo";
const SECRET_FILE: &str = "jwt-secret";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// The secret from `CONVO_JWT_SECRET`, else the one stored in the data
/// directory, else a new random one stored there for the next run.
pub fn load_or_create_secret(data_dir: &Path) -> Result<(String, &'static str), String> {
    if let Ok(s) = std::env::var("CONVO_JWT_SECRET")
        && !s.is_empty()
    {
        return Ok((s, "CONVO_JWT_SECRET"));
    }
    let path = data_dir.join(SECRET_FILE);
    if let Ok(s) = std::fs::read_to_string(&path)
        && !s.trim().is_empty()
    {
        return Ok((s.trim().to_string(), "data directory"));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    write_private(&path, &secret).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((secret, "generated"))
}

pub(crate) fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(secret.as_bytes())
    }
    #[cfg(not(unix))]
    std::fs::write(path, secret)
}

pub fn mint(secret: &str, sub: &str, ttl_seconds: i64) -> Result<String, String> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: sub.to_string(),
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        iat: now,
        exp: now + ttl_seconds,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// Tokens of an OpenID Connect issuer, accepted besides the local ones.
    pub issuer: Option<std::sync::Arc<crate::oidc::IssuerVerifier>>,
}

impl Verifier {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = 5;
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            issuer: None,
        }
    }

    /// Verifies `Authorization: Bearer <jwt>` and returns the claims as API
    /// Gateway passes them (strings), or why the token was refused.
    pub fn verify(&self, authorization: Option<&str>) -> Result<HashMap<String, String>, &'static str> {
        let header = authorization.ok_or("missing Authorization header")?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or("Authorization must be 'Bearer <token>'")?;
        let token = token.trim();
        let header = jsonwebtoken::decode_header(token).map_err(|_| "the token is invalid")?;
        let decoded = if header.alg == Algorithm::HS256 {
            jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
                .map(|d| d.claims)
                .map_err(|e| match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired",
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => "the token's signature is invalid",
                    _ => "the token is invalid",
                })?
        } else if let Some(issuer) = &self.issuer {
            issuer.verify(token, &header)?
        } else {
            return Err(
                "the token is not signed by this server (start it with --jwt-issuer to accept another issuer's)",
            );
        };
        let mut claims = HashMap::new();
        if let serde_json::Value::Object(map) = decoded {
            for (k, v) in map {
                let s = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                claims.insert(k, s);
            }
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_its_own_tokens_only() {
        let v = Verifier::new("s3cret");
        let t = mint("s3cret", "alice", 60).unwrap();
        let claims = v.verify(Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!(claims["sub"], "alice");
        let other = mint("other", "alice", 60).unwrap();
        assert_eq!(
            v.verify(Some(&format!("Bearer {other}"))),
            Err("the token's signature is invalid")
        );
        let expired = mint("s3cret", "alice", -60).unwrap();
        assert_eq!(
            v.verify(Some(&format!("Bearer {expired}"))),
            Err("the token has expired")
        );
        assert!(v.verify(None).is_err());
        assert!(v.verify(Some(&t)).is_err());
    }
}
