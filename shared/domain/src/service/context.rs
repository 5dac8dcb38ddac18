//! The recent context of a conversation for a model, within message, age
//! and token budgets (tool calls kept with their results).

use super::*;
use crate::ApiDeps;

pub(crate) fn context_message(m: Message) -> ContextMessage {
    ContextMessage {
        role: m.role,
        content: m.content,
        tool_calls: m.tool_calls,
        tool_call_id: m.tool_call_id,
    }
}

/// Messages (oldest first) as an LLM call takes them: a tool result whose
/// call is not among them (it fell outside the window, or was blocked) is
/// left out, since a model API refuses a result without its call.
pub(crate) fn pair_tool_results(
    messages: Vec<(ContextMessage, Option<usize>)>,
) -> Vec<(ContextMessage, Option<usize>)> {
    let mut calls = std::collections::HashSet::new();
    let mut paired: Vec<(ContextMessage, Option<usize>)> = Vec::with_capacity(messages.len());
    for (m, cost) in messages {
        calls.extend(m.tool_calls.iter().map(|c| c.id.clone()));
        if let Some(id) = &m.tool_call_id
            && !calls.contains(id)
        {
            continue;
        }
        paired.push((m, cost));
    }
    // Nor a call without its result, once something follows it (a result
    // that was blocked or removed); the newest message's calls may still
    // be running.
    let answered: std::collections::HashSet<String> =
        paired.iter().filter_map(|(m, _)| m.tool_call_id.clone()).collect();
    let last = paired.len().saturating_sub(1);
    let mut out = Vec::with_capacity(paired.len());
    for (i, (mut m, mut cost)) in paired.into_iter().enumerate() {
        if i < last && !m.tool_calls.is_empty() {
            let before = m.tool_calls.len();
            m.tool_calls.retain(|c| answered.contains(&c.id));
            if m.tool_calls.is_empty() && m.content.trim().is_empty() {
                continue;
            }
            if m.tool_calls.len() != before {
                // Changed: counted again.
                cost = None;
            }
        }
        out.push((m, cost));
    }
    out
}

/// How many token-budget reads may count tokens at once in one process.
/// Counting is CPU work (up to 200 messages of 16 KiB); it runs on the
/// blocking pool, never on the async executor, and at most this many at
/// once, so that heavy reads queue among themselves instead of slowing
/// every other request (the local server serves every owner from one
/// process; a Lambda execution environment serves one request at a time).
pub(crate) const TOKEN_COUNTERS: usize = 2;
static COUNTING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(TOKEN_COUNTERS);

/// Each message's cost in a chat request, counted off the executor.
pub(crate) async fn count_tokens(
    tokenizer: Tokenizer,
    messages: Vec<ContextMessage>,
) -> Result<(Vec<ContextMessage>, Vec<usize>), DomainError> {
    let _permit = COUNTING
        .acquire()
        .await
        .map_err(|_| DomainError::Internal("the token counters are closed".into()))?;
    tokio::task::spawn_blocking(move || {
        let costs = messages.iter().map(|m| tokenizer.message(m)).collect();
        (messages, costs)
    })
    .await
    .map_err(|e| DomainError::Internal(format!("token counting failed: {e}")))
}

/// The context, bounded by messages, age and tokens: the newest messages
/// (blocked ones left out) while each bound holds, returned oldest first.
/// With a token budget, what the messages cost in a chat request (framing
/// and the reply's priming included) fits in it, counted with the chosen
/// tokenizer, and `maxMessages` defaults to its maximum.
pub async fn context(
    deps: &ApiDeps,
    owner_id: &str,
    conversation_id: &str,
    q: &ContextQuery,
) -> Result<ContextResponse, DomainError> {
    let budget = q.max_tokens;
    let tokenizer = q.tokenizer;
    let wanted = q.max_messages;
    let since = q.max_age.and_then(|age| deps.clock.now().checked_sub_signed(age));
    let (record, after) = load_after(deps, owner_id, conversation_id, q.after.as_deref(), true).await?;
    // Newest first; with a budget, in smaller pages, as it may be spent soon.
    let page_size = if budget.is_some() { wanted.min(40) } else { wanted };
    let mut picked: Vec<(ContextMessage, Option<usize>)> = Vec::with_capacity(wanted);
    let mut used = tokens::REPLY_PRIMING;
    let mut full = false;
    let mut cursor = None;
    // Bounded: blocked messages are rare; stop after a few pages regardless.
    for _ in 0..8 {
        let page = deps
            .store
            .messages
            .list_messages(
                conversation_id,
                &MessageQuery {
                    cursor,
                    limit: page_size,
                    order: Order::Desc,
                    since,
                    until: None,
                    known_count: Some(record.conversation.message_count),
                },
            )
            .await?;
        let candidates: Vec<ContextMessage> = page
            .items
            .into_iter()
            .filter(|m| !m.blocked && !m.removed)
            .map(context_message)
            .collect();
        // Each message is counted once, a page at a time, off the executor.
        let (candidates, costs) = match budget {
            Some(_) => {
                let (m, c) = count_tokens(tokenizer, candidates).await?;
                (m, c.into_iter().map(Some).collect::<Vec<_>>())
            }
            None => {
                let n = candidates.len();
                (candidates, vec![None; n])
            }
        };
        for (m, cost) in candidates.into_iter().zip(costs) {
            if let (Some(limit), Some(cost)) = (budget, cost) {
                if used + cost > limit {
                    full = true;
                    break;
                }
                used += cost;
            }
            picked.push((m, cost));
            if picked.len() == wanted {
                full = true;
                break;
            }
        }
        if full || page.next_cursor.is_none() {
            break;
        }
        cursor = page.next_cursor;
    }
    picked.reverse();
    let paired = pair_tool_results(picked);
    let tokens = match budget {
        Some(_) => {
            // Only a message pairing changed is counted again.
            let changed: Vec<ContextMessage> = paired
                .iter()
                .filter(|(_, c)| c.is_none())
                .map(|(m, _)| m.clone())
                .collect();
            let recounted: usize = if changed.is_empty() {
                0
            } else {
                count_tokens(tokenizer, changed).await?.1.into_iter().sum()
            };
            Some(tokens::REPLY_PRIMING + paired.iter().filter_map(|(_, c)| *c).sum::<usize>() + recounted)
        }
        None => None,
    };
    let messages: Vec<ContextMessage> = paired.into_iter().map(|(m, _)| m).collect();
    Ok(ContextResponse {
        conversation_id: conversation_id.to_string(),
        messages,
        tokens,
        after,
    })
}
