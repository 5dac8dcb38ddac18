//! The session sweeper: ends sessions idle for longer than the configured
//! time, through the same FIFO group as every other write (so an end never
//! overtakes a message accepted before it).

use convo_schema::ConversationStatus;
use convo_schema::commands::{EndReason, WRITE_COMMAND_VERSION, WriteCommand, WriteKind};

use crate::Deps;
use crate::error::DomainError;
use crate::ports::StoreError;
use crate::service::send_write;

/// How many candidates one sweep examines per page.
const PAGE: usize = 100;
/// Upper bound of candidates one run examines (the next run takes the rest).
const MAX_PER_RUN: usize = 5_000;

/// Removes conversations past their retention, with every item, for stores
/// that do not expire items themselves. Totals are left as they are, as
/// DynamoDB's TTL leaves them. Returns how many.
pub async fn purge_expired(deps: &Deps) -> Result<usize, DomainError> {
    let expired = deps.store.expired_conversations(deps.clock.now(), PAGE).await?;
    for rec in &expired {
        deps.store.delete_conversation_items(rec.id()).await?;
        match deps.store.remove_conversation(rec, rec.version, None).await {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        deps.store.delete_conversation_items(rec.id()).await?;
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
    // of active sessions by start time yields every candidate.
    let candidates = deps
        .store
        .active_started_before(idle_before, MAX_PER_RUN.min(PAGE * 50))
        .await?;
    let mut ended = 0;
    for rec in candidates {
        let c = &rec.conversation;
        if c.status != ConversationStatus::Active || c.last_activity_at > idle_before {
            continue;
        }
        // Deterministic id: two overlapping sweeps enqueue one end.
        let command = WriteCommand {
            v: WRITE_COMMAND_VERSION,
            command_id: format!("sweep-{}-{}", c.conversation_id, c.last_activity_at.timestamp_millis()),
            conversation_id: c.conversation_id.clone(),
            owner_id: c.owner_id.clone(),
            accepted_at: now,
            kind: WriteKind::End {
                reason: EndReason::Idle,
            },
        };
        send_write(deps, &command).await?;
        ended += 1;
    }
    if ended > 0 {
        tracing::info!(ended, "idle sessions ended");
    }
    Ok(ended)
}
