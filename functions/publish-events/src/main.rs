//! Lambda entry point: set-up once per cold start, then serve.

use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (publisher, metrics) = convo_aws::lambda::bootstrap_publisher().await;
    lambda_runtime::run(service_fn(|event| {
        publish_events::handle(publisher.as_ref(), metrics.as_ref(), event)
    }))
    .await
}
