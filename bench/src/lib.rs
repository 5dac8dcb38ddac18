//! Set-up shared by convo's benchmarks: the domain's dependencies on the
//! embedded store in memory, with queues that keep what is sent to them in
//! process (the "in-process sink" of issue 6: no queue I/O is timed).

pub mod capacity;
pub mod capture;
pub mod coldstart;
pub mod drive;
pub mod plot;
pub mod report;
pub mod user_context;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use convo_domain::titles::ExtractiveTitler;
use convo_domain::{
    ComponentHealth, Config, Deps, EventQueue, NoMetrics, QueueError, SystemClock, TitleQueue, UlidSource, WriteQueue,
};
use convo_embedded::{EmbeddedStore, open_database};
use convo_schema::commands::{TitleJob, WriteCommand};

/// A queue that keeps every command sent to it, in order.
#[derive(Default)]
pub struct Sink {
    pub writes: Mutex<Vec<WriteCommand>>,
    pub titles: Mutex<Vec<TitleJob>>,
    pub events: Mutex<Vec<convo_schema::events::CloudEvent>>,
}

impl Sink {
    /// Takes the commands sent so far.
    pub fn take_writes(&self) -> Vec<WriteCommand> {
        std::mem::take(&mut self.writes.lock().expect("sink"))
    }
}

fn healthy(name: &str) -> ComponentHealth {
    ComponentHealth {
        name: name.into(),
        ok: true,
        figures: Default::default(),
    }
}

#[async_trait]
impl WriteQueue for Sink {
    async fn send_write(&self, command: &WriteCommand) -> Result<(), QueueError> {
        self.writes.lock().expect("sink").push(command.clone());
        Ok(())
    }
    async fn health(&self) -> ComponentHealth {
        healthy("writesQueue")
    }
}

#[async_trait]
impl EventQueue for Sink {
    async fn send_events(&self, events: &[convo_schema::events::CloudEvent]) -> Result<(), QueueError> {
        self.events.lock().expect("sink").extend(events.iter().cloned());
        Ok(())
    }
    async fn health(&self) -> ComponentHealth {
        healthy("eventsQueue")
    }
}

#[async_trait]
impl TitleQueue for Sink {
    async fn send_title(&self, job: &TitleJob) -> Result<(), QueueError> {
        self.titles.lock().expect("sink").push(job.clone());
        Ok(())
    }
    async fn health(&self) -> ComponentHealth {
        healthy("titlesQueue")
    }
}

/// The handlers' dependencies: an in-memory embedded store, the built-in
/// moderator, `sink` for both queues, and a fresh in-memory key ring (new
/// conversations are sealed when `config.encryption` is on).
pub fn in_memory_deps(sink: Arc<Sink>, config: Config) -> convo_domain::ApiDeps {
    let master = convo_domain::crypto::DataKey::generate().expect("key").0;
    let ring = convo_embedded::keys::LocalKeyRing::open(None, master).expect("key ring");
    in_memory_worker_deps(sink, config).sealed_with(Arc::new(ring))
}

/// As [`in_memory_deps`], without the key ring: the write worker's.
pub fn in_memory_worker_deps(sink: Arc<Sink>, config: Config) -> Deps {
    let db = open_database(None).expect("in-memory database");
    let moderator = Arc::new(convo_domain::screening::moderator(None).expect("built-in word lists"));
    Deps {
        store: convo_domain::deps::Stores::new(Arc::new(EmbeddedStore::new(db).expect("store"))),
        writes: sink.clone(),
        titles: sink.clone(),
        events: sink,
        clock: Arc::new(SystemClock),
        ids: Arc::new(UlidSource::default()),
        titler: Arc::new(ExtractiveTitler::new(moderator.clone())),
        moderator,
        metrics: Arc::new(NoMetrics),
        config,
    }
}

/// A realistic message of `len` characters (an exchange with a toy).
pub fn message_text(len: usize) -> String {
    let base = "Can you tell me a story about a brave little dragon who learns to share \
                her treasure with the other animals in the forest, and then sings a song? ";
    base.chars().cycle().take(len).collect()
}
