//! Everything a handler needs, built once per process and shared.

use std::sync::Arc;

use chrono::Duration;

use crate::ports::*;

/// The longest `after=` wait a deployment may configure: the API functions
/// answer within 10 s.
pub const MAX_READ_AFTER_WAIT_SECONDS: i64 = 8;

/// Tunables, with the defaults documented in the README.
#[derive(Debug, Clone)]
pub struct Config {
    /// A session idle for longer is ended by the sweeper.
    pub idle_timeout: Duration,
    /// A title is requested once a conversation holds this many messages
    /// and has none yet (the "first few exchanges").
    pub early_title_after_messages: u64,
    /// How long an Idempotency-Key is remembered.
    pub idempotency_ttl: Duration,
    /// Appends per conversation per minute (counted by the worker in the
    /// head); 0 turns the limit off.
    pub appends_per_minute: u64,
    /// How long conversations are kept unless they ask otherwise; `None`
    /// keeps them until erased.
    pub retention: Option<Duration>,
    /// Mask personal data in stored content unless a conversation says
    /// otherwise.
    pub redact_pii: bool,
    /// How long a read with `after=<commandId>` waits for that write.
    pub read_after_wait: Duration,
    /// New conversations get a data key and are sealed (issue 16). Off, new
    /// conversations are stored in clear; what is sealed stays readable
    /// (and erasable) with the keys, which are still used.
    pub encryption: bool,
    /// The owners (token `sub`s) who may read the deep health
    /// (`GET /health/deep`: every tenant's counts and the queues' figures).
    /// Empty: nobody.
    pub operators: Vec<String>,
    /// How long one deep-health answer is reused, however many operators
    /// ask (the store and the queues are asked at most once per interval).
    pub deep_health_interval: Duration,
    /// How long an erasure waits for a lagging user index (DynamoDB's
    /// global secondary index) to settle before the second pass that must
    /// find nothing (the embedded store's index never lags; it ends on the
    /// first clean pass).
    pub erasure_settle: Duration,
    /// Active sessions one sweep examines; the next run resumes after the
    /// last one, so every session is examined within a few runs however
    /// many long-lived ones are ahead of it.
    pub sweep_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::minutes(30),
            early_title_after_messages: 6,
            idempotency_ttl: Duration::hours(24),
            // The seed service's default (its production ran 50).
            appends_per_minute: 30,
            retention: None,
            redact_pii: false,
            read_after_wait: Duration::seconds(2),
            encryption: true,
            operators: Vec::new(),
            deep_health_interval: Duration::seconds(2),
            erasure_settle: Duration::seconds(5),
            sweep_limit: 5_000,
        }
    }
}

/// The store, by role (see [`ConversationStore`]): each part of the
/// domain uses the roles it names. With field-level encryption, the three
/// roles that carry personal data (conversations, the message log, the
/// lists) are the sealing decorator's; the others are the store itself.
#[derive(Clone)]
pub struct Stores {
    pub conversations: Arc<dyn Conversations>,
    pub messages: Arc<dyn MessageLog>,
    pub lists: Arc<dyn ConversationLists>,
    pub totals: Arc<dyn UserTotals>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub sessions: Arc<dyn SessionIndex>,
    pub erasures: Arc<dyn ErasureJobs>,
    pub health: Arc<dyn StoreHealth>,
}

impl Stores {
    /// Every role played by one store.
    pub fn new(store: Arc<dyn ConversationStore>) -> Self {
        Self {
            conversations: store.clone(),
            messages: store.clone(),
            lists: store.clone(),
            totals: store.clone(),
            idempotency: store.clone(),
            sessions: store.clone(),
            erasures: store.clone(),
            health: store,
        }
    }

    /// These roles with the personal ones sealed and opened with `keys`.
    pub fn sealed_with(mut self, keys: Arc<dyn KeyRing>) -> Self {
        let sealed = Arc::new(crate::sealing::SealedStore::new(
            self.conversations.clone(),
            self.messages.clone(),
            self.lists.clone(),
            keys,
        ));
        self.conversations = sealed.clone();
        self.messages = sealed.clone();
        self.lists = sealed;
        self
    }
}

#[derive(Clone)]
pub struct Deps {
    pub store: Stores,
    pub writes: Arc<dyn WriteQueue>,
    pub titles: Arc<dyn TitleQueue>,
    pub events: Arc<dyn EventQueue>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
    pub moderator: Arc<dyn Moderator>,
    pub titler: Arc<dyn TitleGenerator>,
    pub metrics: Arc<dyn Metrics>,
    /// The data keys (issue 16); `None` with encryption off, and for the
    /// functions that never see clear text (the worker, the sweeper, the
    /// end of a session), whose store is then the plain one.
    pub keys: Option<Arc<dyn KeyRing>>,
    pub config: Config,
}

impl Deps {
    /// These dependencies with field-level encryption: the personal roles
    /// of the store seal what they are given and open what they read with
    /// `keys`, and new conversations get a data key.
    pub fn sealed_with(mut self, keys: Arc<dyn KeyRing>) -> Self {
        self.store = self.store.sealed_with(keys.clone());
        self.keys = Some(keys);
        self
    }
}

/// The system clock.
pub struct SystemClock;

impl crate::ports::Clock for SystemClock {
    fn now(&self) -> convo_schema::Timestamp {
        // Millisecond precision, as stored and serialized.
        let now = chrono::Utc::now();
        chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
    }
}

/// ULIDs, monotonic within one process.
pub struct UlidSource(std::sync::Mutex<ulid::Generator>);

impl Default for UlidSource {
    fn default() -> Self {
        Self(std::sync::Mutex::new(ulid::Generator::new()))
    }
}

impl crate::ports::IdSource for UlidSource {
    fn new_id(&self) -> String {
        let mut generator = self.0.lock().unwrap_or_else(|p| p.into_inner());
        generator.generate().unwrap_or_else(|_| ulid::Ulid::new()).to_string()
    }
}
