//! `convo-local`: every convo function in one process, on embedded defaults.
//!
//! `convo-local serve` (the default) hosts the HTTP functions behind an API
//! Gateway stand-in, feeds the queue workers from durable embedded queues,
//! and runs the sweeper on a timer. `convo-local token --sub alice` mints a
//! token the server accepts.

mod auth;
mod aws_mode;
mod console;
#[cfg(test)]
mod event_props;
mod gateway;
mod oidc;
mod pollers;
mod webhook_secret;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use convo_domain::titles::ExtractiveTitler;
use convo_domain::{Config, Deps, SystemClock, UlidSource};
use convo_embedded::{EmbeddedQueue, EmbeddedStore, QueueKind, open_database};
use pollers::{EmbeddedSource, Source};
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "convo-local", version, about = "Run convo on one machine, no AWS needed")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Serve the HTTP API and run the workers (the default).
    Serve(ServeArgs),
    /// Print a bearer token for an owner.
    Token(TokenArgs),
    /// Create the DynamoDB table and SQS queues at AWS_ENDPOINT_URL (or in
    /// AWS) and print the environment the functions read.
    InitAws(InitArgs),
    /// Print, as JSON, what the code expects of a deployment: the table and
    /// queue definitions, the routes and the environment variables (the SAM
    /// template is tested against it).
    Manifest,
    /// Write the console's files for a static host (the template's S3
    /// bucket behind CloudFront) and print the content security policy it
    /// must be served with.
    Console(ConsoleArgs),
    /// Print the API's OpenAPI document (the committed `openapi.json` is
    /// this output: `convo-local openapi > openapi.json`).
    Openapi,
}

#[derive(Args)]
struct InitArgs {
    /// Name prefix of the table and queues.
    #[arg(long, env = "CONVO_PREFIX", default_value = "convo")]
    prefix: String,
    /// Visibility timeout of the queues (on Lambda: 6 × the worker's
    /// timeout). A short one brings records held by a killed local server
    /// back sooner.
    #[arg(long, default_value = "180s")]
    visibility_timeout: String,
}

