//! The API Gateway stand-in: matches routes as the HTTP API does, verifies
//! the JWT, builds the payload-2.0 event Lambda would receive (so handlers
//! are fed exactly what they get on AWS) and turns the response back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body as AxumBody, to_bytes};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use convo_http::ApiError;
use convo_schema::ErrorCode;
use lambda_http::Body;

use crate::auth::Verifier;

/// Which function serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    CreateConversation,
    AppendMessage,
    EndSession,
    ReadApi,
}

impl Function {
    /// The package under `functions/` (and the SAM template's binary).
    pub fn package(self) -> &'static str {
        match self {
            Function::CreateConversation => "create-conversation",
            Function::AppendMessage => "append-message",
            Function::EndSession => "end-session",
            Function::ReadApi => "read-api",
        }
    }
}

/// The routes, as in the SAM template: method, path template, function,
/// and whether the JWT authorizer guards it.
pub const ROUTES: &[(&str, &str, Function, bool)] = &[
    ("POST", "/conversations", Function::CreateConversation, true),
    ("PATCH", "/conversations/{id}", Function::CreateConversation, true),
    ("POST", "/conversations/{id}/review", Function::CreateConversation, true),
    ("DELETE", "/conversations/{id}", Function::CreateConversation, true),
    ("DELETE", "/users/{userId}", Function::CreateConversation, true),
    ("POST", "/conversations/{id}/messages", Function::AppendMessage, true),
    (
        "DELETE",
        "/conversations/{id}/messages/{messageId}",
        Function::AppendMessage,
        true,
    ),
    ("DELETE", "/conversations/{id}/messages", Function::AppendMessage, true),
    ("POST", "/conversations/{id}/end", Function::EndSession, true),
    ("GET", "/conversations", Function::ReadApi, true),
    ("GET", "/conversations/{id}", Function::ReadApi, true),
    ("GET", "/conversations/{id}/messages", Function::ReadApi, true),
    ("GET", "/conversations/{id}/context", Function::ReadApi, true),
    ("GET", "/users/{userId}/stats", Function::ReadApi, true),
    ("GET", "/users/{userId}/context", Function::ReadApi, true),
    ("GET", "/users/{userId}/export", Function::ReadApi, true),
    ("GET", "/erasures/{erasureId}", Function::ReadApi, true),
    ("GET", "/reviews", Function::ReadApi, true),
    ("GET", "/health", Function::ReadApi, false),
    ("GET", "/health/deep", Function::ReadApi, true),
    ("GET", "/openapi.json", Function::ReadApi, false),
];

/// Matches a path against a template; returns the path parameters.
fn match_path(template: &str, path: &str) -> Option<HashMap<String, String>> {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut params = HashMap::new();
    for (ts, ps) in t.iter().zip(&p) {
        if let Some(name) = ts.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if ps.is_empty() {
                return None;
            }
            let decoded = percent_decode(ps)?;
            params.insert(name.to_string(), decoded);
        } else if ts != ps {
            return None;
        }
    }
    Some(params)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes: Vec<u8> = form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())?;
    String::from_utf8(bytes).ok()
}

pub struct Gateway {
    pub deps: convo_domain::ApiDeps,
    pub verifier: Verifier,
    pub cors: crate::cors::Cors,
}

/// Largest body the gateway forwards (API Gateway's limit is 10 MB; convo's
/// handlers refuse more than 512 KiB with a clear error anyway).
const GATEWAY_BODY_LIMIT: usize = 1024 * 1024;

/// Serves a request as API Gateway would, with CORS for the origins
/// allowed (`crate::cors`): a preflight is answered here, and an answer to
/// an allowed origin says so.
pub async fn serve_request(gw: Arc<Gateway>, req: axum::extract::Request) -> Response {
    let origin = gw.cors.allowed(req.headers());
    if req.method() == axum::http::Method::OPTIONS && req.headers().contains_key("access-control-request-method") {
        return preflight(req.uri().path(), origin);
    }
    let mut resp = serve_route(gw, req).await;
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert("access-control-allow-origin", origin);
        h.insert(
            "access-control-expose-headers",
            axum::http::HeaderValue::from_static(crate::cors::EXPOSE_HEADERS),
        );
        h.append("vary", axum::http::HeaderValue::from_static("origin"));
    }
    resp
}

