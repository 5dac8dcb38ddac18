//! How one command changes a conversation in memory: a message appended,
//! a flag raised, a session ended, the events they announce.

use super::*;

pub(crate) fn push_event(events: &mut Vec<CloudEvent>, e: CloudEvent) {
    if !events.iter().any(|x| x.id == e.id) {
        events.push(e);
    }
}

/// The events of one message of `cmd`: its verdict's, and the
/// conversation's first flag when this command set it — now, or in an
/// earlier try whose conversation item was written before a chunk failed
/// (then the flag is already set).
pub(crate) fn announce_message(
    events: &mut Vec<CloudEvent>,
    c: &Conversation,
    seen: &FlaggedMessage<'_>,
    cmd: &WriteCommand,
) {
    if seen.safety.action != SafetyAction::Safe && c.flagged_at == Some(cmd.accepted_at) {
        push_event(events, events::conversation_flagged(c, seen));
    }
    for e in events::message_events(c, seen) {
        push_event(events, e);
    }
}

/// What an externalId's claim holds: the message and the command that
/// claimed it. A message's id alone would not do: the id of a message with
/// an externalId is derived from it (every send of one externalId has the
/// same id), so only the command tells a redelivery of the claiming command
/// (whose commit a crash cut after the claim: it goes on) from a re-send by
/// another command (a repeat: dropped).
pub(crate) fn claim_token(m: &AcceptedMessage, cmd: &WriteCommand) -> String {
    format!("{} {}", m.message_id, cmd.command_id)
}

/// Whether a claim is this message's own, by this command. A claim holding
/// a message id alone was written by a worker of format 3 for a command of
/// format 3, whose message ids are random: it matches only that message.
pub(crate) fn own_claim(holder: &str, m: &AcceptedMessage, cmd: &WriteCommand) -> bool {
    holder == claim_token(m, cmd) || holder == m.message_id
}

pub(crate) fn append_message(
    rec: &mut ConversationRecord,
    m: &AcceptedMessage,
    cmd: &WriteCommand,
    meta_changed: &mut bool,
) -> Message {
    // The conversation stage: the rolling risk moves with every message, in
    // order; the message that brings it to its threshold is stored flagged
    // with a `conversation` finding, and flags the conversation.
    let mut safety = m.safety.clone();
    if let Some(risk) = &m.risk {
        let before = rec.head.risk_milli as f32 / 1000.0;
        let after = crate::screening::next_risk(before, risk);
        rec.head.risk_milli = (after * 1000.0).round() as u32;
        if after >= risk.threshold && before < risk.threshold {
            conversation_finding(&mut safety, after);
        }
    }
    let c = &mut rec.conversation;
    let flagged = safety.action != SafetyAction::Safe;
    let blocked = safety.action == SafetyAction::Blocked;
    let message = Message {
        message_id: m.message_id.clone(),
        conversation_id: c.conversation_id.clone(),
        message_index: c.message_count,
        role: m.role,
        content: m.content.clone(),
        created_at: m.created_at,
        accepted_at: cmd.accepted_at,
        external_id: m.external_id.clone(),
        direction: m.direction,
        audio_url: m.audio_url.clone(),
        flagged,
        blocked,
        flag_reason: if flagged { safety.reason.clone() } else { None },
        safety: safety.clone(),
        metadata: m.metadata.clone(),
        tool_calls: m.tool_calls.clone(),
        tool_call_id: m.tool_call_id.clone(),
        removed: false,
        sealed: crate::sealing::stored_fields(m),
    };
    c.message_count += 1;
    // An ended session's last activity stays within it.
    if c.status == ConversationStatus::Active && cmd.accepted_at > c.last_activity_at {
        c.last_activity_at = cmd.accepted_at;
    }
    // Only the first message sets it: once removed, nothing takes its place.
    // A sealed message comes with its preview sealed by the API.
    match m.sealed.get(crate::model::PREVIEW) {
        Some(sealed) => {
            if message.message_index == 0 {
                rec.conversation.first_message_preview = None;
                rec.sealed.insert(crate::model::FIRST_PREVIEW.into(), sealed.clone());
            }
            rec.conversation.last_message_preview = None;
            rec.sealed.insert(crate::model::LAST_PREVIEW.into(), sealed.clone());
        }
        None => {
            let shown = preview_of(&message);
            if message.message_index == 0 {
                rec.conversation.first_message_preview = Some(shown.clone());
                rec.sealed.remove(crate::model::FIRST_PREVIEW);
            }
            rec.conversation.last_message_preview = Some(shown);
            rec.sealed.remove(crate::model::LAST_PREVIEW);
        }
    }
    flag_conversation(&mut rec.conversation, &safety, cmd, meta_changed);
    message
}

