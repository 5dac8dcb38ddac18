//! `create-conversation`: `POST /conversations` (201 with the new
//! conversation, or 200 with the pair's active one when `reuseActive` finds
//! it) and `PATCH /conversations/{id}` (user title, metadata merge, archive).
//! Both write the store synchronously.

use convo_domain::{Deps, service};
use convo_http::{ApiError, HandlerResult, finish, json_body, owner, path_param};
use convo_schema::api::{CreateConversationRequest, PatchConversationRequest};
use lambda_http::Request;

pub async fn handle(deps: &Deps, req: Request) -> HandlerResult {
    let method = req.method().as_str().to_string();
    let id = path_param(&req, "id");
    let route = if id.is_some() {
        "PATCH /conversations/{id}"
    } else {
        "POST /conversations"
    };
    let result: Result<(u16, serde_json::Value), ApiError> = async {
        let owner = owner(&req)?;
        match (method.as_str(), id) {
            ("POST", None) => {
                let body: CreateConversationRequest = json_body(&req, false)?;
                let (conv, created) = service::create_conversation(deps, &owner, body).await?;
                Ok((
                    if created { 201 } else { 200 },
                    serde_json::to_value(conv).unwrap_or_default(),
                ))
            }
            ("PATCH", Some(id)) => {
                let body: PatchConversationRequest = json_body(&req, false)?;
                let conv = service::patch_conversation(deps, &owner, &id, body).await?;
                Ok((200, serde_json::to_value(conv).unwrap_or_default()))
            }
            _ => Err(ApiError::not_found_route()),
        }
    }
    .await;
    Ok(match result {
        Ok((status, body)) => finish(&req, route, status, Ok::<_, ApiError>(body)),
        Err(e) => finish::<()>(&req, route, 200, Err(e)),
    })
}
