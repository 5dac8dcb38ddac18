//! Cross-origin requests to the local server: a browser app served from
//! another origin (a web agent on `localhost:5173`) may call the API. Its
//! preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered
//! here, and every answer to an allowed origin carries
//! `Access-Control-Allow-Origin`. Allowed by default: any page on this
//! machine (`http://localhost`, `http://127.0.0.1`, `http://[::1]`, any
//! port); `--cors-origin` adds origins (or `*`, any). Tokens travel in the
//! `Authorization` header, never in cookies, so no credentials mode is
//! needed.

use axum::http::{HeaderMap, HeaderValue};

/// The origins allowed besides the machine's own.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    pub origins: Vec<String>,
}

/// The headers a browser app may send: the token, the body's type and the
/// idempotency key of a retried write.
pub const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key";
/// The answer headers a browser app may read.
pub const EXPOSE_HEADERS: &str = "location, retry-after, x-convo-after";

impl Cors {
    /// `--cors-origin` values: `*`, or origins (`https://app.example`),
    /// each checked.
    pub fn new(origins: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        for raw in origins.iter().flat_map(|o| o.split(',')) {
            let o = raw.trim().trim_end_matches('/');
            if o.is_empty() {
                continue;
            }
            let host = o.strip_prefix("http://").or_else(|| o.strip_prefix("https://"));
            let ok = o == "*"
                || (host.is_some_and(|h| !h.is_empty() && !h.contains('/')) && HeaderValue::from_str(o).is_ok());
            if !ok {
                return Err(format!(
                    "--cors-origin {raw:?}: give an origin (scheme, host and port, like https://app.example:8443) or *"
                ));
            }
            out.push(o.to_string());
        }
        Ok(Self { origins: out })
    }

    /// The request's `Origin`, when it is allowed.
    pub fn allowed(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get("origin")?;
        let text = origin.to_str().ok()?;
        let local = ["http://localhost", "http://127.0.0.1", "http://[::1]"]
            .iter()
            .any(|base| text == *base || text.strip_prefix(base).is_some_and(is_port));
        let listed = self.origins.iter().any(|o| o == "*" || o == text);
        (local || listed).then(|| origin.clone())
    }
}

/// `:` and one to five digits.
fn is_port(rest: &str) -> bool {
    rest.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(o: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("origin", HeaderValue::from_str(o).unwrap());
        h
    }

    #[test]
    fn the_machines_own_pages_and_listed_origins_only() {
        let cors = Cors::new(&["https://app.example, https://other.example:8443".into()]).unwrap();
        for ok in [
            "http://localhost:5173",
            "http://127.0.0.1:3000",
            "http://[::1]:8080",
            "http://localhost",
            "https://app.example",
            "https://other.example:8443",
        ] {
            assert!(cors.allowed(&origin(ok)).is_some(), "{ok}");
        }
        for no in [
            "http://localhost.evil.example",
            "http://localhost:99999999",
            "https://localhost:5173",
            "https://app.example.evil",
            "null",
        ] {
            assert!(cors.allowed(&origin(no)).is_none(), "{no}");
        }
        assert!(cors.allowed(&HeaderMap::new()).is_none(), "no Origin, no CORS");
        let any = Cors::new(&["*".into()]).unwrap();
        assert!(any.allowed(&origin("https://anything.example")).is_some());
        for bad in [
            "app.example",
            "https://app.example/path",
            "ftp://x",
            "http://é/x",
            "https://",
        ] {
            assert!(Cors::new(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
