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
/// With encryption on, the store seals and opens with the data keys (the
/// API's functions and the title generator).
pub async fn bootstrap() -> convo_domain::ApiDeps {
    let (settings, sdk) = settings().await;
    exit_on_error(settings.deps(&sdk))
}

/// As [`bootstrap`], for the functions that never see clear text (the
/// write worker, the sweeper, the end of a session): no data key, and no
/// permission to use one.
pub async fn bootstrap_without_keys() -> Deps {
    let (settings, sdk) = settings().await;
    exit_on_error(settings.deps_with(aws_sdk_dynamodb::Client::new(&sdk), aws_sdk_sqs::Client::new(&sdk)))
}

async fn settings() -> (AwsSettings, aws_config::SdkConfig) {
    init_tracing();
    let settings = exit_on_error(AwsSettings::from_env());
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    crate::metrics::cold_start();
    (settings, sdk)
}

fn exit_on_error<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => {
            tracing::error!(error = %e, "convo cannot start");
            std::process::exit(1);
        }
    }
}

/// The `publish-events` function's set-up: the EventBridge bus named by
/// `CONVO_EVENT_BUS` (name or ARN; required) and the events' `Source`
/// (`CONVO_EVENT_SOURCE`, default `convo`), and EMF metrics.
pub async fn bootstrap_publisher() -> (
    std::sync::Arc<dyn convo_domain::ports::EventPublisher>,
    std::sync::Arc<dyn convo_domain::ports::Metrics>,
) {
    init_tracing();
    let Some(bus) = std::env::var("CONVO_EVENT_BUS").ok().filter(|b| !b.trim().is_empty()) else {
        tracing::error!("convo cannot start: missing environment variable(s): CONVO_EVENT_BUS");
        std::process::exit(1);
    };
    let source = std::env::var("CONVO_EVENT_SOURCE")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| convo_schema::events::DEFAULT_SOURCE.to_string());
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    crate::metrics::cold_start();
    (
        std::sync::Arc::new(crate::EventBridgePublisher::new(
            aws_sdk_eventbridge::Client::new(&sdk),
            bus,
            source,
        )),
        std::sync::Arc::new(crate::metrics::EmfMetrics),
    )
}
