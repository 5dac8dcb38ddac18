//! The world the store contract suite runs in: a store under test (the
//! embedded one in memory, or DynamoDB at `AWS_ENDPOINT_URL`, a moto server
//! in `tests/run`), embedded queues, a clock the test moves, and helpers
//! that play the part of Lambda's event source mapping.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeZone;
use convo_aws::DynamoStore;
use convo_domain::moderation::RuleModerator;
use convo_domain::persist::{BatchOutcome, Delivery, persist_batch};
use convo_domain::ports::*;
use convo_domain::titles::{ExtractiveTitler, generate_title};
use convo_domain::{Config, Deps, UlidSource};
use convo_embedded::{EmbeddedQueue, EmbeddedStore, QueueKind, open_database};
use convo_schema::commands::TitleJob;
use convo_schema::{Conversation, Message, Timestamp, UserStats};

pub struct TestClock(Mutex<Timestamp>);

impl TestClock {
    pub fn advance(&self, d: chrono::Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

/// Which store implementation a test runs against.
#[derive(Debug, Clone, Copy)]
pub enum StoreKind {
    Embedded,
    DynamoDb,
}

pub struct World {
    /// The API's and the title generator's: the store seals and opens with
    /// the data keys (issue 16: the suite runs with encryption on).
    pub deps: convo_domain::ApiDeps,
    /// The write worker's, as on Lambda: the plain store and no key (it
    /// stores what the API sealed without opening it).
    pub worker: Deps,
    /// The store under test, seen through the data keys (what a reader
    /// gets); `raw` is the same store as it holds the data.
    pub store: convo_domain::deps::Stores,
    pub raw: Arc<dyn ConversationStore>,
    pub keys: Arc<dyn KeyRing>,
    /// The concrete store, for looking under the port (erasure tests).
    pub embedded: Option<Arc<EmbeddedStore>>,
    pub dynamo: Option<DynamoStore>,
    pub faulty: Arc<FaultyStore>,
    pub writes: Arc<EmbeddedQueue>,
    pub titles: Arc<EmbeddedQueue>,
    pub events: Arc<EmbeddedQueue>,
    pub clock: Arc<TestClock>,
}

/// A DynamoDB client for the endpoint in the environment (`tests/run` starts
/// moto and exports `AWS_ENDPOINT_URL`); a missing endpoint fails the test
/// rather than skipping it.
pub async fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: run the suite through ./tests/run, which starts moto"
    );
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    aws_sdk_dynamodb::Client::new(&sdk)
}

/// A new table with convo's definition, named uniquely for one test.
pub async fn fresh_dynamo_store() -> DynamoStore {
    let client = dynamodb_client().await;
    let table = format!("convo-test-{}", ulid::Ulid::new().to_string().to_lowercase());
    convo_aws::resources::create_table(&client, &table).await.unwrap();
    DynamoStore::new(client, &table)
}

pub async fn world(kind: StoreKind, config: Config) -> World {
    let db = open_database(None).unwrap();
    let (store, embedded, dynamo): (Arc<dyn ConversationStore>, _, _) = match kind {
        StoreKind::Embedded => {
            let s = Arc::new(EmbeddedStore::new(db.clone()).unwrap());
            (s.clone(), Some(s), None)
        }
        StoreKind::DynamoDb => {
            let s = fresh_dynamo_store().await;
            (Arc::new(s.clone()), None, Some(s))
        }
    };
    let faulty = Arc::new(FaultyStore::new(store.clone()));
    let writes = EmbeddedQueue::open(db.clone(), "writes", QueueKind::Fifo, 3).unwrap();
    let titles = EmbeddedQueue::open(db.clone(), "titles", QueueKind::Standard, 3).unwrap();
    let events = EmbeddedQueue::open(db, "events", QueueKind::Standard, 3).unwrap();
    let clock = Arc::new(TestClock(Mutex::new(
        chrono::Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap(),
    )));
    let moderator = Arc::new(RuleModerator::default());
    let keys: Arc<dyn KeyRing> = Arc::new(
        convo_embedded::keys::LocalKeyRing::open(None, convo_domain::crypto::DataKey::generate().unwrap().0).unwrap(),
    );
    let worker = Deps {
        store: convo_domain::deps::Stores::new(faulty.clone()),
        writes: writes.clone(),
        titles: titles.clone(),
        events: events.clone(),
        clock: clock.clone(),
        ids: Arc::new(UlidSource::default()),
        titler: Arc::new(ExtractiveTitler::new(moderator.clone())),
        moderator,
        metrics: Arc::new(convo_domain::ports::NoMetrics),
        config,
    };
    let deps = worker.clone().sealed_with(keys.clone());
    World {
        deps,
        worker,
        store: convo_domain::deps::Stores::new(store.clone()).sealed_with(keys.clone()),
        raw: store,
        keys,
        embedded,
        dynamo,
        faulty,
        writes,
        titles,
        events,
        clock,
    }
}