#[derive(Args)]
struct ConsoleArgs {
    /// The directory to write (index.html, console/…).
    #[arg(long)]
    out: PathBuf,
    /// The API's base URL (the stack's ApiUrl output).
    #[arg(long)]
    api_url: String,
    /// Sign-in through a Cognito user pool's hosted UI at this domain
    /// (https://<prefix>.auth.<region>.amazoncognito.com; the stack's
    /// ConsoleSignInDomain output), with --client-id.
    #[arg(long, requires = "client_id")]
    cognito_domain: Option<String>,
    /// Sign-in through another OpenID Connect provider: its authorization
    /// endpoint (with --oidc-token-url and --client-id).
    #[arg(long, requires_all = ["oidc_token_url", "client_id"], conflicts_with = "cognito_domain")]
    oidc_authorize_url: Option<String>,
    /// The provider's token endpoint.
    #[arg(long, requires = "oidc_authorize_url")]
    oidc_token_url: Option<String>,
    /// The app client the console signs in as (a public client: no secret).
    #[arg(long)]
    client_id: Option<String>,
    /// Scopes asked for.
    #[arg(long, default_value = "openid email")]
    scope: String,
    /// With --oidc-authorize-url: the token of the answer the API gets,
    /// id_token (a JWT for the client, whatever the provider) or
    /// access_token (when the provider issues JWT access tokens). Cognito:
    /// always access_token.
    #[arg(long, default_value = "id_token", value_parser = ["id_token", "access_token"])]
    token_field: String,
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CONVO_ADDR", default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Where the database and the JWT secret live.
    #[arg(long, env = "CONVO_DATA_DIR", default_value = "./.convo")]
    data_dir: PathBuf,
    /// Keep conversations in memory only (the JWT secret still lives in --data-dir).
    #[arg(long, env = "CONVO_IN_MEMORY")]
    in_memory: bool,
    /// End sessions idle for longer than this (e.g. 30m, 2h).
    #[arg(long, env = "CONVO_IDLE_TIMEOUT", default_value = "30m")]
    idle_timeout: String,
    /// How often the sweeper looks for idle sessions.
    #[arg(long, env = "CONVO_SWEEP_INTERVAL", default_value = "60s")]
    sweep_interval: String,
    /// Request a title once a conversation holds this many messages.
    #[arg(long, env = "CONVO_EARLY_TITLE_AFTER", default_value_t = 6)]
    early_title_after: u64,
    /// Keep conversations this long (e.g. 365d) unless one asks otherwise;
    /// unset keeps them until erased.
    #[arg(long, env = "CONVO_RETENTION")]
    retention: Option<String>,
    /// A directory of word lists (`<category>.txt`) replacing the built-in ones.
    #[arg(long, env = "CONVO_MODERATION_DIR")]
    moderation_dir: Option<PathBuf>,
    /// Mask personal data in stored content unless a conversation says otherwise.
    #[arg(long, env = "CONVO_REDACT_PII")]
    redact_pii: bool,
    /// Seal what people write under per-user data keys (`on` or `off`). The
    /// key-wrapping key comes from CONVO_MASTER_KEY, else <data-dir>/master-key
    /// (made on first run, mode 0600); the wrapped keys live in <data-dir>/keys.
    #[arg(long, env = "CONVO_ENCRYPTION", default_value = "on", value_parser = ["on", "off"])]
    encryption: String,
    /// Appends per conversation per minute before 429; 0 turns it off.
    #[arg(long, env = "CONVO_APPENDS_PER_MINUTE", default_value_t = 30)]
    appends_per_minute: u64,
    /// How long a read with `after=<commandId>` waits for that write (at most 8s).
    #[arg(long, env = "CONVO_READ_AFTER_WAIT", default_value = "2s")]
    read_after_wait: String,
    /// Owners (token subs, comma-separated) whose tokens may read
    /// GET /health/deep: every tenant's counts and the queues' figures.
    #[arg(long, env = "CONVO_OPERATORS", value_delimiter = ',')]
    operators: Vec<String>,
    /// How long one GET /health/deep answer is reused (0s: never).
    #[arg(long, env = "CONVO_DEEP_HEALTH_INTERVAL", default_value = "2s")]
    deep_health_interval: String,
    /// How long an erasure waits for a lagging user index (the DynamoDB
    /// store's) to settle before its last pass (0s: no wait).
    #[arg(long, env = "CONVO_ERASURE_SETTLE", default_value = "5s")]
    erasure_settle: String,
    /// Receives before a failing queue message is parked as a dead letter.
    #[arg(long, env = "CONVO_MAX_RECEIVES", default_value_t = 5)]
    max_receives: u32,
    /// Concurrent pollers of the writes queue (Lambda's maximum concurrency).
    #[arg(long, env = "CONVO_WRITE_WORKERS", default_value_t = 4)]
    write_workers: usize,
    /// Run on DynamoDB and SQS (AWS_ENDPOINT_URL, e.g. moto, or real AWS)
    /// instead of the embedded store and queues.
    #[arg(long, env = "CONVO_AWS")]
    aws: bool,
    /// AWS mode: name prefix of the table and queues (see `init-aws`);
    /// CONVO_TABLE and the CONVO_*_QUEUE_URL variables win when set.
    #[arg(long, env = "CONVO_PREFIX", default_value = "convo")]
    prefix: String,
    /// AWS mode: how long a failed record stays invisible before redelivery.
    #[arg(long, env = "CONVO_RETRY_DELAY", default_value = "2s")]
    retry_delay: String,
    /// Also accept tokens from this OpenID Connect issuer, verified as the
    /// deployed API's JWT authorizer does (keys from
    /// {issuer}/.well-known/openid-configuration), and let the console
    /// sign in through it (code flow with PKCE).
    #[arg(long, env = "CONVO_JWT_ISSUER", requires = "jwt_audience")]
    jwt_issuer: Option<String>,
    /// Audiences accepted from --jwt-issuer, in `aud` or `client_id`
    /// (comma-separated).
    #[arg(long, env = "CONVO_JWT_AUDIENCE", value_delimiter = ',')]
    jwt_audience: Vec<String>,
    /// The console's client id at --jwt-issuer (default: the first audience).
    #[arg(long, env = "CONVO_CONSOLE_CLIENT_ID")]
    console_client_id: Option<String>,
    /// Which token the console sends the API after signing in through
    /// --jwt-issuer: id_token or access_token (only if the issuer's access
    /// tokens are JWTs).
    #[arg(long, env = "CONVO_CONSOLE_TOKEN", default_value = "id_token", value_parser = ["id_token", "access_token"])]
    console_token: String,
    /// Post every event to this URL as a signed webhook (Standard Webhooks;
    /// repeatable). The signing secret is CONVO_WEBHOOK_SECRET
    /// (whsec_<base64>), else one kept in --data-dir/webhook-secret.
    #[arg(long = "webhook-url", env = "CONVO_WEBHOOK_URLS", value_delimiter = ',')]
    webhook_urls: Vec<String>,
    /// Only these event types go to the webhooks (comma-separated; default
    /// every type).
    #[arg(long, env = "CONVO_WEBHOOK_EVENTS", value_delimiter = ',')]
    webhook_events: Vec<String>,
    /// Tries of one event (then it is parked in the dead-letter list that
    /// /health counts).
    #[arg(long, env = "CONVO_WEBHOOK_ATTEMPTS", default_value_t = 10)]
    webhook_attempts: u32,
    /// The wait after a failed try, doubled per try up to 5 minutes, with
    /// full jitter.
    #[arg(long, env = "CONVO_WEBHOOK_BACKOFF", default_value = "1s")]
    webhook_backoff: String,
    /// How long a webhook may take to answer.
    #[arg(long, env = "CONVO_WEBHOOK_TIMEOUT", default_value = "10s")]
    webhook_timeout: String,
    /// AWS mode: publish events to this EventBridge bus (name or ARN), as
    /// the publish-events function does, instead of to webhooks.
    #[arg(long, env = "CONVO_EVENT_BUS")]
    event_bus: Option<String>,
    /// Let the console sign in as any owner with one click, with no token.
    /// For development only: anyone who reaches the server can then act as
    /// any owner. Refused unless --addr is a loopback address.
    #[arg(long, env = "CONVO_DEV_SIGN_IN")]
    dev_sign_in: bool,
    /// Log format: text or json.
    #[arg(long, env = "CONVO_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[derive(Args)]
struct TokenArgs {
    /// The owner the token speaks for (the JWT `sub`).
    #[arg(long)]
    sub: String,
    /// Lifetime, e.g. 1h, 30m, 7d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Where the JWT secret lives (ignored when CONVO_JWT_SECRET is set).
    #[arg(long, env = "CONVO_DATA_DIR", default_value = "./.convo")]
    data_dir: PathBuf,
}

fn duration(flag: &str, raw: &str) -> Result<chrono::Duration, String> {
    convo_schema::validate::duration(flag, raw).map_err(|e| format!("--{flag}: {}", e.message))
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Token(t)) => token(t),
        Some(Command::Serve(s)) => serve(s),
        Some(Command::InitAws(a)) => init_aws(a),
        Some(Command::Manifest) => manifest(),
        Some(Command::Console(c)) => export_console(c),
        Some(Command::Openapi) => write_out(&convo_http::openapi::document_json()),
        None => serve(cli.serve),
    };
    if let Err(e) = result {
        eprintln!("convo-local: {e}");
        std::process::exit(1);
    }
}