/// Marks a verdict with the conversation stage's grooming finding (the
/// message is then flagged, at high severity at least).
pub(crate) fn conversation_finding(safety: &mut SafetyVerdict, level: f32) {
    if !safety.categories.iter().any(|c| c == "grooming") {
        safety.categories.push("grooming".into());
    }
    safety.findings.push(SafetyFinding {
        category: "grooming".into(),
        stage: SafetyStage::Conversation,
        severity: Severity::High,
        probability: Some((f64::from(level) * 1000.0).round() / 1000.0),
    });
    safety.severity = safety.severity.max(Some(Severity::High));
    if safety.action == SafetyAction::Safe {
        safety.action = SafetyAction::Flagged;
        safety.score = safety.score.min(0.65);
    }
    safety.reason = Some(match safety.reason.take() {
        Some(r) => format!("{r}; conversation grooming"),
        None => "conversation grooming".into(),
    });
}

/// The category a verdict is summarised by: its most severe finding's (the
/// first of equals), else its first category.
pub(crate) fn most_severe_category(safety: &SafetyVerdict) -> String {
    let mut best: Option<&SafetyFinding> = None;
    for f in &safety.findings {
        if best.is_none_or(|b| f.severity > b.severity) {
            best = Some(f);
        }
    }
    best.map(|f| f.category.clone())
        .or_else(|| safety.categories.first().cloned())
        .unwrap_or_else(|| "content".into())
}

/// What a flagged or blocked message does to its conversation: the first
/// flag sets the flag fields (for review), a later one may raise the
/// severity. Applying it twice changes nothing.
/// The conversation is summarised by its most severe category: a later,
/// more severe message moves its type and reason with its severity.
pub(crate) fn flag_conversation(
    c: &mut Conversation,
    safety: &SafetyVerdict,
    cmd: &WriteCommand,
    meta_changed: &mut bool,
) {
    if safety.action == SafetyAction::Safe {
        return;
    }
    let blocked = safety.action == SafetyAction::Blocked;
    let severity = safety
        .severity
        .unwrap_or(if blocked { Severity::High } else { Severity::Medium });
    if !c.flagged {
        c.flagged = true;
        c.flag_type = Some(most_severe_category(safety));
        c.flag_reason = safety.reason.clone();
        c.severity = Some(severity);
        c.flag_status = Some(FlagStatus::Unreviewed);
        c.flagged_at = Some(cmd.accepted_at);
        *meta_changed = true;
    } else if c.severity.is_none_or(|s| s < severity) {
        c.severity = Some(severity);
        c.flag_type = Some(most_severe_category(safety));
        c.flag_reason = safety.reason.clone();
        *meta_changed = true;
    }
}

pub(crate) fn end_conversation(rec: &mut ConversationRecord, reason: EndReason, cmd: &WriteCommand) -> StatsDelta {
    let c = &mut rec.conversation;
    // An idle session ended when it was last active, not when swept.
    let end = match reason {
        EndReason::Client => cmd.accepted_at.max(c.last_activity_at),
        EndReason::Idle => c.last_activity_at,
    };
    let seconds = (end - c.start_time).num_seconds().max(0);
    c.status = ConversationStatus::Ended;
    c.end_time = Some(end);
    c.duration_seconds = Some(seconds);
    c.duration_minutes = Some((seconds + 30) / 60);
    StatsDelta {
        conversations: 1,
        messages: c.message_count as i64,
        seconds,
        at: Some(c.start_time),
    }
}