/// Instantiates each case once per store: `embedded::case` and
/// `dynamodb::case`. A case is `async fn case(w: World)`; `case(config)`
/// gives it a non-default [`Config`].
#[macro_export]
macro_rules! contract {
    ($($case:ident $(($config:expr))?),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $case() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut config = convo_domain::Config { appends_per_minute: 0, erasure_settle: chrono::Duration::milliseconds(50), ..Default::default() };
                    $( config = $config; )?
                    super::$case(convo_contract_tests::world(convo_contract_tests::StoreKind::Embedded, config).await).await
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut config = convo_domain::Config { appends_per_minute: 0, erasure_settle: chrono::Duration::milliseconds(50), ..Default::default() };
                    $( config = $config; )?
                    super::$case(convo_contract_tests::world(convo_contract_tests::StoreKind::DynamoDb, config).await).await
                }
            )*
        }
    };
}

impl World {
    /// Receives one batch from the writes queue and runs the worker on it,
    /// settling records as Lambda's event source mapping would.
    pub async fn persist_once(&self) -> Option<(Vec<String>, BatchOutcome)> {
        let batch = self.writes.receive(10, Duration::from_millis(0)).await;
        if batch.is_empty() {
            return None;
        }
        let ids = batch.iter().map(|r| r.message_id.clone()).collect();
        let deliveries = batch
            .iter()
            .map(|r| Delivery::decode(r.message_id.clone(), r.group.clone(), &r.body))
            .collect();
        let outcome = persist_batch(&self.worker, deliveries).await;
        for r in &batch {
            if outcome.failed.contains(&r.message_id) {
                self.writes.nack(r.receipt).await.unwrap();
            } else {
                self.writes.ack(r.receipt).await.unwrap();
            }
        }
        Some((ids, outcome))
    }

    /// Erases a user as the API does (the key destroyed, the job's first
    /// step queued), runs the worker until the queue is empty, and answers
    /// the job's report.
    pub async fn erase_user(&self, owner: &str, user: &str) -> convo_schema::api::ErasureReport {
        let started = convo_domain::erasure::start(&self.deps, owner, user).await.unwrap();
        assert_eq!(started.status, convo_schema::api::ErasureStatus::Running);
        self.settle().await;
        convo_domain::erasure::report(&self.deps, owner, &started.erasure_id)
            .await
            .unwrap()
    }

    /// Runs the worker until the writes queue is empty (waiting out retry
    /// backoffs), then the title worker.
    pub async fn settle(&self) {
        for _ in 0..1000 {
            if self.persist_once().await.is_none() {
                let stats = self.writes.stats();
                if stats.visible == 0 && stats.in_flight == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        loop {
            let batch = self.titles.receive(10, Duration::from_millis(0)).await;
            if batch.is_empty() {
                break;
            }
            for r in batch {
                let job: TitleJob = serde_json::from_str(&r.body).unwrap();
                generate_title(&self.deps, &job).await.unwrap();
                self.titles.ack(r.receipt).await.unwrap();
            }
        }
    }

    /// Takes every event queued so far (type, id, the JSON as queued).
    pub async fn take_events(&self) -> Vec<convo_schema::events::CloudEvent> {
        let mut out = Vec::new();
        loop {
            let batch = self.events.receive(10, Duration::from_millis(0)).await;
            if batch.is_empty() {
                return out;
            }
            for r in batch {
                out.push(serde_json::from_str(&r.body).expect("a CloudEvent"));
                self.events.ack(r.receipt).await.unwrap();
            }
        }
    }

    /// Every item (as text) of the store under test that mentions `needle`:
    /// a scan of the whole table, which only a test may do.
    pub async fn leftovers(&self, needle: &str) -> Vec<String> {
        if let Some(e) = &self.embedded {
            return e.entries_containing(needle);
        }
        let d = self.dynamo.as_ref().expect("a store");
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let resp = d
                .client()
                .scan()
                .table_name(d.table())
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in resp.items.unwrap_or_default() {
                let text = format!("{item:?}");
                if text.contains(needle) {
                    found.push(text);
                }
            }
            match resp.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return found,
            }
        }
    }

