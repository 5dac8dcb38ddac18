//! `read-api`: every read route, one function (reads share their cold start
//! and their IAM policy):
//!
//! - `GET /conversations` (newest first, paginated; userId, agentId, status, flagged)
//! - `GET /conversations/{id}` (after)
//! - `GET /conversations/{id}/messages` (cursor, limit, order, since, until, flagged, after)
//! - `GET /reviews?status=unreviewed` (the owner's flagged conversations)
//! - `GET /conversations/{id}/context` (maxMessages, maxAge, maxTokens, tokenizer, after)
//!
//! `after=<commandId>` answers once that write is applied and says what it
//! found in the `X-Convo-After` header (`applied` or `pending`).
//! - `GET /users/{userId}/stats`
//! - `GET /users/{userId}/export` (cursor): everything held about a user, opened
//! - `GET /users/{userId}/context`: a user's most recent messages across
//!   their conversations (with one agent, when asked)
//! - `GET /erasures/{erasureId}`: a user's erasure's progress and outcome
//! - `GET /health` (no token needed): liveness only, no call to anything
//! - `GET /health/deep` (an operator's token): the store's and the queues'
//!   figures, refreshed at most once per `Config::deep_health_interval`
//! - `GET /openapi.json`, the API's OpenAPI document (no token needed)

use convo_domain::service::{self, ListParams, MessageParams, ReviewParams};
use convo_http::{ApiError, HandlerResult, finish, json, owner, path_param, query, route_key};
use convo_schema::api::AfterStatus;
use convo_schema::queries;
use lambda_http::Request;

/// The header that reports what a read with `after=` found.
pub const AFTER_HEADER: &str = "x-convo-after";

/// The last deep-health answer and when it was made (one per execution
/// environment; the lock also makes concurrent askers wait for one
/// refresh). Within `Config::deep_health_interval` it is answered again, so
/// that the store and the queues are asked once (a DescribeTable and six
/// GetQueueAttributes on AWS) however many operators ask.
static DEEP_HEALTH: tokio::sync::Mutex<Option<(std::time::Instant, bool, serde_json::Value)>> =
    tokio::sync::Mutex::const_new(None);

async fn deep_health(
    deps: &convo_domain::ApiDeps,
    owner: &str,
) -> Result<(bool, serde_json::Value), convo_domain::DomainError> {
    // The operator check comes first, so that a refusal costs nothing.
    if !deps.config.operators.iter().any(|o| o == owner) {
        return service::deep_health(deps, owner).await;
    }
    let mut last = DEEP_HEALTH.lock().await;
    if let Some((at, ok, body)) = last.as_ref()
        && deps
            .config
            .deep_health_interval
            .to_std()
            .is_ok_and(|d| at.elapsed() < d)
    {
        return Ok((*ok, body.clone()));
    }
    let (ok, body) = service::deep_health(deps, owner).await?;
    *last = Some((std::time::Instant::now(), ok, body.clone()));
    Ok((ok, body))
}

