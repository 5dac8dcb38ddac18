//! `create-conversation`: the synchronous writes of a conversation.
//! `POST /conversations` (201 with the new conversation, or 200 with the
//! pair's active one when `reuseActive` finds it), `PATCH
//! /conversations/{id}` (user title, metadata merge, archive) and `POST
//! /conversations/{id}/review` (a reviewer's verdict on a flagged one), and
//! erasure: `DELETE /conversations/{id}` and `DELETE /users/{userId}` (202: a
//! durable job, reported on by the read API's `GET /erasures/{erasureId}`).

use convo_domain::{erasure, service};
use convo_http::{ApiError, HandlerResult, finish, json_body, owner, path_param, route_key};
use convo_schema::api::{
    CreateConversationRequest, DeleteConversationResponse, PatchConversationRequest, ReviewRequest,
};
use lambda_http::Request;

pub async fn handle(deps: &convo_domain::ApiDeps, req: Request) -> HandlerResult {
    let route = route_key(&req);
    let result: Result<(u16, serde_json::Value), ApiError> = async {
        let owner = owner(&req)?;
        let id = || path_param(&req, "id").ok_or_else(ApiError::not_found_route);
        match route.as_str() {
            "POST /conversations" => {
                let body: CreateConversationRequest = json_body(&req, false)?;
                let (conv, created) = service::create_conversation(deps, &owner, body).await?;
                Ok((if created { 201 } else { 200 }, to_json(conv)))
            }
            "PATCH /conversations/{id}" => {
                let body: PatchConversationRequest = json_body(&req, false)?;
                Ok((
                    200,
                    to_json(service::patch_conversation(deps, &owner, &id()?, body).await?),
                ))
            }
            "POST /conversations/{id}/review" => {
                let body: ReviewRequest = json_body(&req, false)?;
                Ok((
                    200,
                    to_json(service::review_conversation(deps, &owner, &id()?, body).await?),
                ))
            }
            "DELETE /conversations/{id}" => {
                let id = id()?;
                service::delete_conversation(deps, &owner, &id).await?;
                Ok((
                    200,
                    to_json(DeleteConversationResponse {
                        conversation_id: id,
                        deleted: true,
                    }),
                ))
            }
            "DELETE /users/{userId}" => {
                let user = path_param(&req, "userId").ok_or_else(ApiError::not_found_route)?;
                // 202: the key is gone, the job that deletes the items is
                // queued; `Location` reports on it.
                Ok((202, to_json(erasure::start(deps, &owner, &user).await?)))
            }
            _ => Err(ApiError::not_found_route()),
        }
    }
    .await;
    Ok(match result {
        Ok((status, body)) => {
            let location = (status == 202)
                .then(|| body.get("erasureId").and_then(|v| v.as_str()))
                .flatten()
                .and_then(|id| lambda_http::http::HeaderValue::from_str(&format!("/erasures/{id}")).ok());
            let mut resp = finish(&req, &route, status, Ok::<_, ApiError>(body));
            if let Some(location) = location {
                resp.headers_mut().insert(lambda_http::http::header::LOCATION, location);
            }
            resp
        }
        Err(e) => finish::<()>(&req, &route, 200, Err(e)),
    })
}

fn to_json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}
