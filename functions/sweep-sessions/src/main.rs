//! Lambda entry point: set-up once per cold start, then serve.

use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = convo_aws::lambda::bootstrap_without_keys().await;
    lambda_runtime::run(service_fn(|event| sweep_sessions::handle(&deps, event))).await
}
