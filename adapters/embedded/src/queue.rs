//! Durable in-process queues with the SQS semantics convo relies on:
//!
//! - FIFO queues deliver a group's messages in order, one batch per group in
//!   flight at a time, and drop a repeated deduplication id seen in the last
//!   five minutes;
//! - a record the consumer reports failed becomes visible again after a
//!   short backoff; after `max_receives` receives it is parked in the
//!   dead-letter list (persisted, shown by `/health`);
//! - every message is in redb before `send` returns, so a restart loses
//!   nothing accepted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use convo_domain::ports::{ComponentHealth, EventQueue, QueueError, TitleQueue, WriteQueue};
use convo_schema::Timestamp;
use convo_schema::commands::{TitleJob, WriteCommand};
use convo_schema::events::CloudEvent;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::db::num;

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

const DEDUP_WINDOW: Duration = Duration::from_secs(300);
/// SQS's limit on one message.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    Fifo,
    Standard,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredMessage {
    message_id: String,
    group: Option<String>,
    body: String,
    receive_count: u32,
    sent_at: Timestamp,
}

struct Entry {
    msg: StoredMessage,
    in_flight: bool,
    visible_at: Instant,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    entries: BTreeMap<u64, Entry>,
    dedup: HashMap<String, Instant>,
}

/// A message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Received {
    /// Pass back to `ack` or `nack`.
    pub receipt: u64,
    pub message_id: String,
    pub group: Option<String>,
    pub body: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
    pub sent_at: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    pub visible: usize,
    pub in_flight: usize,
    pub dead_letters: u64,
    pub oldest_age_seconds: i64,
}

/// How long a failed message waits before it is visible again: `base`
/// doubled per receive up to `cap`, with full jitter (a random wait up to
/// that) when `jitter` is set.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    pub jitter: bool,
}

impl Default for Backoff {
    /// 50 ms doubling to 3.2 s, no jitter (the writes and titles queues:
    /// what fails there is a store conflict or a blip).
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(3200),
            jitter: false,
        }
    }
}

impl Backoff {
    pub fn after(&self, receives: u32) -> Duration {
        let full = self.base.saturating_mul(1u32 << receives.min(20)).min(self.cap);
        if self.jitter {
            full.mul_f64(rand::random::<f64>())
        } else {
            full
        }
    }
}

pub struct EmbeddedQueue {
    name: String,
    kind: QueueKind,
    max_receives: u32,
    backoff: Backoff,
    db: Arc<Database>,
    table: TableDefinition<'static, &'static str, &'static [u8]>,
    dlq: TableDefinition<'static, &'static str, &'static [u8]>,
    state: Mutex<State>,
    notify: Notify,
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

impl EmbeddedQueue {
    /// Opens the queue `name` in `db`, reloading messages left by a previous
    /// run (all visible again, as after a visibility timeout).
    pub fn open(db: Arc<Database>, name: &str, kind: QueueKind, max_receives: u32) -> Result<Arc<Self>, String> {
        Self::open_with(db, name, kind, max_receives, Backoff::default())
    }