    pub async fn conversation(&self, id: &str) -> Conversation {
        self.store
            .conversations
            .get_conversation(id)
            .await
            .unwrap()
            .unwrap()
            .conversation
    }

    pub async fn all_messages(&self, id: &str) -> Vec<Message> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .store
                .messages
                .list_messages(
                    id,
                    &MessageQuery {
                        cursor,
                        limit: 37,
                        ..MessageQuery::default()
                    },
                )
                .await
                .unwrap();
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }
}

/// The writes queue, failing the next `fail_next` sends as an unreachable
/// SQS would.
pub struct FlakyQueue {
    pub inner: Arc<EmbeddedQueue>,
    pub fail_next: Mutex<usize>,
}

#[async_trait]
impl WriteQueue for FlakyQueue {
    async fn send_write(&self, command: &convo_schema::commands::WriteCommand) -> Result<(), QueueError> {
        {
            let mut n = self.fail_next.lock().unwrap();
            if *n > 0 {
                *n -= 1;
                return Err(QueueError::Unavailable("injected".into()));
            }
        }
        self.inner.send_write(command).await
    }
    async fn health(&self) -> ComponentHealth {
        WriteQueue::health(self.inner.as_ref()).await
    }
}

/// A write of the worker's commit protocol, in the order it makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Claims,
    FlagPointers,
    /// The conversation item (with the user's totals at an end).
    Meta,
    Chunk,
    Head,
    /// A user's erasure job recorded (a step's end).
    ErasureJob,
}

/// The store under test with failures injected into the worker's writes:
/// every write of chosen conversations (a throttled DynamoDB), or one write
/// step once after a number of successes (a crash between two writes of a
/// commit: what was written before stays written).
pub struct FaultyStore {
    pub inner: Arc<dyn ConversationStore>,
    pub fail_commits_for: Mutex<HashSet<String>>,
    /// `(step, successes to let through first)`: fails once, then heals.
    pub crash: Mutex<Vec<(Step, usize)>>,
    /// How many times each step was called.
    pub calls: Mutex<std::collections::HashMap<Step, usize>>,
    /// A lagging index (DynamoDB's global indexes are eventually
    /// consistent): a list from the start first answers one page of entries
    /// whose conversations are gone (no items, a cursor to the real start).
    pub lagging_index: std::sync::atomic::AtomicBool,
    /// Conversations the user index does not show yet (a global index that
    /// has not caught up with their creation), for this many more lists
    /// of it; while the set is not empty the index says it may lag.
    pub unindexed: Mutex<(HashSet<String>, usize)>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ConversationStore>) -> Self {
        Self {
            inner,
            fail_commits_for: Mutex::new(HashSet::new()),
            crash: Mutex::new(Vec::new()),
            calls: Mutex::new(std::collections::HashMap::new()),
            lagging_index: std::sync::atomic::AtomicBool::new(false),
            unindexed: Mutex::new((HashSet::new(), 0)),
        }
    }

    /// Makes the write `step` fail once after `successes` more succeed.
    pub fn crash_at(&self, step: Step, successes: usize) {
        self.crash.lock().unwrap().push((step, successes));
    }

    pub fn calls(&self, step: Step) -> usize {
        self.calls.lock().unwrap().get(&step).copied().unwrap_or(0)
    }

    fn check(&self, step: Step, conversation_id: &str) -> Result<(), StoreError> {
        *self.calls.lock().unwrap().entry(step).or_default() += 1;
        if self.fail_commits_for.lock().unwrap().contains(conversation_id) {
            return Err(StoreError::Unavailable("injected throttle".into()));
        }
        let mut crash = self.crash.lock().unwrap();
        if let Some(pos) = crash.iter().position(|(s, _)| *s == step) {
            if crash[pos].1 == 0 {
                crash.remove(pos);
                return Err(StoreError::Unavailable(format!("injected crash before {step:?}")));
            }
            crash[pos].1 -= 1;
        }
        Ok(())
    }
}

#[async_trait]
impl Conversations for FaultyStore {
    async fn create_conversation(&self, r: &ConversationRecord, reuse: bool) -> Result<Created, StoreError> {
        self.inner.create_conversation(r, reuse).await
    }

    async fn get_conversation(&self, id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        self.inner.get_conversation(id).await
    }

    async fn get_conversation_for_read(&self, id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        self.inner.get_conversation_for_read(id).await
    }

