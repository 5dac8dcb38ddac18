//! The outbox: how a use case hands work to the queues. A write command is
//! checked against the queue's size limit and sent to the writes queue (its
//! conversation's FIFO group); the events of a committed change are queued
//! for delivery. The API, the worker, the sweeper and the erasure job meet
//! here rather than in each other.

use convo_schema::ValidationError;
use convo_schema::commands::{WriteCommand, WriteKind};
use convo_schema::events::CloudEvent;

use crate::Deps;
use crate::error::DomainError;

/// A new command for a conversation, with a fresh id, accepted now.
pub fn command(deps: &Deps, owner_id: &str, conversation_id: &str, kind: WriteKind) -> WriteCommand {
    WriteCommand::new(
        deps.ids.new_id(),
        conversation_id.to_string(),
        owner_id.to_string(),
        deps.clock.now(),
        kind,
    )
}

/// Largest encoded write command: SQS takes 256 KiB per message, and the
/// message attributes need a little room.
pub const MAX_COMMAND_BYTES: usize = 250 * 1024;

pub async fn send_write(deps: &Deps, command: &WriteCommand) -> Result<(), DomainError> {
    check_command_size(command)?;
    deps.writes.send_write(command).await?;
    Ok(())
}

pub(crate) fn check_command_size(command: &WriteCommand) -> Result<(), DomainError> {
    let size = serde_json::to_vec(command).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_COMMAND_BYTES {
        return Err(ValidationError::too_large(
            "messages",
            format!("the messages encode to {size} bytes; one append takes at most {MAX_COMMAND_BYTES}"),
        )
        .into());
    }
    Ok(())
}

/// Queues the events of a change the API has just committed. The change
/// stands whatever happens here: if the queue refuses them (after the SDK's
/// retries) they are logged by id and counted (`EventsNotQueued`, alarmed),
/// not answered as an error the caller would retry into a second change.
pub async fn queue_events(deps: &Deps, events: &[CloudEvent]) {
    if events.is_empty() {
        return;
    }
    if let Err(e) = deps.events.send_events(events).await {
        for ev in events {
            tracing::error!(event_id = %ev.id, event_type = %ev.event_type, error = %e, "could not queue an event");
        }
        deps.metrics
            .record(&[("EventsNotQueued", events.len() as f64, "Count")]);
    }
}