    /// As [`EmbeddedQueue::open`], with its own backoff.
    pub fn open_with(
        db: Arc<Database>,
        name: &str,
        kind: QueueKind,
        max_receives: u32,
        backoff: Backoff,
    ) -> Result<Arc<Self>, String> {
        // redb table names must be 'static; queues are few and live for the
        // whole process.
        let table_name: &'static str = Box::leak(format!("queue_{name}").into_boxed_str());
        let dlq_name: &'static str = Box::leak(format!("dlq_{name}").into_boxed_str());
        let table: Table = TableDefinition::new(table_name);
        let dlq: Table = TableDefinition::new(dlq_name);
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(table).map_err(|e| e.to_string())?;
        txn.open_table(dlq).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        let mut state = State::default();
        {
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            let t = txn.open_table(table).map_err(|e| e.to_string())?;
            for entry in t.iter().map_err(|e| e.to_string())? {
                let (k, v) = entry.map_err(|e| e.to_string())?;
                let seq: u64 = k.value().parse().map_err(|_| "bad queue key".to_string())?;
                let msg: StoredMessage = serde_json::from_slice(v.value()).map_err(|e| e.to_string())?;
                state.entries.insert(
                    seq,
                    Entry {
                        msg,
                        in_flight: false,
                        visible_at: Instant::now(),
                    },
                );
                state.next_seq = state.next_seq.max(seq + 1);
            }
        }
        Ok(Arc::new(Self {
            name: name.to_string(),
            kind,
            max_receives: max_receives.max(1),
            backoff,
            db,
            table,
            dlq,
            state: Mutex::new(state),
            notify: Notify::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one message. On a FIFO queue `group` is required and a repeated
    /// `dedup_id` within five minutes is accepted and dropped.
    pub async fn send(&self, group: Option<&str>, dedup_id: Option<&str>, body: String) -> Result<(), QueueError> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(QueueError::TooLarge(body.len()));
        }
        if self.kind == QueueKind::Fifo && group.is_none() {
            return Err(QueueError::Unavailable("a FIFO queue needs a message group".into()));
        }
        let msg = StoredMessage {
            message_id: ulid::Ulid::new().to_string(),
            group: group.map(str::to_string),
            body,
            receive_count: 0,
            sent_at: chrono::Utc::now(),
        };
        // Reserve the sequence number and the dedup id under the lock, then
        // write to disk outside it.
        let seq = {
            let mut st = self.lock();
            let now = Instant::now();
            st.dedup.retain(|_, at| now.duration_since(*at) < DEDUP_WINDOW);
            if self.kind == QueueKind::Fifo
                && let Some(id) = dedup_id
            {
                if st.dedup.contains_key(id) {
                    return Ok(());
                }
                st.dedup.insert(id.to_string(), now);
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            seq
        };
        let bytes = serde_json::to_vec(&msg).map_err(unavailable)?;
        let db = self.db.clone();
        let table = self.table;
        let written = tokio::task::spawn_blocking(move || -> Result<(), QueueError> {
            let txn = db.begin_write().map_err(unavailable)?;
            txn.open_table(table)
                .map_err(unavailable)?
                .insert(num(seq).as_str(), bytes.as_slice())
                .map_err(unavailable)?;
            txn.commit().map_err(unavailable)
        })
        .await
        .map_err(unavailable)?;
        if let Err(e) = written {
            if let Some(id) = dedup_id {
                self.lock().dedup.remove(id);
            }
            return Err(e);
        }
        self.lock().entries.insert(
            seq,
            Entry {
                msg,
                in_flight: false,
                visible_at: Instant::now(),
            },
        );
        self.notify.notify_waiters();
        Ok(())
    }

    /// Takes up to `max` visible messages, waiting up to `wait` for one.
    pub async fn receive(&self, max: usize, wait: Duration) -> Vec<Received> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            let (batch, next_visible) = self.take(max);
            if !batch.is_empty() {
                return batch;
            }
            let now = Instant::now();
            if now >= deadline {
                return Vec::new();
            }
            let until = next_visible.map_or(deadline, |v| v.min(deadline));
            let _ = tokio::time::timeout(until.saturating_duration_since(now), notified).await;
        }
    }

    fn take(&self, max: usize) -> (Vec<Received>, Option<Instant>) {
        let mut st = self.lock();
        let now = Instant::now();
        let mut blocked: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        let mut next_visible: Option<Instant> = None;
        for (seq, e) in st.entries.iter_mut() {
            if out.len() == max {
                break;
            }
            let group = e.msg.group.clone();
            if let Some(g) = &group
                && self.kind == QueueKind::Fifo
                && blocked.contains(g)
            {
                continue;
            }
            let available = !e.in_flight && e.visible_at <= now;
            if !available {
                if !e.in_flight {
                    next_visible = Some(next_visible.map_or(e.visible_at, |n| n.min(e.visible_at)));
                }
                // FIFO: nothing behind an unavailable message of its group.
                if let Some(g) = group
                    && self.kind == QueueKind::Fifo
                {
                    blocked.insert(g);
                }
                continue;
            }
            e.in_flight = true;
            e.msg.receive_count += 1;
            out.push(Received {
                receipt: *seq,
                message_id: e.msg.message_id.clone(),
                group: e.msg.group.clone(),
                body: e.msg.body.clone(),
                receive_count: e.msg.receive_count,
                sent_at: e.msg.sent_at,
            });
        }
        // FIFO: a batch must not hold a later message of a group whose
        // earlier one was already in flight (handled by `blocked` above).
        (out, next_visible)
    }

    /// The consumer processed the message: delete it.
    pub async fn ack(&self, receipt: u64) -> Result<(), QueueError> {
        self.lock().entries.remove(&receipt);
        let db = self.db.clone();
        let table = self.table;
        tokio::task::spawn_blocking(move || -> Result<(), QueueError> {
            let txn = db.begin_write().map_err(unavailable)?;
            txn.open_table(table)
                .map_err(unavailable)?
                .remove(num(receipt).as_str())
                .map_err(unavailable)?;
            txn.commit().map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    /// The consumer failed on the message: redeliver it later, or park it in
    /// the dead-letter list once it has been received `max_receives` times.
    pub async fn nack(&self, receipt: u64) -> Result<(), QueueError> {
        let dead = {
            let mut st = self.lock();
            let Some(e) = st.entries.get_mut(&receipt) else {
                return Ok(());
            };
            if e.msg.receive_count >= self.max_receives {
                st.entries.remove(&receipt)
            } else {
                let backoff = self.backoff.after(e.msg.receive_count);
                e.in_flight = false;
                e.visible_at = Instant::now() + backoff;
                None
            }
        };
        self.notify.notify_waiters();
        let Some(dead) = dead else { return Ok(()) };
        tracing::warn!(queue = %self.name, message_id = %dead.msg.message_id, receives = dead.msg.receive_count, "message moved to the dead-letter list");
        let bytes = serde_json::to_vec(&dead.msg).map_err(unavailable)?;
        let db = self.db.clone();
        let (table, dlq) = (self.table, self.dlq);
        tokio::task::spawn_blocking(move || -> Result<(), QueueError> {
            let txn = db.begin_write().map_err(unavailable)?;
            txn.open_table(table)
                .map_err(unavailable)?
                .remove(num(receipt).as_str())
                .map_err(unavailable)?;
            txn.open_table(dlq)
                .map_err(unavailable)?
                .insert(num(receipt).as_str(), bytes.as_slice())
                .map_err(unavailable)?;
            txn.commit().map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    pub fn stats(&self) -> QueueStats {
        let (visible, in_flight, oldest) = {
            let st = self.lock();
            let in_flight = st.entries.values().filter(|e| e.in_flight).count();
            let oldest = st.entries.values().map(|e| e.msg.sent_at).min();
            (st.entries.len() - in_flight, in_flight, oldest)
        };
        let dead_letters = self
            .db
            .begin_read()
            .ok()
            .and_then(|t| t.open_table(self.dlq).ok())
            .and_then(|t| t.len().ok())
            .unwrap_or(0);
        QueueStats {
            visible,
            in_flight,
            dead_letters,
            oldest_age_seconds: oldest.map_or(0, |t| (chrono::Utc::now() - t).num_seconds().max(0)),
        }
    }

    /// The bodies parked in the dead-letter list, oldest first.
    pub fn dead_letters(&self) -> Vec<String> {
        let Ok(txn) = self.db.begin_read() else {
            return Vec::new();
        };
        let Ok(table) = txn.open_table(self.dlq) else {
            return Vec::new();
        };
        let Ok(iter) = table.iter() else {
            return Vec::new();
        };
        iter.filter_map(Result::ok)
            .filter_map(|(_, v)| serde_json::from_slice::<StoredMessage>(v.value()).ok())
            .map(|m| m.body)
            .collect()
    }

    fn component_health(&self) -> ComponentHealth {
        let stats = self.stats();
        let mut figures = match serde_json::to_value(&stats) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        figures.insert("kind".into(), format!("embedded {:?}", self.kind).to_lowercase().into());
        ComponentHealth {
            name: format!("{}Queue", self.name),
            // Dead letters need a person; the queue itself still works.
            ok: true,
            figures,
        }
    }
}

#[async_trait]
impl WriteQueue for EmbeddedQueue {
    async fn send_write(&self, command: &WriteCommand) -> Result<(), QueueError> {
        let body = serde_json::to_string(command).map_err(unavailable)?;
        self.send(Some(&command.conversation_id), Some(&command.command_id), body)
            .await
    }

    async fn health(&self) -> ComponentHealth {
        self.component_health()
    }
}

#[async_trait]
impl TitleQueue for EmbeddedQueue {
    async fn send_title(&self, job: &TitleJob) -> Result<(), QueueError> {
        let body = serde_json::to_string(job).map_err(unavailable)?;
        self.send(None, None, body).await
    }

    async fn health(&self) -> ComponentHealth {
        self.component_health()
    }
}

#[async_trait]
impl EventQueue for EmbeddedQueue {
    async fn send_events(&self, events: &[CloudEvent]) -> Result<(), QueueError> {
        for e in events {
            let body = serde_json::to_string(e).map_err(unavailable)?;
            self.send(None, None, body).await?;
        }
        Ok(())
    }

    async fn health(&self) -> ComponentHealth {
        self.component_health()
    }
}
