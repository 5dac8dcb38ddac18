//! The API Gateway edge shared by the HTTP functions (HTTP API, payload
//! format 2.0): the caller's identity from the JWT authorizer's claims, JSON
//! bodies, path and query parameters, and the single mapping from domain
//! errors to HTTP answers in the documented error format.
//!
//! Depends on `lambda_http` for its request type; holds no business rule.
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use convo_domain::DomainError;
use convo_schema::api::{ErrorBody, ErrorDetail};
use convo_schema::limits::MAX_BODY_BYTES;
use convo_schema::{ErrorCode, ValidationError};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use lambda_http;

pub mod openapi;

/// The result every HTTP handler returns: domain errors become answers, so
/// `Err` is reserved for failures the runtime should see.
pub type HandlerResult = Result<Response<Body>, lambda_http::Error>;

/// The caller's owner id: the `sub` claim placed by the JWT authorizer.
pub fn owner(req: &Request) -> Result<String, ApiError> {
    let sub = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .and_then(|jwt| jwt.claims.get("sub"))
            .cloned(),
        _ => None,
    };
    match sub {
        Some(s) if is_owner_id(&s) => Ok(s),
        Some(_) => Err(ApiError::new(
            ErrorCode::Unauthorized,
            format!("the token's sub must hold 1 to {MAX_OWNER_CHARS} printable characters"),
        )),
        None => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "a valid bearer token is required",
        )),
    }
}

pub use convo_schema::validate::{MAX_OWNER_CHARS, is_owner_id};

/// The request id API Gateway assigned, echoed as `traceId` in errors.
pub fn trace_id(req: &Request) -> Option<String> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        _ => None,
    }
}

/// The API Gateway route key, such as `GET /conversations/{id}`.
pub fn route_key(req: &Request) -> String {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.route_key.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

pub fn path_param(req: &Request, name: &str) -> Option<String> {
    req.path_parameters_ref()
        .and_then(|p| p.first(name))
        .map(str::to_string)
}

pub fn query<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.query_string_parameters_ref().and_then(|q| q.first(name))
}

pub fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A header whose value is checked by its reader: present even when it is
/// not visible ASCII (its bytes read as UTF-8, lossily), so that a bad
/// value is refused rather than taken as absent.
pub fn header_text(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

pub fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

/// Parses a JSON body. An empty body parses as `{}` when `empty_ok`.
pub fn json_body<T: DeserializeOwned>(req: &Request, empty_ok: bool) -> Result<T, ApiError> {
    let bytes = body_bytes(req);
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ValidationError::too_large("body", format!("the body exceeds {MAX_BODY_BYTES} bytes")).into());
    }
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        if !empty_ok {
            return Err(ApiError::new(ErrorCode::MalformedJson, "a JSON body is required"));
        }
        b"{}"
    } else {
        bytes
    };
    // Every body is an object: serde would also read a struct from an
    // array of its fields (`[null, null]`).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(body_error::<T>(bytes));
    }
    serde_json::from_slice(bytes).map_err(|_| body_error::<T>(bytes))
}

/// Why a body did not decode (the slow path, only for bad bodies): it is
/// not JSON (`malformed_json`), or a value has the wrong shape, named by
/// its path (`messages[0].createdAt`) in a `validation_failed`.
fn body_error<T: DeserializeOwned>(bytes: &[u8]) -> ApiError {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return ApiError::new(ErrorCode::MalformedJson, format!("the body is not valid JSON: {e}")),
    };
    // Every body is an object (serde would also take an array for one).
    if !value.is_object() {
        return ValidationError::invalid("body", "the body must be a JSON object").into();
    }
    let (field, why) = match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(_) => (
            "body".to_string(),
            "the body does not have the expected shape".to_string(),
        ),
        Err(e) => {
            let why = public_message(&e.inner().to_string());
            let mut path = e.path().to_string();
            if path == "." {
                path.clear();
            }
            // A missing field is named itself, not the object it is missing from.
            if let Some(name) = why
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                path = if path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                };
            }
            (if path.is_empty() { "body".to_string() } else { path }, why)
        }
    };
    ValidationError::invalid(field.clone(), format!("{field}: {why}")).into()
}

/// A decoding error's message without the names of internal types (serde
/// says "expected struct AppendRequest" or "expected enum Role").
fn public_message(serde: &str) -> String {
    let mut out = String::with_capacity(serde.len());
    let mut rest = serde;
    while let Some(at) = rest.find("expected ") {
        let (head, tail) = rest.split_at(at + "expected ".len());
        out.push_str(head);
        let (kind, after) = if let Some(after) = tail.strip_prefix("struct ") {
            ("an object", after)
        } else if let Some(after) = tail.strip_prefix("enum ") {
            ("one of the values this field takes", after)
        } else {
            ("", tail)
        };
        if kind.is_empty() {
            rest = tail;
            continue;
        }
        out.push_str(kind);
        // Skip the type's name.
        let name_end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        rest = after.get(name_end..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

pub fn json<T: Serialize>(status: u16, value: &T) -> Response<Body> {
    let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::Text(body))
        .expect("static response parts are valid")
}

/// An error on its way to becoming an HTTP answer.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<serde_json::Value>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn not_found_route() -> Self {
        Self::new(ErrorCode::RouteNotFound, "no such route")
    }

    /// The one place where errors become HTTP answers.
    pub fn into_response(self, trace_id: Option<String>) -> Response<Body> {
        let status = self.code.status();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_string(),
                message: self.message,
                details: self.details,
                trace_id,
            },
        };
        let mut resp = json(status, &body);
        if let Some(secs) = self.retry_after
            && let Ok(v) = secs.to_string().parse()
        {
            resp.headers_mut().insert("retry-after", v);
        }
        resp
    }
}

