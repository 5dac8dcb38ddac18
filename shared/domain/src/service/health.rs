//! Liveness and the operators' deep health.

use super::*;

/// `GET /health`, which needs no token: liveness only. It calls nothing
/// (an anonymous caller cannot make the service spend requests on AWS) and
/// shows nothing of any tenant.
pub fn liveness(deps: &Deps) -> serde_json::Value {
    serde_json::json!({"status": "healthy", "timestamp": deps.clock.now()})
}

/// `GET /health/deep`, for an operator (`Config::operators`): the store and
/// the queues, with their figures. Answers `Forbidden` to anyone else.
pub async fn deep_health(deps: &Deps, owner_id: &str) -> Result<(bool, serde_json::Value), DomainError> {
    if !deps.config.operators.iter().any(|o| o == owner_id) {
        return Err(DomainError::Forbidden(
            "the deep health is for operators (CONVO_OPERATORS); GET /health answers liveness to anyone".into(),
        ));
    }
    let (store, writes, titles, events) = futures::join!(
        deps.store.health.health(),
        deps.writes.health(),
        deps.titles.health(),
        deps.events.health()
    );
    let ok = store.ok && writes.ok && titles.ok && events.ok;
    let body = serde_json::json!({
        "status": if ok { "healthy" } else { "unhealthy" },
        "timestamp": deps.clock.now(),
        "components": [store, writes, titles, events],
    });
    Ok((ok, body))
}
