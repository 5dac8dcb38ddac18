//! `end-session`: `POST /conversations/{id}/end`. Enqueues the end on the
//! conversation's FIFO group, so it lands after every message accepted
//! before it, and answers 202. The worker sets the end time, duration and
//! user stats, and queues a title job.

use convo_domain::Deps;
use convo_domain::service::{self, IdempotencyKey};
use convo_http::{ApiError, HandlerResult, body_bytes, finish, header_text, json_body, owner, path_param};
use convo_schema::api::EndRequest;
use lambda_http::Request;

pub async fn handle(deps: &Deps, req: Request) -> HandlerResult {
    let result = async {
        let owner = owner(&req)?;
        let id = path_param(&req, "id").ok_or_else(ApiError::not_found_route)?;
        // The body is optional; when present it must be well-formed.
        let _body: EndRequest = json_body(&req, true)?;
        let key = header_text(&req, "idempotency-key")
            .map(|k| IdempotencyKey::new(&k, body_bytes(&req)))
            .transpose()?;
        Ok::<_, ApiError>(service::end_session(deps, &owner, &id, key).await?)
    }
    .await;
    Ok(finish(&req, "POST /conversations/{id}/end", 202, result))
}
