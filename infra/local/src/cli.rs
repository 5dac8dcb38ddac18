//! The command line: its subcommands and their flags (each with its
//! environment variable).

use super::*;

#[derive(Parser)]
#[command(name = "convo-local", version, about = "Run convo on one machine, no AWS needed")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
}

#[derive(Subcommand)]
// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
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
pub(crate) struct InitArgs {
    /// Name prefix of the table and queues.
    #[arg(long, env = "CONVO_PREFIX", default_value = "convo")]
    pub(crate) prefix: String,
    /// Visibility timeout of the queues (on Lambda: 6 × the worker's
    /// timeout). A short one brings records held by a killed local server
    /// back sooner.
    #[arg(long, default_value = "180s")]
    pub(crate) visibility_timeout: String,
}

#[derive(Args)]
pub(crate) struct ConsoleArgs {
    /// The directory to write (index.html, console/…).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// The API's base URL (the stack's ApiUrl output).
    #[arg(long)]
    pub(crate) api_url: String,
    /// Sign-in through a Cognito user pool's hosted UI at this domain
    /// (https://<prefix>.auth.<region>.amazoncognito.com; the stack's
    /// ConsoleSignInDomain output), with --client-id.
    #[arg(long, requires = "client_id")]
    pub(crate) cognito_domain: Option<String>,
    /// Sign-in through another OpenID Connect provider: its authorization
    /// endpoint (with --oidc-token-url and --client-id).
    #[arg(long, requires_all = ["oidc_token_url", "client_id"], conflicts_with = "cognito_domain")]
    pub(crate) oidc_authorize_url: Option<String>,
    /// The provider's token endpoint.
    #[arg(long, requires = "oidc_authorize_url")]
    pub(crate) oidc_token_url: Option<String>,
    /// The app client the console signs in as (a public client: no secret).
    #[arg(long)]
    pub(crate) client_id: Option<String>,
    /// Scopes asked for.
    #[arg(long, default_value = "openid email")]
    pub(crate) scope: String,
    /// With --oidc-authorize-url: the token of the answer the API gets,
    /// id_token (a JWT for the client, whatever the provider) or
    /// access_token (when the provider issues JWT access tokens). Cognito:
    /// always access_token.
    #[arg(long, default_value = "id_token", value_parser = ["id_token", "access_token"])]
    pub(crate) token_field: String,
}

