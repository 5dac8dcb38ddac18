//! `append-message`: the queued writes to a conversation's messages.
//!
//! - `POST /conversations/{id}/messages` validates, screens every message,
//!   enqueues one write command on the conversation's FIFO group and answers
//!   202 with ids and verdicts, without waiting for the store. An
//!   `Idempotency-Key` header makes a retry return the first answer.
//! - `DELETE /conversations/{id}/messages/{messageId}` (202 with the message
//!   as it was) and `DELETE /conversations/{id}/messages` (202) enqueue a
//!   removal on the same group, so it applies after every write accepted
//!   before it.

use convo_domain::service::{self, IdempotencyKey};
use convo_http::{
    ApiError, HandlerResult, body_bytes, finish, header_text, json_body, owner, path_param, query, route_key,
};
use convo_schema::api::AppendRequest;
use lambda_http::Request;

pub async fn handle(deps: &convo_domain::ApiDeps, req: Request) -> HandlerResult {
    let route = route_key(&req);
    let result: Result<serde_json::Value, ApiError> = async {
        let owner = owner(&req)?;
        let id = path_param(&req, "id").ok_or_else(ApiError::not_found_route)?;
        let value = match route.as_str() {
            "DELETE /conversations/{id}/messages/{messageId}" => {
                let message = path_param(&req, "messageId").ok_or_else(ApiError::not_found_route)?;
                let after = query(&req, "after")
                    .map(convo_schema::queries::command_id)
                    .transpose()?;
                to_json(service::remove_message(deps, &owner, &id, &message, after.as_deref()).await?)
            }
            "DELETE /conversations/{id}/messages" => to_json(service::clear_messages(deps, &owner, &id).await?),
            _ => {
                let body: AppendRequest = json_body(&req, false)?;
                let key = header_text(&req, "idempotency-key")
                    .map(|k| IdempotencyKey::new(&k, body_bytes(&req)))
                    .transpose()?;
                to_json(service::append_messages(deps, &owner, &id, body, key).await?)
            }
        };
        Ok(value)
    }
    .await;
    let route = if route.is_empty() {
        "POST /conversations/{id}/messages".to_string()
    } else {
        route
    };
    Ok(finish(&req, &route, 202, result))
}

fn to_json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}
