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

/// What every function is given: the store by role, the queues, the clock
/// and ids, the moderator and titler, metrics and tunables. It holds no
/// key ring: with it alone a function sees sealed fields as they are
/// stored and cannot open them (the write worker, the sweeper, the end of
/// a session, which never need clear text). The functions that serve or
/// accept content are given [`ApiDeps`].
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
    pub config: Config,
}

impl Deps {
    /// These dependencies with field-level encryption: the personal roles
    /// of the store seal what they are given and open what they read with
    /// `keys`, and new conversations get a data key.
    pub fn sealed_with(self, keys: Arc<dyn KeyRing>) -> ApiDeps {
        let mut deps = self;
        deps.store = deps.store.sealed_with(keys.clone());
        ApiDeps { deps, keys }
    }
}

/// The dependencies of the functions that serve or accept content (the
/// API's and the title generator): [`Deps`] whose personal store roles
/// are sealed, and the data keys (issue 16), used with encryption off too
/// for what is already sealed. A use case that reads or writes content
/// takes this type, so a keyless function cannot call it: the compiler
/// keeps the worker, the sweeper and the end of a session away from clear
/// text.
///
/// ```compile_fail
/// async fn keyless(deps: &convo_domain::Deps) {
///     // The worker's dependencies cannot read a conversation's content.
///     let _ = convo_domain::service::get_conversation(deps, "owner", "id").await;
/// }
/// ```
///
/// while the same call with the API's dependencies compiles, and the keyless
/// end of a session takes either:
///
/// ```no_run
/// async fn keyed(deps: &convo_domain::ApiDeps, worker: &convo_domain::Deps) {
///     let _ = convo_domain::service::get_conversation(deps, "owner", "id").await;
///     let _ = convo_domain::service::end_session(worker, "owner", "id", None).await;
///     let _ = convo_domain::service::end_session(deps, "owner", "id", None).await;
/// }
/// ```
#[derive(Clone)]
pub struct ApiDeps {
    pub deps: Deps,
    pub keys: Arc<dyn KeyRing>,
}

impl std::ops::Deref for ApiDeps {
    type Target = Deps;

    fn deref(&self) -> &Deps {
        &self.deps
    }
}

impl std::ops::DerefMut for ApiDeps {
    fn deref_mut(&mut self) -> &mut Deps {
        &mut self.deps
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
