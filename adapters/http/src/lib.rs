//! The API Gateway edge shared by the HTTP functions (HTTP API, payload
//! format 2.0): the caller's identity from the JWT authorizer's claims, JSON
//! bodies, path and query parameters, and the single mapping from domain
//! errors to HTTP answers in the documented error format.
//!
//! Depends on `lambda_http` for its request type; holds no business rule.

use convo_domain::DomainError;
use convo_schema::api::{ErrorBody, ErrorDetail};
use convo_schema::limits::MAX_BODY_BYTES;
use convo_schema::{ErrorCode, ValidationError};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use lambda_http;

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
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "a valid bearer token is required",
        )),
    }
}

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
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ValidationError::invalid("body", e.to_string()).into(),
            _ => ApiError::new(ErrorCode::MalformedJson, format!("the body is not valid JSON: {e}")),
        }
    })
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
