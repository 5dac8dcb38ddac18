//! Lambda entry point: set-up once per cold start, then serve.

use lambda_http::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let deps = convo_aws::lambda::bootstrap().await;
    lambda_http::run(service_fn(|req| append_message::handle(&deps, req))).await
}
