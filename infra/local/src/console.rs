//! The console: the web page under `console/`, embedded in the binary and
//! served at `/` and `/console/…` beside the API, with its `config.json`
//! and a content security policy that allows only this origin, the API and
//! the identity provider's token endpoint. `convo-local console --out DIR`
//! writes the same files for a static host (the template's S3 bucket behind
//! CloudFront).

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use convo_http::ApiError;
use convo_schema::ErrorCode;
use serde::{Deserialize, Serialize};

/// One file of the page.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

pub const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../../console/index.html"),
};

/// Every file but `config.json`, which is made per deployment.
pub const ASSETS: &[Asset] = &[
    INDEX,
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../console/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../console/style.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../../console/icon.svg"),
    },
];

/// What the page reads from `/console/config.json`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleConfig {
    /// The API's base URL; empty when the API is on the page's own origin.
    pub api_url: String,
    /// One-click sign-in as any owner (`serve --dev-sign-in`).
    pub dev_sign_in: bool,
    /// Sign-in through an OpenID Connect provider (code flow with PKCE).
    pub oidc: Option<Oidc>,
    /// The command that mints a token, shown beside the token field.
    pub token_hint: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Oidc {
    pub authorize_url: String,
    pub token_url: String,
    pub client_id: String,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logout_url: Option<String>,
    /// Which token of the answer is the API's bearer token: `access_token`
    /// (Cognito's carry `client_id`, which the authorizer accepts) or
    /// `id_token` (always a JWT whose `aud` is the client).
    pub token_field: String,
}

impl Oidc {
    /// A Cognito user pool's hosted UI at `domain`
    /// (`https://<prefix>.auth.<region>.amazoncognito.com`).
    pub fn cognito(domain: &str, client_id: &str) -> Self {
        let base = domain.trim_end_matches('/');
        Oidc {
            authorize_url: format!("{base}/oauth2/authorize"),
            token_url: format!("{base}/oauth2/token"),
            client_id: client_id.to_string(),
            scope: "openid email".into(),
            logout_url: Some(format!("{base}/logout")),
            token_field: "access_token".into(),
        }
    }
}

/// `scheme://host[:port]` of a URL, for the CSP.
fn origin(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    match u.origin() {
        url::Origin::Tuple(..) => Some(u.origin().ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

impl ConsoleConfig {
    /// The content security policy: scripts, styles and images from this
    /// origin only, requests to this origin, the API and the token endpoint,
    /// no frames, no plugins, no forms posted anywhere.
    pub fn csp(&self) -> String {
        let mut connect = vec!["'self'".to_string()];
        for url in [
            Some(self.api_url.as_str()),
            self.oidc.as_ref().map(|o| o.token_url.as_str()),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(o) = origin(url)
                && !connect.contains(&o)
            {
                connect.push(o);
            }
        }
        format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src {}; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            connect.join(" ")
        )
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.api_url.is_empty() {
            check_url("--api-url", &self.api_url)?;
        }
        if let Some(o) = &self.oidc {
            check_url("the authorize URL", &o.authorize_url)?;
            check_url("the token URL", &o.token_url)?;
            if let Some(l) = &o.logout_url {
                check_url("the logout URL", l)?;
            }
            convo_schema::validate::id("client id", &o.client_id).map_err(|e| e.message)?;
            if !matches!(o.token_field.as_str(), "access_token" | "id_token") {
                return Err(format!(
                    "the token field must be access_token or id_token, not {:?}",
                    o.token_field
                ));
            }
        }
        Ok(())
    }
}

fn check_url(what: &str, raw: &str) -> Result<(), String> {
    let u = url::Url::parse(raw).map_err(|e| format!("{what}: {raw:?} is not a URL ({e})"))?;
    let local = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match u.scheme() {
        "https" => Ok(()),
        "http" if local => Ok(()),
        _ => Err(format!("{what}: {raw:?} must be https (http only on loopback)")),
    }
}

/// The security headers every console answer carries.
fn headers(content_type: &'static str, csp: &str, cache: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h
}

struct Console {
    config: ConsoleConfig,
    config_json: String,
    csp: String,
    /// The JWT secret, when `--dev-sign-in` mints tokens.
    dev_secret: Option<String>,
}

/// The console's routes, to merge in front of the API gateway.
pub fn router(config: ConsoleConfig, dev_secret: Option<String>) -> axum::Router {
    let csp = config.csp();
    let config_json = serde_json::to_string(&config).unwrap_or_else(|_| "{}".into());
    let state = Arc::new(Console {
        config,
        config_json,
        csp,
        dev_secret,
    });
    axum::Router::new()
        .route("/", get(index).fallback(not_allowed))
        .route("/console", get(index).fallback(not_allowed))
        .route("/console/", get(index).fallback(not_allowed))
        .route("/console/{file}", get(file).fallback(not_allowed))
        .route("/console/dev-token", post(dev_token).fallback(not_found))
        .with_state(state)
}

/// Another method on a page: the API's 405, with `Allow`.
async fn not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let mut resp = gateway_answer(ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}; allowed: GET, HEAD", uri.path()),
    ));
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    resp
}