fn token(args: TokenArgs) -> Result<(), String> {
    validate_owner(&args.sub)?;
    let ttl = duration("ttl", &args.ttl)?;
    let (secret, _) = auth::load_or_create_secret(&args.data_dir)?;
    write_out(&format!("{}\n", auth::mint(&secret, &args.sub, ttl.num_seconds())?))
}

/// Writes a command's output. A reader that closed the pipe early
/// (`convo-local manifest | head`) ends the output quietly: `println!`
/// would panic on the broken pipe.
fn write_out(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("cannot write the output: {e}")),
        _ => Ok(()),
    }
}

fn export_console(args: ConsoleArgs) -> Result<(), String> {
    let oidc = match (
        &args.cognito_domain,
        &args.oidc_authorize_url,
        &args.oidc_token_url,
        &args.client_id,
    ) {
        (Some(domain), _, _, Some(client)) => Some(console::Oidc {
            scope: args.scope.clone(),
            ..console::Oidc::cognito(domain, client)
        }),
        (None, Some(authorize), Some(token), Some(client)) => Some(console::Oidc {
            authorize_url: authorize.clone(),
            token_url: token.clone(),
            client_id: client.clone(),
            scope: args.scope.clone(),
            logout_url: None,
            token_field: args.token_field.clone(),
        }),
        _ => None,
    };
    let config = console::ConsoleConfig {
        api_url: args.api_url.trim_end_matches('/').to_string(),
        dev_sign_in: false,
        oidc,
        token_hint: None,
    };
    let csp = console::export(&args.out, &config)?;
    println!("{csp}");
    Ok(())
}

