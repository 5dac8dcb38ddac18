//! Lambda entry point: set-up once per cold start, then serve.

use lambda_http::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = convo_aws::lambda::bootstrap_without_keys().await;
    lambda_http::run(service_fn(|req| end_session::handle(&deps, req))).await
}
