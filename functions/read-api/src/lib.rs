//! `read-api`: every read route, one function (reads share their cold start
//! and their IAM policy):
//!
//! - `GET /conversations?userId=…` (newest first, paginated)
//! - `GET /conversations/{id}`
//! - `GET /conversations/{id}/messages` (cursor, limit, order, since, until, flagged)
//! - `GET /reviews?status=unreviewed` (the owner's flagged conversations)
//! - `GET /conversations/{id}/context` (maxMessages, maxAge)
//! - `GET /users/{userId}/stats`
//! - `GET /health` (no token needed)

use convo_domain::Deps;
use convo_domain::service::{self, ListParams, MessageParams, ReviewParams};
use convo_http::{ApiError, HandlerResult, finish, json, owner, path_param, query, route_key};
use lambda_http::Request;

pub async fn handle(deps: &Deps, req: Request) -> HandlerResult {
    let route = route_key(&req);
    if route == "GET /health" {
        let (ok, body) = service::health(deps).await;
        return Ok(json(if ok { 200 } else { 503 }, &body));
    }
    let result: Result<serde_json::Value, ApiError> = async {
        let owner = owner(&req)?;
        let id = || path_param(&req, "id").ok_or_else(ApiError::not_found_route);
        let value = match route.as_str() {
            "GET /conversations" => {
                let p = ListParams {
                    user_id: query(&req, "userId"),
                    cursor: query(&req, "cursor"),
                    limit: query(&req, "limit"),
                };
                to_json(service::list_conversations(deps, &owner, p).await?)
            }
            "GET /conversations/{id}" => to_json(service::get_conversation(deps, &owner, &id()?).await?),
            "GET /conversations/{id}/messages" => {
                let p = MessageParams {
                    cursor: query(&req, "cursor"),
                    limit: query(&req, "limit"),
                    order: query(&req, "order"),
                    since: query(&req, "since"),
                    until: query(&req, "until"),
                    flagged: query(&req, "flagged"),
                };
                to_json(service::list_messages(deps, &owner, &id()?, p).await?)
            }
            "GET /conversations/{id}/context" => to_json(
                service::context(deps, &owner, &id()?, query(&req, "maxMessages"), query(&req, "maxAge")).await?,
            ),
            "GET /reviews" => {
                let p = ReviewParams {
                    status: query(&req, "status"),
                    cursor: query(&req, "cursor"),
                    limit: query(&req, "limit"),
                };
                to_json(service::list_reviews(deps, &owner, p).await?)
            }
            "GET /users/{userId}/stats" => {
                let user = path_param(&req, "userId").ok_or_else(ApiError::not_found_route)?;
                to_json(service::user_stats(deps, &owner, &user).await?)
            }
            _ => return Err(ApiError::not_found_route()),
        };
        Ok(value)
    }
    .await;
    Ok(finish(&req, &route, 200, result))
}

fn to_json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}
