//! Cold-start set-up shared by every function's `main.rs`: JSON logs, the
//! AWS configuration loaded once (honouring `AWS_ENDPOINT_URL`), clients
//! built once, and the configuration read from the environment.

use convo_domain::Deps;

use crate::AwsSettings;

/// JSON logs on stderr (CloudWatch picks them up), level from
/// `AWS_LAMBDA_LOG_LEVEL` (set by Lambda's advanced logging controls), else
/// `RUST_LOG`, else `info`.
pub fn init_tracing() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .map(|l| l.to_lowercase())
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Everything a handler needs. A configuration error (naming each missing
/// variable) is logged and ends the process: Lambda reports the init failure.
pub async fn bootstrap() -> Deps {
    init_tracing();
    let settings = match AwsSettings::from_env() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "convo cannot start");
            std::process::exit(1);
        }
    };
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    crate::metrics::cold_start();
    match settings.deps(&sdk) {
        Ok(deps) => deps,
        Err(e) => {
            tracing::error!(error = %e, "convo cannot start");
            std::process::exit(1);
        }
    }
}