pub async fn handle(deps: &convo_domain::ApiDeps, req: Request) -> HandlerResult {
    let route = route_key(&req);
    if route == "GET /openapi.json" {
        let mut resp = convo_http::json(200, &convo_http::openapi::document());
        resp.headers_mut()
            .insert("cache-control", http_value("public, max-age=300"));
        return Ok(resp);
    }
    if route == "GET /health" {
        return Ok(json(200, &service::liveness(deps)));
    }
    if route == "GET /health/deep" {
        let result = async {
            let owner = owner(&req)?;
            Ok::<_, ApiError>(deep_health(deps, &owner).await?)
        }
        .await;
        return Ok(match result {
            Ok((true, body)) => finish(&req, &route, 200, Ok::<_, ApiError>(body)),
            Ok((false, body)) => finish(&req, &route, 503, Ok::<_, ApiError>(body)),
            Err(e) => finish::<()>(&req, &route, 200, Err(e)),
        });
    }
    let mut after: Option<AfterStatus> = None;
    let result: Result<serde_json::Value, ApiError> = async {
        let owner = owner(&req)?;
        let id = || path_param(&req, "id").ok_or_else(ApiError::not_found_route);
        let value = match route.as_str() {
            "GET /conversations" => {
                let p = ListParams {
                    user_id: query(&req, "userId"),
                    agent_id: query(&req, "agentId"),
                    status: query(&req, "status"),
                    flagged: query(&req, "flagged"),
                    cursor: query(&req, "cursor"),
                    limit: query(&req, "limit"),
                };
                to_json(service::list_conversations(deps, &owner, &p.parse()?).await?)
            }
            "GET /conversations/{id}" => {
                let after_command = query(&req, "after").map(queries::command_id).transpose()?;
                let (conversation, status) =
                    service::get_conversation_after(deps, &owner, &id()?, after_command.as_deref()).await?;
                after = status;
                to_json(conversation)
            }
            "GET /conversations/{id}/messages" => {
                let p = MessageParams {
                    cursor: query(&req, "cursor"),
                    limit: query(&req, "limit"),
                    order: query(&req, "order"),
                    since: query(&req, "since"),
                    until: query(&req, "until"),
                    flagged: query(&req, "flagged"),
                    after: query(&req, "after"),
                };
                let page = service::list_messages(deps, &owner, &id()?, &p.parse()?).await?;
                after = page.after;
                to_json(page)
            }
            "GET /conversations/{id}/context" => {
                let p = service::ContextParams {
                    max_messages: query(&req, "maxMessages"),
                    max_age: query(&req, "maxAge"),
                    max_tokens: query(&req, "maxTokens"),
                    tokenizer: query(&req, "tokenizer"),
                    after: query(&req, "after"),
                };
                let context = service::context(deps, &owner, &id()?, &p.parse()?).await?;
                after = context.after;
                to_json(context)
            }
            "GET /reviews" => {
                let p = ReviewParams {
                    status: query(&req, "status"),
                    cursor: query(&req, "cursor"),
                    limit: query(&req, "limit"),
                };
                to_json(service::list_reviews(deps, &owner, &p.parse()?).await?)
            }
            "GET /users/{userId}/export" => {
                let user = path_param(&req, "userId").ok_or_else(ApiError::not_found_route)?;
                to_json(convo_domain::export::export_user(deps, &owner, &user, query(&req, "cursor")).await?)
            }
            "GET /users/{userId}/context" => {
                let user = path_param(&req, "userId").ok_or_else(ApiError::not_found_route)?;
                let p = service::UserContextParams {
                    agent_id: query(&req, "agentId"),
                    context: service::ContextParams {
                        max_messages: query(&req, "maxMessages"),
                        max_age: query(&req, "maxAge"),
                        max_tokens: query(&req, "maxTokens"),
                        tokenizer: query(&req, "tokenizer"),
                        after: query(&req, "after"),
                    },
                };
                let context = service::user_context(deps, &owner, &user, &p.parse()?).await?;
                after = context.after;
                to_json(context)
            }
            "GET /users/{userId}/stats" => {
                let user = path_param(&req, "userId").ok_or_else(ApiError::not_found_route)?;
                to_json(service::user_stats(deps, &owner, &user).await?)
            }
            "GET /erasures/{erasureId}" => {
                let id = path_param(&req, "erasureId").ok_or_else(ApiError::not_found_route)?;
                to_json(convo_domain::erasure::report(deps, &owner, &id).await?)
            }
            _ => return Err(ApiError::not_found_route()),
        };
        Ok(value)
    }
    .await;
    let mut response = finish(&req, &route, 200, result);
    if let Some(status) = after {
        response.headers_mut().insert(AFTER_HEADER, http_value(status.as_str()));
    }
    Ok(response)
}

fn http_value(v: &'static str) -> lambda_http::http::HeaderValue {
    lambda_http::http::HeaderValue::from_static(v)
}

fn to_json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}