fn init_aws(args: InitArgs) -> Result<(), String> {
    convo_schema::validate::id("prefix", &args.prefix).map_err(|e| e.message)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let visibility = duration("visibility-timeout", &args.visibility_timeout)?.num_seconds() as u32;
    rt.block_on(aws_mode::init(&args.prefix, visibility))
}

fn manifest() -> Result<(), String> {
    use convo_aws::{AwsSettings, resources};
    // Names for the stack/prefix "{prefix}": the template names its
    // resources after the stack the same way.
    let prefix = "{prefix}";
    let routes: Vec<_> = gateway::ROUTES
        .iter()
        .map(|(method, path, function, auth)| {
            serde_json::json!({"method": method, "path": path, "function": function.package(), "auth": auth})
        })
        .collect();
    let manifest = serde_json::json!({
        "table": {"name": aws_mode::names(prefix).table, "properties": resources::table_cloudformation()},
        "keyTable": {"name": resources::keys_table_name(prefix), "properties": resources::keys_table_cloudformation()},
        "queues": {
            "writes": resources::writes_queue(prefix).cloudformation(),
            "titles": resources::titles_queue(prefix).cloudformation(),
            "events": resources::events_queue(prefix).cloudformation(),
        },
        "routes": routes,
        "environment": {"required": AwsSettings::REQUIRED_ENV, "optional": AwsSettings::OPTIONAL_ENV},
        "eventSourceBatchSize": pollers::BATCH_SIZE,
    });
    write_out(&format!(
        "{}\n",
        serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?
    ))
}