    async fn put_conversation_with(
        &self,
        r: &ConversationRecord,
        v: u64,
        s: Option<StatsDelta>,
    ) -> Result<(), StoreError> {
        self.check(Step::Meta, r.id())?;
        self.inner.put_conversation_with(r, v, s).await
    }

    async fn remove_conversation(
        &self,
        r: &ConversationRecord,
        v: u64,
        s: Option<StatsDelta>,
    ) -> Result<(), StoreError> {
        self.inner.remove_conversation(r, v, s).await
    }
}

#[async_trait]
impl MessageLog for FaultyStore {
    async fn put_chunk(&self, c: &Chunk) -> Result<ChunkWrite, StoreError> {
        self.check(Step::Chunk, &c.conversation_id)?;
        self.inner.put_chunk(c).await
    }

    async fn update_head(&self, id: &str, chunk: u64, h: &HeadState) -> Result<(), StoreError> {
        self.check(Step::Head, id)?;
        self.inner.update_head(id, chunk, h).await
    }

    async fn claim_external_ids(
        &self,
        id: &str,
        claims: &[(String, String)],
        e: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.check(Step::Claims, id)?;
        self.inner.claim_external_ids(id, claims, e).await
    }

    async fn put_flag_pointers(&self, id: &str, p: &[(u64, u64)], e: Option<Timestamp>) -> Result<(), StoreError> {
        self.check(Step::FlagPointers, id)?;
        self.inner.put_flag_pointers(id, p, e).await
    }

    async fn list_messages(&self, id: &str, q: &MessageQuery) -> Result<Page<Message>, StoreError> {
        self.inner.list_messages(id, q).await
    }

    async fn chunks_desc(&self, id: &str, below: Option<u64>, limit: usize) -> Result<Vec<Chunk>, StoreError> {
        self.inner.chunks_desc(id, below, limit).await
    }

    async fn rewrite_chunk(&self, chunk: &Chunk) -> Result<(), StoreError> {
        self.check(Step::Chunk, &chunk.conversation_id)?;
        self.inner.rewrite_chunk(chunk).await
    }

    async fn list_flagged_messages(
        &self,
        id: &str,
        o: Order,
        c: Option<&str>,
        l: usize,
    ) -> Result<Page<Message>, StoreError> {
        self.inner.list_flagged_messages(id, o, c, l).await
    }

    async fn existing_external_ids(
        &self,
        id: &str,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        self.inner.existing_external_ids(id, ids).await
    }

    async fn delete_conversation_items(&self, id: &str) -> Result<(), StoreError> {
        self.inner.delete_conversation_items(id).await
    }
}

#[async_trait]
impl ConversationLists for FaultyStore {
    async fn list_conversations(
        &self,
        o: &str,
        list: &ConversationList,
        c: Option<&str>,
        l: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        const STALE: &str = "stale-page";
        if self.lagging_index.load(std::sync::atomic::Ordering::SeqCst) {
            match c {
                None => {
                    return Ok(Page {
                        items: Vec::new(),
                        next_cursor: Some(STALE.into()),
                    });
                }
                Some(STALE) => return self.inner.list_conversations(o, list, None, l).await,
                _ => {}
            }
        }
        let mut page = self.inner.list_conversations(o, list, c, l).await?;
        let mut unindexed = self.unindexed.lock().unwrap();
        if unindexed.1 > 0 && matches!(list, ConversationList::User(_)) {
            unindexed.1 -= 1;
            page.items.retain(|r| !unindexed.0.contains(r.id()));
        }
        Ok(page)
    }

    async fn list_flagged_conversations(
        &self,
        o: &str,
        s: convo_schema::FlagStatus,
        c: Option<&str>,
        l: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        self.inner.list_flagged_conversations(o, s, c, l).await
    }

    fn user_index_is_consistent(&self) -> bool {
        self.inner.user_index_is_consistent()
            && !self.lagging_index.load(std::sync::atomic::Ordering::SeqCst)
            && self.unindexed.lock().unwrap().0.is_empty()
    }
}

#[async_trait]
impl UserTotals for FaultyStore {
    async fn user_stats(&self, o: &str, u: &str) -> Result<Option<UserStats>, StoreError> {
        self.inner.user_stats(o, u).await
    }

    async fn delete_user_stats(&self, o: &str, u: &str) -> Result<(), StoreError> {
        self.inner.delete_user_stats(o, u).await
    }

    async fn set_last_conversation_at(&self, o: &str, u: &str, at: Option<Timestamp>) -> Result<(), StoreError> {
        self.inner.set_last_conversation_at(o, u, at).await
    }
}

