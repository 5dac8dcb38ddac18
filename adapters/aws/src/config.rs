//! Configuration from the environment, read once at cold start. A missing
//! variable is a startup error that names it.

use std::sync::Arc;

use convo_domain::titles::ExtractiveTitler;
use convo_domain::{Config, Deps, SystemClock, UlidSource};

use crate::{DynamoStore, SqsQueue, SqsQueueConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing environment variable(s): {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    #[error("environment variable {0} is invalid: {1}")]
    Invalid(&'static str, String),
}

/// Where convo's resources are, and its tunables.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub table: String,
    pub writes_queue_url: String,
    pub titles_queue_url: String,
    pub events_queue_url: String,
    pub writes_dlq_url: Option<String>,
    pub titles_dlq_url: Option<String>,
    pub events_dlq_url: Option<String>,
    /// `CONVO_MODERATION_DIR`: word lists replacing the built-in ones.
    pub moderation_dir: Option<std::path::PathBuf>,
    /// `CONVO_KEYS_TABLE`: the data keys' table (issue 16).
    pub keys_table: String,
    /// `CONVO_KMS_KEY_ID`: the KMS key the data keys are made under.
    pub kms_key_id: String,
    pub config: Config,
}

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The wait of `after=` reads: a duration such as `2s`, at most
/// [`convo_domain::deps::MAX_READ_AFTER_WAIT_SECONDS`] (the API functions
/// answer within 10 s).
pub fn read_after_wait(raw: &str) -> Result<chrono::Duration, String> {
    let wait = convo_schema::validate::duration("readAfterWait", raw).map_err(|e| e.message)?;
    if wait > chrono::Duration::seconds(convo_domain::deps::MAX_READ_AFTER_WAIT_SECONDS) {
        return Err(format!("at most {}s", convo_domain::deps::MAX_READ_AFTER_WAIT_SECONDS));
    }
    Ok(wait)
}

impl AwsSettings {
    /// The variables every function needs.
    pub const REQUIRED_ENV: [&'static str; 6] = [
        "CONVO_TABLE",
        "CONVO_WRITES_QUEUE_URL",
        "CONVO_TITLES_QUEUE_URL",
        "CONVO_EVENTS_QUEUE_URL",
        "CONVO_KEYS_TABLE",
        "CONVO_KMS_KEY_ID",
    ];
    /// The variables a function may set; anything else named `CONVO_*` is
    /// not read.
    pub const OPTIONAL_ENV: [&'static str; 14] = [
        "CONVO_ENCRYPTION",
        "CONVO_WRITES_DLQ_URL",
        "CONVO_TITLES_DLQ_URL",
        "CONVO_EVENTS_DLQ_URL",
        "CONVO_IDLE_TIMEOUT",
        "CONVO_EARLY_TITLE_AFTER",
        "CONVO_APPENDS_PER_MINUTE",
        "CONVO_RETENTION",
        "CONVO_REDACT_PII",
        "CONVO_MODERATION_DIR",
        "CONVO_READ_AFTER_WAIT",
        "CONVO_OPERATORS",
        "CONVO_DEEP_HEALTH_INTERVAL",
        "CONVO_ERASURE_SETTLE",
    ];

    /// Reads `CONVO_TABLE`, `CONVO_WRITES_QUEUE_URL`, `CONVO_TITLES_QUEUE_URL`,
    /// `CONVO_EVENTS_QUEUE_URL` (required), `CONVO_WRITES_DLQ_URL`,
    /// `CONVO_TITLES_DLQ_URL`, `CONVO_EVENTS_DLQ_URL` (for
    /// `/health`), `CONVO_IDLE_TIMEOUT` (default 30m) and
    /// `CONVO_EARLY_TITLE_AFTER` (default 6) and `CONVO_APPENDS_PER_MINUTE`
    /// (default 30; 0 turns the limit off) and `CONVO_RETENTION` (e.g.
    /// `365d`; unset keeps conversations until erased) and
    /// `CONVO_READ_AFTER_WAIT` (default 2s: how long a read with `after=`
    /// waits for its write), `CONVO_KEYS_TABLE` and `CONVO_KMS_KEY_ID`
    /// (required: the data keys' table and KMS key) and `CONVO_ENCRYPTION`
    /// (`on` by default, or `off`) and `CONVO_OPERATORS` (the token subs,
    /// comma-separated, that may read `GET /health/deep`; unset: nobody) and
    /// `CONVO_DEEP_HEALTH_INTERVAL` (default 2s: how long one deep-health
    /// answer is reused) and `CONVO_ERASURE_SETTLE` (default 5s: how long an
    /// erasure waits for the user index to settle before its last pass).
    pub fn from_env() -> Result<Self, ConfigError> {
        let missing: Vec<&'static str> = Self::REQUIRED_ENV.into_iter().filter(|n| var(n).is_none()).collect();
        if !missing.is_empty() {
            return Err(ConfigError::Missing(missing));
        }
        let mut config = Config::default();
        if let Some(raw) = var("CONVO_IDLE_TIMEOUT") {
            config.idle_timeout = convo_schema::validate::duration("CONVO_IDLE_TIMEOUT", &raw)
                .map_err(|e| ConfigError::Invalid("CONVO_IDLE_TIMEOUT", e.message))?;
        }
        if let Some(raw) = var("CONVO_EARLY_TITLE_AFTER") {
            config.early_title_after_messages = raw
                .parse()
                .map_err(|_| ConfigError::Invalid("CONVO_EARLY_TITLE_AFTER", "expected a whole number".into()))?;
        }
        if let Some(raw) = var("CONVO_REDACT_PII") {
            config.redact_pii = match raw.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ConfigError::Invalid(
                        "CONVO_REDACT_PII",
                        "expected true or false".into(),
                    ));
                }
            };
        }
        if let Some(raw) = var("CONVO_RETENTION") {
            config.retention = Some(
                convo_schema::validate::duration("CONVO_RETENTION", &raw)
                    .map_err(|e| ConfigError::Invalid("CONVO_RETENTION", e.message))?,
            );
        }
        if let Some(raw) = var("CONVO_READ_AFTER_WAIT") {
            config.read_after_wait =
                read_after_wait(&raw).map_err(|e| ConfigError::Invalid("CONVO_READ_AFTER_WAIT", e))?;
        }
        if let Some(raw) = var("CONVO_APPENDS_PER_MINUTE") {
            config.appends_per_minute = raw
                .parse()
                .map_err(|_| ConfigError::Invalid("CONVO_APPENDS_PER_MINUTE", "expected a whole number".into()))?;
        }
        if let Some(raw) = var("CONVO_DEEP_HEALTH_INTERVAL") {
            config.deep_health_interval = convo_schema::validate::duration_or_zero("CONVO_DEEP_HEALTH_INTERVAL", &raw)
                .map_err(|e| ConfigError::Invalid("CONVO_DEEP_HEALTH_INTERVAL", e.message))?;
        }
        if let Some(raw) = var("CONVO_ERASURE_SETTLE") {
            config.erasure_settle = convo_schema::validate::duration_or_zero("CONVO_ERASURE_SETTLE", &raw)
                .map_err(|e| ConfigError::Invalid("CONVO_ERASURE_SETTLE", e.message))?;
        }
        if let Some(raw) = var("CONVO_OPERATORS") {
            config.operators = raw
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect();
        }
        let encryption = match var("CONVO_ENCRYPTION").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(_) => return Err(ConfigError::Invalid("CONVO_ENCRYPTION", "expected on or off".into())),
        };
        Ok(Self {
            keys_table: var("CONVO_KEYS_TABLE").unwrap_or_default(),
            kms_key_id: var("CONVO_KMS_KEY_ID").unwrap_or_default(),
            table: var("CONVO_TABLE").unwrap_or_default(),
            writes_queue_url: var("CONVO_WRITES_QUEUE_URL").unwrap_or_default(),
            titles_queue_url: var("CONVO_TITLES_QUEUE_URL").unwrap_or_default(),
            events_queue_url: var("CONVO_EVENTS_QUEUE_URL").unwrap_or_default(),
            writes_dlq_url: var("CONVO_WRITES_DLQ_URL"),
            titles_dlq_url: var("CONVO_TITLES_DLQ_URL"),
            events_dlq_url: var("CONVO_EVENTS_DLQ_URL"),
            moderation_dir: var("CONVO_MODERATION_DIR").map(Into::into),
            config: Config { encryption, ..config },
        })
    }

    /// Builds the handlers' dependencies on DynamoDB, SQS and KMS (the data
    /// keys: used with encryption off too, for what is already sealed and
    /// for erasures). Clients are built here, once per process, and shared
    /// by every invocation.
    pub fn deps(&self, sdk: &aws_config::SdkConfig) -> Result<convo_domain::ApiDeps, ConfigError> {
        let dynamo = aws_sdk_dynamodb::Client::new(sdk);
        let deps = self.deps_with(dynamo.clone(), aws_sdk_sqs::Client::new(sdk))?;
        Ok(deps.sealed_with(self.key_ring(dynamo, aws_sdk_kms::Client::new(sdk))))
    }

    /// The data keys' ring.
    pub fn key_ring(
        &self,
        dynamo: aws_sdk_dynamodb::Client,
        kms: aws_sdk_kms::Client,
    ) -> Arc<dyn convo_domain::ports::KeyRing> {
        Arc::new(crate::KmsKeyRing::new(dynamo, &self.keys_table, kms, &self.kms_key_id))
    }

    /// As [`AwsSettings::deps`], on clients built by the caller (the
    /// benchmarks add an interceptor that records every request).
    pub fn deps_with(&self, dynamo: aws_sdk_dynamodb::Client, sqs: aws_sdk_sqs::Client) -> Result<Deps, ConfigError> {
        let moderator = Arc::new(
            convo_domain::screening::moderator(self.moderation_dir.as_deref())
                .map_err(|e| ConfigError::Invalid("CONVO_MODERATION_DIR", e))?,
        );
        Ok(Deps {
            store: convo_domain::deps::Stores::new(Arc::new(DynamoStore::new(dynamo, &self.table))),
            writes: Arc::new(SqsQueue::new(
                sqs.clone(),
                SqsQueueConfig {
                    name: "writes".into(),
                    url: self.writes_queue_url.clone(),
                    dlq_url: self.writes_dlq_url.clone(),
                    fifo: true,
                },
            )),
            titles: Arc::new(SqsQueue::new(
                sqs.clone(),
                SqsQueueConfig {
                    name: "titles".into(),
                    url: self.titles_queue_url.clone(),
                    dlq_url: self.titles_dlq_url.clone(),
                    fifo: false,
                },
            )),
            events: Arc::new(SqsQueue::new(
                sqs,
                SqsQueueConfig {
                    name: "events".into(),
                    url: self.events_queue_url.clone(),
                    dlq_url: self.events_dlq_url.clone(),
                    fifo: false,
                },
            )),
            clock: Arc::new(SystemClock),
            ids: Arc::new(UlidSource::default()),
            titler: Arc::new(ExtractiveTitler::new(moderator.clone())),
            moderator,
            metrics: Arc::new(crate::metrics::EmfMetrics),
            config: self.config.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::AwsSettings;

    /// The published lists (which the SAM template is checked against) name
    /// exactly the variables this file reads.
    #[test]
    fn env_lists_name_every_variable_read() {
        let source = include_str!("config.rs");
        let code = &source[..source.find("#[cfg(test)]").expect("test module")];
        let mut read: Vec<&str> = code
            .match_indices("\"CONVO_")
            .map(|(i, _)| {
                let rest = &code[i + 1..];
                &rest[..rest.find('"').expect("closing quote")]
            })
            .collect();
        read.sort();
        read.dedup();
        let mut listed: Vec<&str> = AwsSettings::REQUIRED_ENV
            .iter()
            .chain(AwsSettings::OPTIONAL_ENV.iter())
            .copied()
            .collect();
        listed.sort();
        assert_eq!(read, listed);
    }
}
