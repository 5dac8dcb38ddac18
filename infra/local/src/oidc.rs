//! Tokens from an OpenID Connect issuer, verified as the deployed API's JWT
//! authorizer verifies them: the issuer's discovery document names its
//! keys (JWKS), a token must be signed by one of them (by `kid`), carry the
//! issuer as `iss`, one of the audiences as `aud` or `client_id`, and be
//! unexpired. `serve --jwt-issuer … --jwt-audience …` turns this on (the
//! template's `JwtIssuer`/`JwtAudience`); the console then signs in through
//! the issuer.

use std::sync::RwLock;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::Deserialize;

/// What convo reads of `{issuer}/.well-known/openid-configuration`.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

/// Largest document read from the issuer.
const MAX_DOCUMENT: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the keys are fetched again (issuers rotate them).
pub const KEYS_REFRESH: Duration = Duration::from_secs(600);

async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Result<T, String> {
    let client = convo_embedded::net::client().map_err(|e| format!("cannot reach {url}: {e}"))?;
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let req = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(Full::default())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(FETCH_TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("{url} did not answer within {FETCH_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_DOCUMENT);
    let body = tokio::time::timeout(FETCH_TIMEOUT, limited.collect())
        .await
        .map_err(|_| format!("{url} did not send its document within {FETCH_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot read {url}: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("{url} did not answer the expected JSON: {e}"))
}

pub struct IssuerVerifier {
    issuer: String,
    audiences: Vec<String>,
    jwks_uri: String,
    keys: RwLock<JwkSet>,
}

/// Signature algorithms accepted from an issuer (asymmetric only: a shared
/// secret is never taken from a key set).
const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl IssuerVerifier {
    /// Reads the issuer's discovery document and keys.
    pub async fn discover(issuer: &str, audiences: Vec<String>) -> Result<(Self, Discovery), String> {
        let issuer = issuer.trim_end_matches('/').to_string();
        if audiences.iter().all(|a| a.trim().is_empty()) {
            return Err("--jwt-audience is required with --jwt-issuer".into());
        }
        let discovery: Discovery = get_json(&format!("{issuer}/.well-known/openid-configuration")).await?;
        if discovery.issuer.trim_end_matches('/') != issuer {
            return Err(format!(
                "the discovery document of {issuer} names another issuer, {}",
                discovery.issuer
            ));
        }
        let keys: JwkSet = get_json(&discovery.jwks_uri).await?;
        Ok((
            IssuerVerifier {
                issuer: discovery.issuer.clone(),
                audiences: audiences.into_iter().filter(|a| !a.trim().is_empty()).collect(),
                jwks_uri: discovery.jwks_uri.clone(),
                keys: RwLock::new(keys),
            },
            discovery,
        ))
    }

    /// Fetches the keys again; the old ones stay if that fails.
    pub async fn refresh(&self) {
        match get_json::<JwkSet>(&self.jwks_uri).await {
            Ok(keys) => {
                if let Ok(mut k) = self.keys.write() {
                    *k = keys;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not refresh the issuer's keys"),
        }
    }

    pub fn verify(&self, token: &str, header: &Header) -> Result<serde_json::Value, &'static str> {
        if !ACCEPTED.contains(&header.alg) {
            return Err("the token's algorithm is not accepted");
        }
        let kid = header.kid.as_deref().ok_or("the token names no key (kid)")?;
        let key = {
            let keys = self.keys.read().map_err(|_| "the issuer's keys are unavailable")?;
            let jwk = keys.find(kid).ok_or("the token's key is not one of the issuer's")?;
            DecodingKey::from_jwk(jwk).map_err(|_| "the issuer's key cannot be used")?
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        // `aud` or `client_id`, as API Gateway checks: below.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired",
            jsonwebtoken::errors::ErrorKind::InvalidSignature => "the token's signature is invalid",
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => "the token is from another issuer",
            _ => "the token is invalid",
        })?;
        let claims = data.claims;
        let accepted = |v: Option<&serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => self.audiences.iter().any(|a| a == s),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str())
                .any(|s| self.audiences.iter().any(|a| a == s)),
            _ => false,
        };
        if !accepted(claims.get("aud")) && !accepted(claims.get("client_id")) {
            return Err("the token is for another audience");
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An RSA key pair for tests only (testdata/), as a JWK set and as PKCS#1 DER.
    fn verifier(audiences: &[&str]) -> (IssuerVerifier, jsonwebtoken::EncodingKey) {
        let jwks: JwkSet = serde_json::from_str(TEST_JWKS).unwrap();
        (
            IssuerVerifier {
                issuer: "https://issuer.example".into(),
                audiences: audiences.iter().map(|s| s.to_string()).collect(),
                jwks_uri: "https://issuer.example/jwks".into(),
                keys: RwLock::new(jwks),
            },
            jsonwebtoken::EncodingKey::from_rsa_der(TEST_KEY),
        )
    }

    fn token(key: &jsonwebtoken::EncodingKey, kid: Option<&str>, claims: serde_json::Value) -> (String, Header) {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_string);
        let t = jsonwebtoken::encode(&header, &claims, key).unwrap();
        (t, header)
    }

    #[test]
    fn accepts_aud_or_client_id_and_refuses_the_rest() {
        let (v, key) = verifier(&["console"]);
        let exp = chrono::Utc::now().timestamp() + 600;
        let good = serde_json::json!({"sub": "alice", "iss": "https://issuer.example", "aud": "console", "exp": exp});
        let (t, h) = token(&key, Some("k1"), good.clone());
        assert_eq!(v.verify(&t, &h).unwrap()["sub"], "alice");
        let cognito =
            serde_json::json!({"sub": "bob", "iss": "https://issuer.example", "client_id": "console", "exp": exp});
        let (t, h) = token(&key, Some("k1"), cognito);
        assert_eq!(v.verify(&t, &h).unwrap()["sub"], "bob");
        let listed =
            serde_json::json!({"sub": "c", "iss": "https://issuer.example", "aud": ["x", "console"], "exp": exp});
        let (t, h) = token(&key, Some("k1"), listed);
        assert!(v.verify(&t, &h).is_ok());

        let other_aud = serde_json::json!({"sub": "a", "iss": "https://issuer.example", "aud": "other", "exp": exp});
        let (t, h) = token(&key, Some("k1"), other_aud);
        assert_eq!(v.verify(&t, &h), Err("the token is for another audience"));
        let other_iss = serde_json::json!({"sub": "a", "iss": "https://evil.example", "aud": "console", "exp": exp});
        let (t, h) = token(&key, Some("k1"), other_iss);
        assert_eq!(v.verify(&t, &h), Err("the token is from another issuer"));
        let expired =
            serde_json::json!({"sub": "a", "iss": "https://issuer.example", "aud": "console", "exp": exp - 3600});
        let (t, h) = token(&key, Some("k1"), expired);
        assert_eq!(v.verify(&t, &h), Err("the token has expired"));
        let (t, h) = token(&key, Some("k2"), good.clone());
        assert_eq!(v.verify(&t, &h), Err("the token's key is not one of the issuer's"));
        let (t, h) = token(&key, None, good.clone());
        assert_eq!(v.verify(&t, &h), Err("the token names no key (kid)"));
        // A token signed with the key set's public key as an HMAC secret
        // (the classic algorithm confusion) is refused by its algorithm.
        let hs = Header::new(Algorithm::HS256);
        assert_eq!(v.verify("a.b.c", &hs), Err("the token's algorithm is not accepted"));
        // A tampered payload fails the signature.
        let (t, h) = token(&key, Some("k1"), good);
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::json!({"sub": "mallory", "iss": "https://issuer.example", "aud": "console", "exp": exp})
                .to_string(),
        );
        parts[1] = &forged;
        assert_eq!(v.verify(&parts.join("."), &h), Err("the token's signature is invalid"));
    }

    const TEST_JWKS: &str = include_str!("../testdata/jwks.json");
    const TEST_KEY: &[u8] = include_bytes!("../testdata/rsa-key.der");
}