impl From<ValidationError> for ApiError {
    fn from(v: ValidationError) -> Self {
        Self {
            code: v.code,
            message: v.message,
            details: v.field.map(|f| serde_json::json!({ "field": f })),
            retry_after: None,
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Validation(v) => v.into(),
            DomainError::RateLimited { retry_after_seconds } => Self {
                retry_after: Some(retry_after_seconds),
                ..Self::new(ErrorCode::RateLimited, e.to_string())
            },
            DomainError::Internal(ref what) => {
                // The detail goes to the log, not to the caller.
                tracing::error!(error = %what, "internal error");
                Self::new(ErrorCode::Internal, "internal error")
            }
            DomainError::Unavailable(ref what) => {
                tracing::warn!(error = %what, "dependency unavailable");
                Self::new(
                    ErrorCode::DependencyUnavailable,
                    "a dependency is unavailable; retry shortly",
                )
            }
            other => Self::new(other.code(), other.to_string()),
        }
    }
}

/// Turns an operation's result into the answer, logging route and status
/// (never bodies: message content stays out of logs).
pub fn finish<T: Serialize>(req: &Request, route: &str, ok_status: u16, result: Result<T, ApiError>) -> Response<Body> {
    let trace = trace_id(req);
    let resp = match result {
        Ok(v) => json(ok_status, &v),
        Err(e) => e.into_response(trace.clone()),
    };
    tracing::info!(
        route,
        status = resp.status().as_u16(),
        request_id = trace.as_deref().unwrap_or(""),
        "request"
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use convo_schema::api::{AppendRequest, CreateConversationRequest, PatchConversationRequest, ReviewRequest};

    fn decode<T: DeserializeOwned>(body: &str) -> ApiError {
        let req = lambda_http::http::Request::builder()
            .body(Body::Text(body.to_string()))
            .unwrap();
        match json_body::<T>(&req, false) {
            Ok(_) => panic!("{body} decoded"),
            Err(e) => e,
        }
    }

    fn field(e: &ApiError) -> Option<&str> {
        e.details.as_ref()?.get("field")?.as_str()
    }

    #[test]
    fn a_wrong_value_is_named_by_its_path_and_never_by_a_type_name() {
        for (body, want) in [
            (r#"{"flagStatus": null}"#, "flagStatus"),
            (r#"{"flagStatus": 5}"#, "flagStatus"),
            (r#"{"flagStatus": []}"#, "flagStatus"),
        ] {
            let e = decode::<ReviewRequest>(body);
            assert_eq!((e.code, field(&e)), (ErrorCode::ValidationFailed, Some(want)), "{body}");
            assert!(!e.message.contains("FlagStatus"), "{}", e.message);
        }
        for (body, want) in [
            (
                r#"{"messages": [{"role": "user", "content": "x", "createdAt": "yesterday"}]}"#,
                "messages[0].createdAt",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y", "direction": "up"}]}"#,
                "messages[1].direction",
            ),
            (
                r#"{"messages": [{"role": "wizard", "content": "x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"messages": [{"role": "user", "content": 42}]}"#,
                "messages[0].content",
            ),
            (r#"{"messages": "hello"}"#, "messages"),
            (r#"[1, 2]"#, "body"),
            (r#"[[{"role": "user", "content": "x"}]]"#, "body"),
            (r#"{}"#, "messages"),
            (r#"{"messages": [{"content": "hi"}]}"#, "messages[0].role"),
        ] {
            let e = decode::<AppendRequest>(body);
            assert_eq!(
                (e.code, field(&e)),
                (ErrorCode::ValidationFailed, Some(want)),
                "{body}: {}",
                e.message
            );
            for internal in ["struct", "AppendRequest", "NewMessage", "enum Role", "Direction"] {
                assert!(!e.message.contains(internal), "{body}: {}", e.message);
            }
        }
        let e = decode::<CreateConversationRequest>(r#"{"userId": 7, "agentId": "a"}"#);
        assert_eq!(field(&e), Some("userId"));
        // serde reads a struct from an array of its fields; a body may not.
        for body in ["[null, null]", " [] ", "null", "\"title\""] {
            let e = decode::<PatchConversationRequest>(body);
            assert_eq!(
                (e.code, field(&e)),
                (ErrorCode::ValidationFailed, Some("body")),
                "{body}"
            );
        }
    }

    #[test]
    fn a_body_that_is_not_json_is_malformed() {
        for body in ["{", "{\"messages\": [}", "nope"] {
            assert_eq!(decode::<AppendRequest>(body).code, ErrorCode::MalformedJson, "{body}");
        }
    }

    #[test]
    fn an_owner_id_is_short_and_printable() {
        for ok in ["alice", "auth0|64f1c2", "a#b", "550e8400-e29b-41d4-a716-446655440000"] {
            assert!(is_owner_id(ok), "{ok}");
        }
        let long = "x".repeat(MAX_OWNER_CHARS + 1);
        for bad in ["", "  ", "a\u{1f}b", "a\nb", long.as_str()] {
            assert!(!is_owner_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn public_messages_drop_type_names_only() {
        assert_eq!(
            public_message("invalid type: string \"x\", expected struct AppendRequest"),
            "invalid type: string \"x\", expected an object"
        );
        assert_eq!(
            public_message("invalid type: null, expected enum FlagStatus"),
            "invalid type: null, expected one of the values this field takes"
        );
        assert_eq!(public_message("expected a string"), "expected a string");
        assert_eq!(
            public_message("unknown variant `x`, expected one of `a`, `b`"),
            "unknown variant `x`, expected one of `a`, `b`"
        );
    }
}
