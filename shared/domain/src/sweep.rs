//! The session sweeper: ends sessions idle for longer than the configured
//! time, through the same FIFO group as every other write (so an end never
//! overtakes a message accepted before it).

use convo_schema::ConversationStatus;
use convo_schema::commands::{EndReason, WriteCommand, WriteKind};

use crate::Deps;
use crate::error::DomainError;
use crate::outbox::send_write;
use crate::ports::StoreError;

/// How many candidates one sweep examines per page.
const PAGE: usize = 100;

/// Removes conversations past their retention, with every item, for stores
/// that do not expire items themselves. Totals are left as they are, as
/// DynamoDB's TTL leaves them. Returns how many.
pub async fn purge_expired(deps: &Deps) -> Result<usize, DomainError> {
    let expired = deps
        .store
        .sessions
        .expired_conversations(deps.clock.now(), PAGE)
        .await?;
    for rec in &expired {
        deps.store.messages.delete_conversation_items(rec.id()).await?;
        match deps
            .store
            .conversations
            .remove_conversation(rec, rec.version, None)
            .await
        {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        deps.store.messages.delete_conversation_items(rec.id()).await?;
    }
    if !expired.is_empty() {
        tracing::info!(purged = expired.len(), "expired conversations removed");
    }
    Ok(expired.len())
}

/// Enqueues an end for every idle active session; returns how many.
pub async fn sweep_idle_sessions(deps: &Deps) -> Result<usize, DomainError> {
    let now = deps.clock.now();
    let idle_before = now - deps.config.idle_timeout;
    // A session idle since `idle_before` started before it: the sparse index
    // of active sessions by start time yields every candidate. One run
    // examines `sweep_limit` of them and the next resumes after the last
    // (from the start once the end is reached), so long-lived sessions at
    // the front never hide idle ones behind them.
    let after = deps.store.sessions.sweep_cursor().await?;
    let page = deps
        .store
        .sessions
        .active_started_before(idle_before, after.as_deref(), deps.config.sweep_limit.max(1))
        .await?;
    let mut ended = 0;
    for rec in page.items {
        let c = &rec.conversation;
        if c.status != ConversationStatus::Active || c.last_activity_at > idle_before {
            continue;
        }
        // Deterministic id: two overlapping sweeps enqueue one end.
        let command = WriteCommand::new(
            format!("sweep-{}-{}", c.conversation_id, c.last_activity_at.timestamp_millis()),
            c.conversation_id.clone(),
            c.owner_id.clone(),
            now,
            WriteKind::End {
                reason: EndReason::Idle,
            },
        );
        send_write(deps, &command).await?;
        ended += 1;
    }
    // Recorded after the ends are queued: a run that fails examines the
    // same page again.
    if page.next_cursor != after {
        deps.store
            .sessions
            .set_sweep_cursor(page.next_cursor.as_deref())
            .await?;
    }
    if ended > 0 {
        tracing::info!(ended, "idle sessions ended");
    }
    Ok(ended)
}
