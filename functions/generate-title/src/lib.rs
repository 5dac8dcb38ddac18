//! `generate-title`: the titles queue's worker. Sets a generated title
//! (never over a user's), one record at a time; failures are retried.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use convo_domain::titles::generate_title;
use convo_schema::commands::TitleJob;
use lambda_runtime::{Error, LambdaEvent};

pub async fn handle(deps: &convo_domain::ApiDeps, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let mut response = SqsBatchResponse::default();
    for record in event.payload.records {
        let id = record.message_id.unwrap_or_default();
        let job: TitleJob = match serde_json::from_str(record.body.as_deref().unwrap_or("")) {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(record_id = %id, error = %e, "undecodable title job");
                response.add_failure(id);
                continue;
            }
        };
        match generate_title(deps, &job).await {
            Ok(outcome) => {
                tracing::info!(conversation_id = %job.conversation_id, outcome = outcome.name(), "title job")
            }
            Err(e) => {
                tracing::warn!(conversation_id = %job.conversation_id, error = %e, "title job failed");
                response.add_failure(id);
            }
        }
    }
    Ok(response)
}