#[async_trait]
impl IdempotencyStore for FaultyStore {
    async fn get_idempotency(&self, c: &str, k: &str, n: Timestamp) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.get_idempotency(c, k, n).await
    }

    async fn put_idempotency(
        &self,
        c: &str,
        k: &str,
        r: &IdempotencyRecord,
        n: Timestamp,
        e: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner.put_idempotency(c, k, r, n, e).await
    }

    async fn settle_idempotency(&self, c: &str, k: &str) -> Result<(), StoreError> {
        self.inner.settle_idempotency(c, k).await
    }
}

#[async_trait]
impl SessionIndex for FaultyStore {
    async fn active_started_before(
        &self,
        t: Timestamp,
        a: Option<&str>,
        l: usize,
    ) -> Result<Page<ConversationRecord>, StoreError> {
        self.inner.active_started_before(t, a, l).await
    }

    async fn sweep_cursor(&self) -> Result<Option<String>, StoreError> {
        self.inner.sweep_cursor().await
    }

    async fn set_sweep_cursor(&self, c: Option<&str>) -> Result<(), StoreError> {
        self.inner.set_sweep_cursor(c).await
    }

    async fn expired_conversations(&self, n: Timestamp, l: usize) -> Result<Vec<ConversationRecord>, StoreError> {
        self.inner.expired_conversations(n, l).await
    }
}

#[async_trait]
impl ErasureJobs for FaultyStore {
    async fn get_erasure(&self, id: &str) -> Result<Option<ErasureJob>, StoreError> {
        self.inner.get_erasure(id).await
    }

    async fn put_erasure(&self, job: &ErasureJob, expected: u64) -> Result<(), StoreError> {
        self.check(Step::ErasureJob, &job.erasure_id)?;
        self.inner.put_erasure(job, expected).await
    }
}

#[async_trait]
impl StoreHealth for FaultyStore {
    async fn health(&self) -> ComponentHealth {
        self.inner.health().await
    }
}

/// The read routes as the HTTP edge calls them (`functions/read-api`): the
/// query string parsed into a typed query first, then the use case. Cases
/// give the query as strings, as a client would.
pub mod reads {
    use convo_domain::service::{self, ContextParams, ListParams, MessageParams, ReviewParams};
    use convo_domain::{ApiDeps, DomainError};
    use convo_schema::api::{AfterStatus, ContextResponse, ConversationPage, MessagePage};
    use convo_schema::{Conversation, queries};

    pub async fn list_conversations(
        deps: &ApiDeps,
        owner: &str,
        p: ListParams<'_>,
    ) -> Result<ConversationPage, DomainError> {
        service::list_conversations(deps, owner, &p.parse()?).await
    }

    pub async fn list_messages(
        deps: &ApiDeps,
        owner: &str,
        id: &str,
        p: MessageParams<'_>,
    ) -> Result<MessagePage, DomainError> {
        service::list_messages(deps, owner, id, &p.parse()?).await
    }

    pub async fn context_with(
        deps: &ApiDeps,
        owner: &str,
        id: &str,
        p: ContextParams<'_>,
    ) -> Result<ContextResponse, DomainError> {
        service::context(deps, owner, id, &p.parse()?).await
    }

    pub async fn context(
        deps: &ApiDeps,
        owner: &str,
        id: &str,
        max_messages: Option<&str>,
        max_age: Option<&str>,
        after: Option<&str>,
    ) -> Result<ContextResponse, DomainError> {
        let p = ContextParams {
            max_messages,
            max_age,
            after,
            ..ContextParams::default()
        };
        context_with(deps, owner, id, p).await
    }

    pub async fn list_reviews(
        deps: &ApiDeps,
        owner: &str,
        p: ReviewParams<'_>,
    ) -> Result<ConversationPage, DomainError> {
        service::list_reviews(deps, owner, &p.parse()?).await
    }

    pub async fn user_context(
        deps: &ApiDeps,
        owner: &str,
        user: &str,
        agent_id: Option<&str>,
        context: ContextParams<'_>,
    ) -> Result<convo_schema::api::UserContextResponse, DomainError> {
        let p = service::UserContextParams { agent_id, context };
        service::user_context(deps, owner, user, &p.parse()?).await
    }

    pub async fn get_conversation_after(
        deps: &ApiDeps,
        owner: &str,
        id: &str,
        after: Option<&str>,
    ) -> Result<(Conversation, Option<AfterStatus>), DomainError> {
        let after = after.map(queries::command_id).transpose()?;
        service::get_conversation_after(deps, owner, id, after.as_deref()).await
    }
}
