//! `sweep-sessions`: run on a schedule; ends sessions idle longer than the
//! configured time by enqueueing an end on each one's FIFO group, and
//! removes conversations past their retention where the store does not
//! expire them itself.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use convo_domain::Deps;
use convo_domain::sweep::{purge_expired, sweep_idle_sessions};
use lambda_runtime::{Error, LambdaEvent};

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepSummary {
    pub sessions_ended: usize,
    pub expired_removed: usize,
}

pub async fn handle(
    deps: &Deps,
    _event: LambdaEvent<EventBridgeEvent<serde_json::Value>>,
) -> Result<SweepSummary, Error> {
    let sessions_ended = sweep_idle_sessions(deps).await?;
    let expired_removed = purge_expired(deps).await?;
    Ok(SweepSummary {
        sessions_ended,
        expired_removed,
    })
}
