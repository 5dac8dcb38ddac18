//! Tokens from an OpenID Connect issuer, verified by the rules of the
//! deployed API's JWT authorizer (API Gateway HTTP APIs), so that a token
//! convo-local takes is one the deployed API takes:
//!
//! - the issuer and its `jwks_uri` are `https` (plain `http` only on a
//!   loopback host, for tests);
//! - the signature is RSA (`RS256`, `RS384`, `RS512`) by the key of the
//!   issuer's key set that the header's `kid` names; a header with `crit`
//!   is refused;
//! - `iss` is a string equal to the issuer;
//! - `aud` (a string or a list) holds one of the audiences; `client_id` is
//!   read only when there is no `aud` (a wrong `aud` is not saved by a
//!   right `client_id`);
//! - `exp` is after now, and `nbf` and `iat`, when present, are not after
//!   now (no leeway).
//!
//! `serve --jwt-issuer … --jwt-audience …` turns this on (the template's
//! `JwtIssuer`/`JwtAudience`); the console then signs in through the
//! issuer.

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

/// Signature algorithms accepted from an issuer: RSA, as API Gateway's JWT
/// authorizer (a shared secret is never taken from a key set).
const ACCEPTED: &[Algorithm] = &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];

/// An issuer or key-set URL must be https, except on a loopback host.
pub fn secure_url(what: &str, url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{what} {url:?} is not a URL: {e}"))?;
    let loopback = uri.host().is_some_and(|h| {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if loopback => Ok(()),
        _ => Err(format!(
            "{what} must be an https URL (plain http only on a loopback host), not {url:?}"
        )),
    }
}

impl IssuerVerifier {
    /// Reads the issuer's discovery document and keys.
    pub async fn discover(issuer: &str, audiences: Vec<String>) -> Result<(Self, Discovery), String> {
        let issuer = issuer.trim_end_matches('/').to_string();
        if audiences.iter().all(|a| a.trim().is_empty()) {
            return Err("--jwt-audience is required with --jwt-issuer".into());
        }
        secure_url("--jwt-issuer", &issuer)?;
        let discovery: Discovery = get_json(&format!("{issuer}/.well-known/openid-configuration")).await?;
        if discovery.issuer.trim_end_matches('/') != issuer {
            return Err(format!(
                "the discovery document of {issuer} names another issuer, {}",
                discovery.issuer
            ));
        }
        secure_url("the issuer's jwks_uri", &discovery.jwks_uri)?;
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
        if raw_header(token).is_some_and(|h| h.contains_key("crit")) {
            return Err("the token's header names critical extensions (crit)");
        }
        let kid = header.kid.as_deref().ok_or("the token names no key (kid)")?;
        let key = {
            let keys = self.keys.read().map_err(|_| "the issuer's keys are unavailable")?;
            let jwk = keys.find(kid).ok_or("the token's key is not one of the issuer's")?;
            DecodingKey::from_jwk(jwk).map_err(|_| "the issuer's key cannot be used")?
        };
        let mut validation = Validation::new(header.alg);
        // `iss`, `aud`/`client_id` and `iat`: below, as API Gateway reads them.
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired",
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
            jsonwebtoken::errors::ErrorKind::InvalidSignature => "the token's signature is invalid",
            _ => "the token is invalid",
        })?;
        let claims = data.claims;
        if claims.get("iss").and_then(|v| v.as_str()) != Some(self.issuer.as_str()) {
            return Err("the token is from another issuer");
        }
        let now = chrono::Utc::now().timestamp();
        match claims.get("iat") {
            None => {}
            Some(v) if v.as_i64().is_some_and(|iat| iat <= now) => {}
            Some(_) => return Err("the token's iat is in the future or not a time"),
        }
        let accepted = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => self.audiences.iter().any(|a| a == s),
            serde_json::Value::Array(list) => list
                .iter()
                .filter_map(|v| v.as_str())
                .any(|s| self.audiences.iter().any(|a| a == s)),
            _ => false,
        };
        // `client_id` counts only when there is no `aud`.
        let audience_ok = match (claims.get("aud"), claims.get("client_id")) {
            (Some(aud), _) => accepted(aud),
            (None, Some(client_id)) => accepted(client_id),
            (None, None) => false,
        };
        if !audience_ok {
            return Err("the token is for another audience");
        }
        Ok(claims)
    }
}