fn validate_owner(sub: &str) -> Result<(), String> {
    convo_schema::validate::id("sub", sub).map_err(|e| e.message)
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

struct Runtime {
    /// The API's and the title generator's (with the data keys).
    deps: Deps,
    /// The write worker's and the sweeper's: no key, as on Lambda.
    plain: Deps,
    writes: Arc<dyn Source>,
    titles: Arc<dyn Source>,
    events: Arc<dyn Source>,
    storage: String,
}

/// A duration as the other flags take it (90s, 30m, …), or in
/// milliseconds (250ms).
fn std_duration(flag: &str, raw: &str) -> Result<std::time::Duration, String> {
    if let Some(ms) = raw.trim().strip_suffix("ms") {
        return match ms.parse::<u64>() {
            Ok(n) if n > 0 => Ok(std::time::Duration::from_millis(n)),
            _ => Err(format!(
                "--{flag}: {raw:?} must be a positive number of milliseconds, like 250ms"
            )),
        };
    }
    duration(flag, raw)?.to_std().map_err(|e| format!("--{flag}: {e}"))
}

/// Where events go: the EventBridge bus (AWS mode), the webhooks, or
/// nowhere.
async fn publisher(args: &ServeArgs) -> Result<(Option<Arc<dyn convo_domain::ports::EventPublisher>>, String), String> {
    if let Some(bus) = &args.event_bus {
        if !args.aws {
            return Err("--event-bus needs --aws".into());
        }
        let sdk = aws_mode::sdk_config().await;
        let client = aws_sdk_eventbridge::Client::new(&sdk);
        return Ok((
            Some(Arc::new(convo_aws::EventBridgePublisher::new(
                client,
                bus.clone(),
                convo_schema::events::DEFAULT_SOURCE,
            ))),
            format!("EventBridge bus {bus}"),
        ));
    }
    if args.webhook_urls.is_empty() {
        if args.aws {
            return Ok((
                None,
                "left on the events queue (no --event-bus or --webhook-url)".into(),
            ));
        }
        return Ok((
            Some(Arc::new(convo_embedded::webhooks::Nowhere)),
            "nowhere (no --webhook-url)".into(),
        ));
    }
    for u in &args.webhook_urls {
        let parsed = url::Url::parse(u).map_err(|e| format!("--webhook-url {u:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("--webhook-url {u:?}: must be http or https"));
        }
    }
    let types = if args.webhook_events.is_empty() {
        None
    } else {
        let mut set = std::collections::HashSet::new();
        for t in &args.webhook_events {
            let parsed = convo_schema::events::EventType::parse(t.trim()).ok_or_else(|| {
                let all: Vec<&str> = convo_schema::events::EventType::ALL
                    .iter()
                    .map(|t| t.as_str())
                    .collect();
                format!("--webhook-events: unknown type {t:?} (types: {})", all.join(", "))
            })?;
            set.insert(parsed);
        }
        Some(set)
    };
    let (key, from) = webhook_secret::load_or_create_secret(&args.data_dir)?;
    let shown: Vec<String> = args
        .webhook_urls
        .iter()
        .map(|u| convo_embedded::webhooks::shown(u))
        .collect();
    Ok((
        Some(Arc::new(convo_embedded::webhooks::WebhookPublisher {
            urls: args.webhook_urls.clone(),
            key,
            types,
            timeout: std_duration("webhook-timeout", &args.webhook_timeout)?,
            client: convo_embedded::net::client()?,
        })),
        format!("webhooks {} (secret: {from})", shown.join(", ")),
    ))
}

fn config(args: &ServeArgs) -> Result<Config, String> {
    Ok(Config {
        idle_timeout: duration("idle-timeout", &args.idle_timeout)?,
        early_title_after_messages: args.early_title_after,
        appends_per_minute: args.appends_per_minute,
        redact_pii: args.redact_pii,
        read_after_wait: convo_aws::config::read_after_wait(&args.read_after_wait)
            .map_err(|e| format!("--read-after-wait: {e}"))?,
        retention: args
            .retention
            .as_deref()
            .map(|r| duration("retention", r))
            .transpose()?,
        encryption: args.encryption == "on",
        deep_health_interval: convo_schema::validate::duration_or_zero(
            "deep-health-interval",
            &args.deep_health_interval,
        )
        .map_err(|e| format!("--deep-health-interval: {}", e.message))?,
        erasure_settle: convo_schema::validate::duration_or_zero("erasure-settle", &args.erasure_settle)
            .map_err(|e| format!("--erasure-settle: {}", e.message))?,
        operators: args
            .operators
            .iter()
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect(),
        ..Config::default()
    })
}

fn embedded(args: &ServeArgs) -> Result<Runtime, String> {
    if !args.in_memory {
        // What a stop without compaction left (a crash, a kill).
        convo_embedded::compact_database(&args.data_dir)?;
    }
    let db = open_database(if args.in_memory {
        None
    } else {
        Some(Path::new(&args.data_dir))
    })?;
    let store = Arc::new(EmbeddedStore::new(db.clone())?);
    let writes = EmbeddedQueue::open(db.clone(), "writes", QueueKind::Fifo, args.max_receives)?;
    let titles = EmbeddedQueue::open(db.clone(), "titles", QueueKind::Standard, args.max_receives)?;
    let events = EmbeddedQueue::open_with(
        db,
        "events",
        QueueKind::Standard,
        args.webhook_attempts,
        convo_embedded::Backoff {
            base: std_duration("webhook-backoff", &args.webhook_backoff)?,
            cap: std::time::Duration::from_secs(300),
            jitter: true,
        },
    )?;
    let moderator = Arc::new(convo_domain::screening::moderator(args.moderation_dir.as_deref())?);
    let plain = Deps {
        store,
        writes: writes.clone(),
        titles: titles.clone(),
        events: events.clone(),
        clock: Arc::new(SystemClock),
        ids: Arc::new(UlidSource::default()),
        titler: Arc::new(ExtractiveTitler::new(moderator.clone())),
        moderator,
        metrics: Arc::new(convo_domain::ports::NoMetrics),
        keys: None,
        config: config(args)?,
    };
    // The keys are used with encryption off too: what is sealed stays
    // readable and erasable; only new conversations are stored in clear.
    let dir = (!args.in_memory).then_some(args.data_dir.as_path());
    let master = convo_embedded::keys::load_or_create_master_key(dir)?;
    let ring = convo_embedded::keys::LocalKeyRing::open(dir, master)?;
    let deps = plain.clone().sealed_with(Arc::new(ring));
    let storage = if args.in_memory {
        "in memory".to_string()
    } else {
        format!("{}", args.data_dir.join("convo.redb").display())
    };
    Ok(Runtime {
        deps,
        plain,
        writes: Arc::new(EmbeddedSource(writes, "writes")),
        titles: Arc::new(EmbeddedSource(titles, "titles")),
        events: Arc::new(EmbeddedSource(events, "events")),
        storage,
    })
}

async fn on_aws(args: &ServeArgs) -> Result<Runtime, String> {
    let sdk = aws_mode::sdk_config().await;
    let settings = aws_mode::settings(&args.prefix, config(args)?, &sdk).await?;
    let mut settings = settings;
    settings.moderation_dir = args.moderation_dir.clone();
    let mut deps = settings.deps(&sdk).map_err(|e| e.to_string())?;
    // EMF lines are for CloudWatch; locally they would only clutter stdout.
    deps.metrics = Arc::new(convo_domain::ports::NoMetrics);
    // The worker and the sweeper hold no key, as on Lambda.
    let mut plain = settings
        .deps_with(aws_sdk_dynamodb::Client::new(&sdk), aws_sdk_sqs::Client::new(&sdk))
        .map_err(|e| e.to_string())?;
    plain.metrics = Arc::new(convo_domain::ports::NoMetrics);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let retry_delay = duration("retry-delay", &args.retry_delay)?
        .to_std()
        .map_err(|e| e.to_string())?;
    let source = |url: &str| -> Arc<dyn Source> {
        Arc::new(aws_mode::SqsSource {
            client: sqs.clone(),
            url: url.to_string(),
            retry_delay,
        })
    };
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "AWS".into());
    Ok(Runtime {
        writes: source(&settings.writes_queue_url),
        titles: source(&settings.titles_queue_url),
        events: source(&settings.events_queue_url),
        storage: format!("DynamoDB table {} at {endpoint}", settings.table),
        deps,
        plain,
    })
}

fn serve(args: ServeArgs) -> Result<(), String> {
    init_tracing(&args.log_format);
    let sweep_every = duration("sweep-interval", &args.sweep_interval)?
        .to_std()
        .map_err(|e| e.to_string())?;
    if args.dev_sign_in && !args.addr.ip().is_loopback() {
        return Err(format!(
            "--dev-sign-in lets anyone act as any owner: it is refused on {} (use a loopback address)",
            args.addr
        ));
    }
    let (secret, origin) = auth::load_or_create_secret(&args.data_dir)?;
    // The token command for this data directory: its JWT secret is there.
    let token_command = if args.data_dir == Path::new("./.convo") {
        "convo-local token --sub alice".to_string()
    } else {
        format!("convo-local token --sub alice --data-dir {}", args.data_dir.display())
    };
    let mut console_config = console::ConsoleConfig {
        api_url: String::new(),
        dev_sign_in: args.dev_sign_in,
        oidc: None,
        token_hint: Some(token_command.clone()),
    };
    let dev_secret = args.dev_sign_in.then(|| secret.clone());
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let data_dir = args.data_dir.clone();
    let on_disk = !args.in_memory && !args.aws;
    let served = tokio_rt.block_on(async move {
        let rt = if args.aws {
            on_aws(&args).await?
        } else {
            embedded(&args)?
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..args.write_workers.max(1) {
            tasks.push(tokio::spawn(pollers::poll(
                rt.writes.clone(),
                rt.plain.clone(),
                |deps, event| async move { persist_writes::handle(&deps, event).await },
                stop_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(pollers::poll(
            rt.titles.clone(),
            rt.deps.clone(),
            |deps, event| async move { generate_title::handle(&deps, event).await },
            stop_rx.clone(),
        )));
        let (events_to, destination) = publisher(&args).await?;
        // In AWS mode with no bus named, the events stay on the events queue
        // for the deployment's publish-events (this process must not take
        // them off it).
        if let Some(events_to) = events_to {
            tasks.push(tokio::spawn(pollers::poll(
                rt.events.clone(),
                rt.deps.clone(),
                move |deps, event| {
                    let to = events_to.clone();
                    async move { publish_events::handle(to.as_ref(), deps.metrics.as_ref(), event).await }
                },
                stop_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(pollers::sweep_on_timer(
            rt.plain.clone(),
            sweep_every,
            stop_rx.clone(),
        )));

        let mut verifier = auth::Verifier::new(&secret);
        if let Some(issuer) = &args.jwt_issuer {
            let (v, discovery) = oidc::IssuerVerifier::discover(issuer, args.jwt_audience.clone())
                .await
                .map_err(|e| format!("--jwt-issuer: {e}"))?;
            let v = Arc::new(v);
            verifier.issuer = Some(v.clone());
            let client_id = args
                .console_client_id
                .clone()
                .or_else(|| args.jwt_audience.first().cloned())
                .unwrap_or_default();
            console_config.oidc = Some(console::Oidc {
                authorize_url: discovery.authorization_endpoint.clone(),
                token_url: discovery.token_endpoint.clone(),
                client_id,
                scope: "openid email".into(),
                logout_url: None,
                token_field: args.console_token.clone(),
            });
            console_config.validate()?;
            tracing::info!(issuer = %discovery.issuer, "accepting tokens of the issuer too");
            let mut stop = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(oidc::KEYS_REFRESH) => v.refresh().await,
                        _ = stop.changed() => break,
                    }
                }
            }));
        }
        let gw = Arc::new(gateway::Gateway {
            deps: rt.deps.clone(),
            verifier,
        });
        let app = console::router(console_config, dev_secret)
            .fallback(move |req: axum::extract::Request| gateway::serve_request(gw.clone(), req));
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let storage = rt.storage.clone();
        tracing::info!(%addr, storage = %storage, jwt_secret = origin, "convo-local listening");
        println!("convo-local listening on http://{addr} (data: {storage}; JWT secret: {origin})");
        println!("console: http://{addr}/");
        println!("events: {destination}");
        if args.dev_sign_in {
            println!("development sign-in is on: the console signs in as any owner without a token");
        }
        println!("get a token: {token_command}");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| e.to_string())?;
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    });
    // Every task, and with them every handle of the database, goes with the
    // runtime; then the file is compacted, so that nothing erased stays in
    // its freed pages (README, "Erasure").
    drop(tokio_rt);
    if served.is_ok() && on_disk {
        match convo_embedded::compact_database(&data_dir) {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not compact the database after the stop"),
        }
    }
    tracing::info!("convo-local stopped");
    served
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