async fn not_found() -> Response {
    gateway_answer(ApiError::not_found_route())
}

async fn index(State(c): State<Arc<Console>>) -> Response {
    (headers(INDEX.content_type, &c.csp, "no-cache"), INDEX.body).into_response()
}

async fn file(State(c): State<Arc<Console>>, UrlPath(name): UrlPath<String>) -> Response {
    if name == "config.json" {
        return (headers("application/json", &c.csp, "no-store"), c.config_json.clone()).into_response();
    }
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => (headers(a.content_type, &c.csp, "no-cache"), a.body).into_response(),
        None => gateway_answer(ApiError::not_found_route()),
    }
}

/// An error as the API answers it (the gateway's own conversion).
fn gateway_answer(e: ApiError) -> Response {
    crate::gateway::to_axum(e.into_response(Some(ulid::Ulid::new().to_string())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevTokenRequest {
    sub: String,
}

/// Lifetime of a token minted by the development sign-in.
const DEV_TOKEN_TTL: i64 = 8 * 3600;

/// `POST /console/dev-token {"sub": "alice"}` (only with `--dev-sign-in`).
/// JSON only: a cross-site form cannot send it, and a cross-site script
/// would need a CORS preflight this server never grants.
async fn dev_token(State(c): State<Arc<Console>>, headers_in: HeaderMap, body: axum::body::Bytes) -> Response {
    let Some(secret) = c.dev_secret.as_deref().filter(|_| c.config.dev_sign_in) else {
        return not_found().await;
    };
    // DNS rebinding: a page of another site whose name now resolves to
    // this machine would send its own name in Host (and Origin), and could
    // read the answer. Only loopback names are let through.
    if let Err(why) = loopback_request(&headers_in) {
        tracing::warn!(%why, "development sign-in refused");
        return gateway_answer(ApiError::new(ErrorCode::Forbidden, why));
    }
    let json = headers_in
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return gateway_answer(ApiError::new(
            ErrorCode::ValidationFailed,
            "send the owner as JSON (Content-Type: application/json): {\"sub\": \"alice\"}",
        ));
    }
    let req: DevTokenRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => {
            return gateway_answer(ApiError::new(
                ErrorCode::ValidationFailed,
                "the body must be {\"sub\": \"<owner id>\"}",
            ));
        }
    };
    if let Err(e) = convo_schema::validate::id("sub", &req.sub) {
        return gateway_answer(ApiError::new(ErrorCode::ValidationFailed, e.message));
    }
    match crate::auth::mint(secret, &req.sub, DEV_TOKEN_TTL) {
        Ok(token) => {
            tracing::warn!(owner = %req.sub, "development sign-in minted a token");
            (
                StatusCode::OK,
                [(header::CACHE_CONTROL, "no-store")],
                Json(serde_json::json!({"token": token, "owner": req.sub, "expiresIn": DEV_TOKEN_TTL})),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "could not mint a development token");
            gateway_answer(ApiError::new(ErrorCode::Internal, "internal error"))
        }
    }
}

/// Whether a host (with or without a port) names this machine's loopback
/// interface: `localhost`, `127.x.x.x` or `[::1]`.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) => ip,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// The development sign-in answers only a request addressed to a loopback
/// name (`Host`) from a page of a loopback origin (`Origin`, when sent: a
/// browser always sends it on a POST).
fn loopback_request(headers: &HeaderMap) -> Result<(), String> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !is_loopback_host(host) {
        return Err(format!(
            "the development sign-in answers only requests to localhost, 127.0.0.1 or [::1], not to {host:?}"
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let ok = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(is_loopback_host);
        if !ok {
            return Err(format!(
                "the development sign-in answers only pages served from a loopback address, not {origin:?}"
            ));
        }
    }
    Ok(())
}

/// `index.html` with the policy in a `<meta>` element, first in `<head>`
/// (before anything it governs). A static host serves it with a coarser
/// header policy of its own (the template's: any API Gateway and Cognito
/// host of the region, because the header cannot name the stack's own API
/// without a dependency cycle); a browser enforces both, so what is allowed
/// is exactly this policy.
pub fn index_with_policy(csp: &str) -> Result<String, String> {
    let html = std::str::from_utf8(INDEX.body).map_err(|e| e.to_string())?;
    let anchor = "<meta charset=\"utf-8\">";
    if !html.contains(anchor) || csp.contains('"') {
        return Err("index.html has no <meta charset> to put the policy after".into());
    }
    // frame-ancestors is ignored in a <meta> policy; the header carries it.
    let meta_csp = csp.replace("; frame-ancestors 'none'", "");
    Ok(html.replacen(
        anchor,
        &format!("{anchor}\n  <meta http-equiv=\"Content-Security-Policy\" content=\"{meta_csp}\">"),
        1,
    ))
}

/// Writes the page for a static host: `index.html` at the root and every
/// file, `config.json` included, under `console/` (the paths the page asks
/// for); both copies of `index.html` carry the policy in a `<meta>`.
/// Answers the policy.
pub fn export(dir: &Path, config: &ConsoleConfig) -> Result<String, String> {
    config.validate()?;
    let sub = dir.join("console");
    std::fs::create_dir_all(&sub).map_err(|e| format!("cannot create {}: {e}", sub.display()))?;
    let write = |path: &Path, body: &[u8]| {
        std::fs::write(path, body).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let csp = config.csp();
    let index = index_with_policy(&csp)?;
    write(&dir.join("index.html"), index.as_bytes())?;
    for a in ASSETS {
        if a.name == INDEX.name {
            write(&sub.join(a.name), index.as_bytes())?;
        } else {
            write(&sub.join(a.name), a.body)?;
        }
    }
    let json = serde_json::to_string_pretty(config).map_err(|e| e.to_string())?;
    write(&sub.join("config.json"), json.as_bytes())?;
    Ok(csp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:3000",
            "127.0.0.1",
            "127.0.0.1:3000",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:3000",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:3000",
            "localhost.evil.example",
            "127.0.0.1.nip.io:3000",
            "10.0.0.1:3000",
            "[::2]:3000",
            "[::1]x",
            "127.0.0.1:",
            "127.0.0.1:3000:1",
            "0.0.0.0:3000",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn the_policy_names_this_origin_the_api_and_the_token_endpoint_only() {
        let local = ConsoleConfig::default();
        assert!(local.csp().contains("connect-src 'self';"), "{}", local.csp());
        assert!(local.csp().starts_with("default-src 'none'; script-src 'self';"));
        let deployed = ConsoleConfig {
            api_url: "https://abc.execute-api.eu-west-1.amazonaws.com/".into(),
            oidc: Some(Oidc::cognito(
                "https://convo-1.auth.eu-west-1.amazoncognito.com",
                "client1",
            )),
            ..ConsoleConfig::default()
        };
        let csp = deployed.csp();
        assert!(
            csp.contains(
                "connect-src 'self' https://abc.execute-api.eu-west-1.amazonaws.com \
                 https://convo-1.auth.eu-west-1.amazoncognito.com;"
            ),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"));
    }

    #[test]
    fn cognito_endpoints_and_url_checks() {
        let o = Oidc::cognito("https://d.auth.us-east-1.amazoncognito.com/", "abc");
        assert_eq!(
            o.authorize_url,
            "https://d.auth.us-east-1.amazoncognito.com/oauth2/authorize"
        );
        assert_eq!(o.token_url, "https://d.auth.us-east-1.amazoncognito.com/oauth2/token");
        let mut c = ConsoleConfig {
            api_url: "http://example.com".into(),
            ..ConsoleConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("must be https"));
        c.api_url = "http://127.0.0.1:3000".into();
        assert!(c.validate().is_ok());
        c.api_url = "not a url".into();
        assert!(c.validate().is_err());
    }

    struct TempDir(std::path::PathBuf);
    impl TempDir {
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn export_writes_every_file_where_the_page_asks_for_it() {
        let dir = TempDir(std::env::temp_dir().join(format!("convo-console-{}", ulid::Ulid::new())));
        let cfg = ConsoleConfig {
            api_url: "https://api.example.com".into(),
            ..ConsoleConfig::default()
        };
        export(dir.path(), &cfg).unwrap();
        let index = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        for a in ASSETS {
            assert!(dir.path().join("console").join(a.name).is_file(), "{}", a.name);
            if a.name != "index.html" {
                assert!(
                    index.contains(&format!("/console/{}", a.name)),
                    "index.html must ask for {}",
                    a.name
                );
            }
        }
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("console/config.json")).unwrap()).unwrap();
        assert_eq!(written["apiUrl"], "https://api.example.com");
        assert_eq!(written["devSignIn"], false);
        assert!(index.contains("src=\"/console/app.js\""));
        let meta = format!(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"{}\">",
            cfg.csp().replace("; frame-ancestors 'none'", "")
        );
        let at = index.find(&meta).expect("the policy is in a <meta>");
        assert!(at < index.find("<script").unwrap() && at < index.find("<link").unwrap());
        assert!(meta.contains("connect-src 'self' https://api.example.com;"), "{meta}");
        // No inline script or style: the CSP allows none.
        assert!(!index.contains("<script>") && !index.contains("style="));
    }
}