/// A CORS preflight: 204 with the methods of the path's routes for an
/// allowed origin; 403 for another; 404 for a path no route serves.
fn preflight(path: &str, origin: Option<axum::http::HeaderValue>) -> Response {
    let mut methods: Vec<&str> = ROUTES
        .iter()
        .filter(|(_, template, ..)| match_path(template, path).is_some())
        .map(|(m, ..)| *m)
        .collect();
    if methods.is_empty() {
        return to_axum(ApiError::not_found_route().into_response(None));
    }
    let Some(origin) = origin else {
        return to_axum(
            ApiError::new(
                ErrorCode::Forbidden,
                "this origin may not call the API from a browser (--cors-origin allows it)",
            )
            .into_response(None),
        );
    };
    if methods.contains(&"GET") {
        methods.push("HEAD");
    }
    let mut resp = Response::new(AxumBody::empty());
    *resp.status_mut() = axum::http::StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert("access-control-allow-origin", origin);
    if let Ok(v) = methods.join(", ").parse() {
        h.insert("access-control-allow-methods", v);
    }
    h.insert(
        "access-control-allow-headers",
        axum::http::HeaderValue::from_static(crate::cors::ALLOW_HEADERS),
    );
    h.insert("access-control-max-age", axum::http::HeaderValue::from_static("600"));
    h.insert("vary", axum::http::HeaderValue::from_static("origin"));
    resp
}

async fn serve_route(gw: Arc<Gateway>, req: axum::extract::Request) -> Response {
    let started = Instant::now();
    let request_id = ulid::Ulid::new().to_string();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();

    // HEAD is a GET without the body (RFC 9110), on every GET route.
    let head = method == "HEAD";
    let wanted = if head { "GET" } else { method.as_str() };
    let mut allowed: Vec<&str> = Vec::new();
    let mut found = None;
    for (m, template, function, guarded) in ROUTES {
        if let Some(params) = match_path(template, &path) {
            allowed.push(m);
            if *m == wanted && found.is_none() {
                found = Some((format!("{m} {template}"), *function, *guarded, params));
            }
        }
    }
    let Some((route_key, function, guarded, params)) = found else {
        if allowed.is_empty() {
            return to_axum(ApiError::not_found_route().into_response(Some(request_id)));
        }
        if allowed.contains(&"GET") {
            allowed.push("HEAD");
        }
        let mut resp = ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{method} is not allowed on {path}; allowed: {}", allowed.join(", ")),
        )
        .into_response(Some(request_id));
        if let Ok(v) = allowed.join(", ").parse() {
            resp.headers_mut().insert("allow", v);
        }
        return to_axum(resp);
    };
    let method = wanted.to_string();

    let headers = req.headers().clone();
    let claims = if guarded {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        match gw.verifier.verify(auth) {
            Ok(c) => Some(c),
            Err(why) => {
                tracing::info!(route = %route_key, status = 401, reason = why, "request refused");
                return to_axum(ApiError::new(ErrorCode::Unauthorized, why).into_response(Some(request_id)));
            }
        }
    } else {
        None
    };

    let body = match to_bytes(req.into_body(), GATEWAY_BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return to_axum(
                ApiError::new(ErrorCode::PayloadTooLarge, "the body exceeds 1 MiB").into_response(Some(request_id)),
            );
        }
    };

    let event = build_event(
        &method,
        &path,
        &raw_query,
        &headers,
        &route_key,
        &request_id,
        claims,
        params,
        &body,
    );
    let lambda_req = match lambda_http::request::from_str(&event.to_string()) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "could not build the Lambda request");
            return to_axum(ApiError::new(ErrorCode::Internal, "internal error").into_response(Some(request_id)));
        }
    };
    let result = call(function, &gw.deps, lambda_req).await;
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, route = %route_key, "handler failed");
            ApiError::new(ErrorCode::Internal, "internal error").into_response(Some(request_id))
        }
    };
    tracing::debug!(route = %route_key, status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "served");
    let mut response = to_axum(response);
    if head {
        *response.body_mut() = AxumBody::empty();
    }
    response
}

