//! What `serve` runs on: the configuration from the flags, and the
//! dependencies and queues of the embedded or the AWS mode.

use super::*;

pub(crate) struct Runtime {
    /// The API's and the title generator's (with the data keys).
    pub(crate) deps: convo_domain::ApiDeps,
    /// The write worker's and the sweeper's: no key, as on Lambda.
    pub(crate) plain: Deps,
    pub(crate) writes: Arc<dyn Source>,
    pub(crate) titles: Arc<dyn Source>,
    pub(crate) events: Arc<dyn Source>,
    pub(crate) storage: String,
}

/// A duration as the other flags take it (90s, 30m, …), or in
/// milliseconds (250ms).
pub(crate) fn std_duration(flag: &str, raw: &str) -> Result<std::time::Duration, String> {
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
pub(crate) async fn publisher(
    args: &ServeArgs,
) -> Result<(Option<Arc<dyn convo_domain::ports::EventPublisher>>, String), String> {
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

pub(crate) fn config(args: &ServeArgs) -> Result<Config, String> {
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

pub(crate) fn embedded(args: &ServeArgs) -> Result<Runtime, String> {
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
        store: convo_domain::deps::Stores::new(store),
        writes: writes.clone(),
        titles: titles.clone(),
        events: events.clone(),
        clock: Arc::new(SystemClock),
        ids: Arc::new(UlidSource::default()),
        titler: Arc::new(ExtractiveTitler::new(moderator.clone())),
        moderator,
        metrics: Arc::new(convo_domain::ports::NoMetrics),
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

pub(crate) async fn on_aws(args: &ServeArgs) -> Result<Runtime, String> {
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