/// The token's header as a JSON object (`None` when it does not decode;
/// the signature check then refuses the token).
fn raw_header(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let first = token.split('.').next()?;
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, first).ok()?;
    serde_json::from_slice(&bytes).ok()
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

    /// Each rule of API Gateway's JWT authorizer, one token that breaks it.
    #[test]
    fn refuses_what_api_gateway_refuses() {
        let (v, key) = verifier(&["console"]);
        let now = chrono::Utc::now().timestamp();
        let base = serde_json::json!({"sub": "a", "iss": "https://issuer.example", "aud": "console", "exp": now + 600});
        let with = |extra: serde_json::Value| {
            let mut c = base.clone();
            for (k, val) in extra.as_object().unwrap() {
                c[k] = val.clone();
            }
            c
        };
        let (t, h) = token(
            &key,
            Some("k1"),
            with(serde_json::json!({"iat": now - 5, "nbf": now - 5})),
        );
        assert!(v.verify(&t, &h).is_ok());
        // aud wrong, client_id right: aud decides.
        let (t, h) = token(
            &key,
            Some("k1"),
            with(serde_json::json!({"aud": "other", "client_id": "console"})),
        );
        assert_eq!(v.verify(&t, &h), Err("the token is for another audience"));
        // Neither.
        let mut none = base.clone();
        none.as_object_mut().unwrap().remove("aud");
        let (t, h) = token(&key, Some("k1"), none);
        assert_eq!(v.verify(&t, &h), Err("the token is for another audience"));
        // nbf or iat in the future.
        let (t, h) = token(&key, Some("k1"), with(serde_json::json!({"nbf": now + 30})));
        assert_eq!(v.verify(&t, &h), Err("the token is not valid yet (nbf)"));
        let (t, h) = token(&key, Some("k1"), with(serde_json::json!({"iat": now + 30})));
        assert_eq!(v.verify(&t, &h), Err("the token's iat is in the future or not a time"));
        let (t, h) = token(&key, Some("k1"), with(serde_json::json!({"iat": "yesterday"})));
        assert!(v.verify(&t, &h).is_err());
        // An array iss, even one holding the issuer.
        let (t, h) = token(
            &key,
            Some("k1"),
            with(serde_json::json!({"iss": ["https://issuer.example"]})),
        );
        assert!(v.verify(&t, &h).is_err());
        // ES256 and the other non-RSA algorithms.
        for alg in [
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
            Algorithm::PS256,
            Algorithm::HS256,
        ] {
            let mut h = Header::new(alg);
            h.kid = Some("k1".into());
            assert_eq!(
                v.verify("a.b.c", &h),
                Err("the token's algorithm is not accepted"),
                "{alg:?}"
            );
        }
        // A critical extension this verifier does not know.
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("k1".into());
        let (t, _) = token(&key, Some("k1"), base.clone());
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        parts[0] = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::json!({"alg": "RS256", "kid": "k1", "crit": ["exp"], "exp": 1}).to_string(),
        );
        assert_eq!(
            v.verify(&parts.join("."), &h),
            Err("the token's header names critical extensions (crit)")
        );
    }

    #[test]
    fn the_issuer_and_its_keys_need_https_except_on_loopback() {
        for ok in [
            "https://issuer.example",
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc",
            "http://127.0.0.1:8080",
            "http://localhost:9000/realms/x",
            "http://[::1]:3000",
        ] {
            assert!(secure_url("issuer", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://issuer.example",
            "http://10.0.0.1",
            "ftp://issuer.example",
            "issuer.example",
            "http://localhost.evil.example",
        ] {
            assert!(secure_url("issuer", bad).is_err(), "{bad}");
        }
    }

    const TEST_JWKS: &str = include_str!("../testdata/jwks.json");
    const TEST_KEY: &[u8] = include_bytes!("../testdata/rsa-key.der");
}
