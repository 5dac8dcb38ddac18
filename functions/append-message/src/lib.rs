//! `append-message`: `POST /conversations/{id}/messages`. Validates, screens
//! every message, enqueues one write command on the conversation's FIFO
//! group and answers 202 with ids and verdicts, without waiting for the store.
//! An `Idempotency-Key` header makes a retry return the first answer.

use convo_domain::Deps;
use convo_domain::service::{self, IdempotencyKey};
use convo_http::{ApiError, HandlerResult, body_bytes, finish, header_text, json_body, owner, path_param};
use convo_schema::api::AppendRequest;
use lambda_http::Request;

pub async fn handle(deps: &Deps, req: Request) -> HandlerResult {
    let result = async {
        let owner = owner(&req)?;
        let id = path_param(&req, "id").ok_or_else(ApiError::not_found_route)?;
        let body: AppendRequest = json_body(&req, false)?;
        let key = header_text(&req, "idempotency-key")
            .map(|k| IdempotencyKey::new(&k, body_bytes(&req)))
            .transpose()?;
        Ok::<_, ApiError>(service::append_messages(deps, &owner, &id, body, key).await?)
    }
    .await;
    Ok(finish(&req, "POST /conversations/{id}/messages", 202, result))
}