/// Runs the function that serves a route, as Lambda would.
pub async fn call(
    function: Function,
    deps: &convo_domain::ApiDeps,
    req: lambda_http::Request,
) -> convo_http::HandlerResult {
    match function {
        Function::CreateConversation => create_conversation::handle(deps, req).await,
        Function::AppendMessage => append_message::handle(deps, req).await,
        Function::EndSession => end_session::handle(deps, req).await,
        Function::ReadApi => read_api::handle(deps, req).await,
    }
}

#[allow(clippy::too_many_arguments)]
pub fn build_event(
    method: &str,
    path: &str,
    raw_query: &str,
    headers: &http::HeaderMap,
    route_key: &str,
    request_id: &str,
    claims: Option<HashMap<String, String>>,
    params: HashMap<String, String>,
    body: &[u8],
) -> serde_json::Value {
    let mut header_map = serde_json::Map::new();
    for (name, value) in headers {
        // A value that is not ASCII is passed on as its bytes read as UTF-8
        // (as API Gateway passes it on), for the handler to refuse.
        let v = String::from_utf8_lossy(value.as_bytes());
        let entry = header_map.entry(name.as_str().to_string()).or_insert_with(|| "".into());
        let joined = match entry.as_str() {
            Some("") | None => v.into_owned(),
            Some(prev) => format!("{prev},{v}"),
        };
        *entry = joined.into();
    }
    // API Gateway joins repeated query parameters with commas.
    let mut query: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
        let joined = match query.get(k.as_ref()).and_then(|p| p.as_str()) {
            Some(prev) => format!("{prev},{v}"),
            None => v.into_owned(),
        };
        query.insert(k.into_owned(), joined.into());
    }
    let (body_value, is_base64) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (serde_json::Value::Null, false),
        Ok(s) => (s.into(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body).into(), true),
    };
    let now = chrono::Utc::now();
    let mut context = serde_json::json!({
        "accountId": "000000000000",
        "apiId": "local",
        "domainName": "localhost",
        "domainPrefix": "localhost",
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": ""},
        "requestId": request_id,
        "routeKey": route_key,
        "stage": "$default",
        "time": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
        "timeEpoch": now.timestamp_millis(),
    });
    if let Some(claims) = claims {
        context["authorizer"] = serde_json::json!({"jwt": {"claims": claims, "scopes": null}});
    }
    serde_json::json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": header_map,
        "queryStringParameters": if query.is_empty() { serde_json::Value::Null } else { query.into() },
        "pathParameters": if params.is_empty() { serde_json::Value::Null } else { serde_json::to_value(params).unwrap_or_default() },
        "requestContext": context,
        "body": body_value,
        "isBase64Encoded": is_base64,
    })
}

pub fn to_axum(resp: lambda_http::Response<Body>) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes: Vec<u8> = match body {
        Body::Empty => Vec::new(),
        Body::Text(t) => t.into_bytes(),
        Body::Binary(b) => b,
        _ => Vec::new(),
    };
    (parts.status, parts.headers, AxumBody::from(bytes)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI document describes exactly the routes served, with the
    /// same authentication.
    #[test]
    fn the_document_describes_every_route_and_no_other() {
        let doc = serde_json::to_value(convo_http::openapi::document()).unwrap();
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let open = op["security"]
                    .as_array()
                    .is_some_and(|s| s.iter().all(|r| r.as_object().unwrap().is_empty()));
                documented.push((method.to_uppercase(), path.clone(), !open));
            }
        }
        let mut served: Vec<_> = ROUTES
            .iter()
            .map(|(m, p, _, guarded)| (m.to_string(), p.to_string(), *guarded))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }

    /// The committed `openapi.json` is the document the code generates.
    #[test]
    fn the_committed_document_is_current() {
        let committed = include_str!("../../../openapi.json");
        assert!(
            committed == convo_http::openapi::document_json(),
            "openapi.json is stale: run `cargo run -p convo-local -- openapi > openapi.json`"
        );
    }

    #[test]
    fn matches_templates_and_decodes_parameters() {
        let p = match_path("/users/{userId}/stats", "/users/%2B14155552671/stats").unwrap();
        assert_eq!(p["userId"], "+14155552671");
        assert!(match_path("/conversations/{id}", "/conversations").is_none());
        assert!(match_path("/conversations/{id}", "/conversations/a/b").is_none());
        assert!(match_path("/conversations", "/conversations/").is_some());
    }
}