#[derive(Args, Clone)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CONVO_ADDR", default_value = "127.0.0.1:3000")]
    pub(crate) addr: SocketAddr,
    /// Where the database and the JWT secret live.
    #[arg(long, env = "CONVO_DATA_DIR", default_value = "./.convo")]
    pub(crate) data_dir: PathBuf,
    /// Keep conversations in memory only (the JWT secret still lives in --data-dir).
    #[arg(long, env = "CONVO_IN_MEMORY")]
    pub(crate) in_memory: bool,
    /// End sessions idle for longer than this (e.g. 30m, 2h).
    #[arg(long, env = "CONVO_IDLE_TIMEOUT", default_value = "30m")]
    pub(crate) idle_timeout: String,
    /// How often the sweeper looks for idle sessions.
    #[arg(long, env = "CONVO_SWEEP_INTERVAL", default_value = "60s")]
    pub(crate) sweep_interval: String,
    /// Request a title once a conversation holds this many messages.
    #[arg(long, env = "CONVO_EARLY_TITLE_AFTER", default_value_t = 6)]
    pub(crate) early_title_after: u64,
    /// Keep conversations this long (e.g. 365d) unless one asks otherwise;
    /// unset keeps them until erased.
    #[arg(long, env = "CONVO_RETENTION")]
    pub(crate) retention: Option<String>,
    /// A directory of word lists (`<category>.txt`) replacing the built-in ones.
    #[arg(long, env = "CONVO_MODERATION_DIR")]
    pub(crate) moderation_dir: Option<PathBuf>,
    /// Mask personal data in stored content unless a conversation says otherwise.
    #[arg(long, env = "CONVO_REDACT_PII")]
    pub(crate) redact_pii: bool,
    /// Seal what people write under per-user data keys (`on` or `off`). The
    /// key-wrapping key comes from CONVO_MASTER_KEY, else <data-dir>/master-key
    /// (made on first run, mode 0600); the wrapped keys live in <data-dir>/keys.
    #[arg(long, env = "CONVO_ENCRYPTION", default_value = "on", value_parser = ["on", "off"])]
    pub(crate) encryption: String,
    /// Appends per conversation per minute before 429; 0 turns it off.
    #[arg(long, env = "CONVO_APPENDS_PER_MINUTE", default_value_t = 30)]
    pub(crate) appends_per_minute: u64,
    /// How long a read with `after=<commandId>` waits for that write (at most 8s).
    #[arg(long, env = "CONVO_READ_AFTER_WAIT", default_value = "2s")]
    pub(crate) read_after_wait: String,
    /// Owners (token subs, comma-separated) whose tokens may read
    /// GET /health/deep: every tenant's counts and the queues' figures.
    #[arg(long, env = "CONVO_OPERATORS", value_delimiter = ',')]
    pub(crate) operators: Vec<String>,
    /// How long one GET /health/deep answer is reused (0s: never).
    #[arg(long, env = "CONVO_DEEP_HEALTH_INTERVAL", default_value = "2s")]
    pub(crate) deep_health_interval: String,
    /// How long an erasure waits for a lagging user index (the DynamoDB
    /// store's) to settle before its last pass (0s: no wait).
    #[arg(long, env = "CONVO_ERASURE_SETTLE", default_value = "5s")]
    pub(crate) erasure_settle: String,
    /// Receives before a failing queue message is parked as a dead letter.
    #[arg(long, env = "CONVO_MAX_RECEIVES", default_value_t = 5)]
    pub(crate) max_receives: u32,
    /// Concurrent pollers of the writes queue (Lambda's maximum concurrency).
    #[arg(long, env = "CONVO_WRITE_WORKERS", default_value_t = 4)]
    pub(crate) write_workers: usize,
    /// Run on DynamoDB and SQS (AWS_ENDPOINT_URL, e.g. moto, or real AWS)
    /// instead of the embedded store and queues.
    #[arg(long, env = "CONVO_AWS")]
    pub(crate) aws: bool,
    /// AWS mode: name prefix of the table and queues (see `init-aws`);
    /// CONVO_TABLE and the CONVO_*_QUEUE_URL variables win when set.
    #[arg(long, env = "CONVO_PREFIX", default_value = "convo")]
    pub(crate) prefix: String,
    /// AWS mode: how long a failed record stays invisible before redelivery.
    #[arg(long, env = "CONVO_RETRY_DELAY", default_value = "2s")]
    pub(crate) retry_delay: String,
    /// Also accept tokens from this OpenID Connect issuer, verified as the
    /// deployed API's JWT authorizer does (keys from
    /// {issuer}/.well-known/openid-configuration), and let the console
    /// sign in through it (code flow with PKCE).
    #[arg(long, env = "CONVO_JWT_ISSUER", requires = "jwt_audience")]
    pub(crate) jwt_issuer: Option<String>,
    /// Audiences accepted from --jwt-issuer, in `aud` or `client_id`
    /// (comma-separated).
    #[arg(long, env = "CONVO_JWT_AUDIENCE", value_delimiter = ',')]
    pub(crate) jwt_audience: Vec<String>,
    /// The console's client id at --jwt-issuer (default: the first audience).
    #[arg(long, env = "CONVO_CONSOLE_CLIENT_ID")]
    pub(crate) console_client_id: Option<String>,
    /// Which token the console sends the API after signing in through
    /// --jwt-issuer: id_token or access_token (only if the issuer's access
    /// tokens are JWTs).
    #[arg(long, env = "CONVO_CONSOLE_TOKEN", default_value = "id_token", value_parser = ["id_token", "access_token"])]
    pub(crate) console_token: String,
    /// Post every event to this URL as a signed webhook (Standard Webhooks;
    /// repeatable). The signing secret is CONVO_WEBHOOK_SECRET
    /// (whsec_<base64>), else one kept in --data-dir/webhook-secret.
    #[arg(long = "webhook-url", env = "CONVO_WEBHOOK_URLS", value_delimiter = ',')]
    pub(crate) webhook_urls: Vec<String>,
    /// Only these event types go to the webhooks (comma-separated; default
    /// every type).
    #[arg(long, env = "CONVO_WEBHOOK_EVENTS", value_delimiter = ',')]
    pub(crate) webhook_events: Vec<String>,
    /// Tries of one event (then it is parked in the dead-letter list that
    /// /health counts).
    #[arg(long, env = "CONVO_WEBHOOK_ATTEMPTS", default_value_t = 10)]
    pub(crate) webhook_attempts: u32,
    /// The wait after a failed try, doubled per try up to 5 minutes, with
    /// full jitter.
    #[arg(long, env = "CONVO_WEBHOOK_BACKOFF", default_value = "1s")]
    pub(crate) webhook_backoff: String,
    /// How long a webhook may take to answer.
    #[arg(long, env = "CONVO_WEBHOOK_TIMEOUT", default_value = "10s")]
    pub(crate) webhook_timeout: String,
    /// AWS mode: publish events to this EventBridge bus (name or ARN), as
    /// the publish-events function does, instead of to webhooks.
    #[arg(long, env = "CONVO_EVENT_BUS")]
    pub(crate) event_bus: Option<String>,
    /// Let the console sign in as any owner with one click, with no token.
    /// For development only: anyone who reaches the server can then act as
    /// any owner. Refused unless --addr is a loopback address.
    #[arg(long, env = "CONVO_DEV_SIGN_IN")]
    pub(crate) dev_sign_in: bool,
    /// Origins a browser app may call the API from (repeatable, or comma
    /// separated; `*` for any), besides this machine's own pages
    /// (`http://localhost`, `http://127.0.0.1`, `http://[::1]`, any port),
    /// which may always.
    #[arg(long, env = "CONVO_CORS_ORIGINS")]
    pub(crate) cors_origin: Vec<String>,
    /// Log format: text or json.
    #[arg(long, env = "CONVO_LOG_FORMAT", default_value = "text")]
    pub(crate) log_format: String,
}

#[derive(Args)]
pub(crate) struct TokenArgs {
    /// The owner the token speaks for (the JWT `sub`).
    #[arg(long)]
    pub(crate) sub: String,
    /// Lifetime, e.g. 1h, 30m, 7d.
    #[arg(long, default_value = "1h")]
    pub(crate) ttl: String,
    /// Where the JWT secret lives (ignored when CONVO_JWT_SECRET is set).
    #[arg(long, env = "CONVO_DATA_DIR", default_value = "./.convo")]
    pub(crate) data_dir: PathBuf,
}
