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

/// Chooses a context's messages, newest first, within its bounds: fed a
/// page of messages at a time (of one conversation or several in turn),
/// it keeps the ones that fit and says when the bounds are reached.
struct Picker {
    budget: Option<usize>,
    tokenizer: Tokenizer,
    wanted: usize,
    used: usize,
    full: bool,
    /// Newest first: the message, its cost (with a budget), and which
    /// source (conversation) it came from.
    picked: Vec<(ContextMessage, Option<usize>, usize)>,
}

impl Picker {
    fn new(q: &ContextQuery) -> Self {
        Self {
            budget: q.max_tokens,
            tokenizer: q.tokenizer,
            wanted: q.max_messages,
            used: tokens::REPLY_PRIMING,
            full: false,
            picked: Vec::with_capacity(q.max_messages),
        }
    }

    /// Messages to read per page: with a budget, smaller pages, as it may
    /// be spent soon.
    fn page_size(&self) -> usize {
        let left = self.wanted - self.picked.len().min(self.wanted);
        let size = if self.budget.is_some() { left.min(40) } else { left };
        size.max(1)
    }

    /// Takes what fits of a page (newest first) from `source`.
    async fn take(&mut self, page: Vec<Message>, source: usize) -> Result<(), DomainError> {
        let candidates: Vec<ContextMessage> = page
            .into_iter()
            .filter(|m| !m.blocked && !m.removed)
            .map(context_message)
            .collect();
        // Each message is counted once, a page at a time, off the executor.
        let (candidates, costs) = match self.budget {
            Some(_) => {
                let (m, c) = count_tokens(self.tokenizer, candidates).await?;
                (m, c.into_iter().map(Some).collect::<Vec<_>>())
            }
            None => {
                let n = candidates.len();
                (candidates, vec![None; n])
            }
        };
        for (m, cost) in candidates.into_iter().zip(costs) {
            if let (Some(limit), Some(cost)) = (self.budget, cost) {
                if self.used + cost > limit {
                    self.full = true;
                    return Ok(());
                }
                self.used += cost;
            }
            self.picked.push((m, cost, source));
            if self.picked.len() >= self.wanted {
                self.full = true;
                return Ok(());
            }
        }
        Ok(())
    }

    /// The messages oldest first, each with its source, tool calls paired
    /// with their results within each source, and their total cost with a
    /// budget.
    async fn finish(self) -> Result<(Vec<(ContextMessage, usize)>, Option<usize>), DomainError> {
        let mut picked = self.picked;
        picked.reverse();
        // Sources come in runs (each was read whole before the next).
        let mut paired: Vec<(ContextMessage, Option<usize>, usize)> = Vec::with_capacity(picked.len());
        let mut run: Vec<(ContextMessage, Option<usize>)> = Vec::new();
        let mut run_source = None;
        for (m, cost, source) in picked {
            if run_source.is_some_and(|s| s != source) {
                let s = run_source.unwrap_or(source);
                paired.extend(
                    pair_tool_results(std::mem::take(&mut run))
                        .into_iter()
                        .map(|(m, c)| (m, c, s)),
                );
            }
            run_source = Some(source);
            run.push((m, cost));
        }
        if let Some(s) = run_source {
            paired.extend(pair_tool_results(run).into_iter().map(|(m, c)| (m, c, s)));
        }
        let tokens = match self.budget {
            Some(_) => {
                // Only a message pairing changed is counted again.
                let changed: Vec<ContextMessage> = paired
                    .iter()
                    .filter(|(_, c, _)| c.is_none())
                    .map(|(m, _, _)| m.clone())
                    .collect();
                let recounted: usize = if changed.is_empty() {
                    0
                } else {
                    count_tokens(self.tokenizer, changed).await?.1.into_iter().sum()
                };
                Some(tokens::REPLY_PRIMING + paired.iter().filter_map(|(_, c, _)| *c).sum::<usize>() + recounted)
            }
            None => None,
        };
        Ok((paired.into_iter().map(|(m, _, s)| (m, s)).collect(), tokens))
    }
}

/// Feeds the picker one conversation's messages, newest first, from `since`.
async fn pick_from(
    deps: &ApiDeps,
    picker: &mut Picker,
    record: &ConversationRecord,
    since: Option<Timestamp>,
    source: usize,
) -> Result<(), DomainError> {
    let mut cursor = None;
    // Bounded: blocked messages are rare; stop after a few pages regardless.
    for _ in 0..8 {
        let page = deps
            .store
            .messages
            .list_messages(
                record.id(),
                &MessageQuery {
                    cursor,
                    limit: picker.page_size(),
                    order: Order::Desc,
                    since,
                    until: None,
                    known_count: Some(record.conversation.message_count),
                },
            )
            .await?;
        // Newest first: a page that reaches the first message is the last.
        let reached_first = page.items.last().is_some_and(|m| m.message_index == 0);
        picker.take(page.items, source).await?;
        if picker.full || reached_first || page.next_cursor.is_none() {
            return Ok(());
        }
        cursor = page.next_cursor;
    }
    Ok(())
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
    let since = q.max_age.and_then(|age| deps.clock.now().checked_sub_signed(age));
    let (record, after) = load_after(deps, owner_id, conversation_id, q.after.as_deref(), true).await?;
    let mut picker = Picker::new(q);
    pick_from(deps, &mut picker, &record, since, 0).await?;
    let (messages, tokens) = picker.finish().await?;
    Ok(ContextResponse {
        conversation_id: conversation_id.to_string(),
        messages: messages.into_iter().map(|(m, _)| m).collect(),
        tokens,
        after,
    })
}

/// How many of a user's most recently created conversations a user
/// context looks at (one page of the user index).
pub const USER_CONTEXT_CONVERSATIONS: usize = 10;

/// A user's context across their conversations (with one agent, when
/// asked): the newest messages of their most recently created
/// conversations, newest conversation first, within the same bounds as a
/// conversation's context, returned oldest first, each naming its
/// conversation. One read of the user index (its first
/// [`USER_CONTEXT_CONVERSATIONS`]) and the tail reads `context` makes, one
/// conversation after another until the bounds are reached; a
/// conversation whose last activity is older than `maxAge` is not read.
/// With `after=`, the user's newest conversation (the one an agent writes
/// to) is read once that write is applied.
pub async fn user_context(
    deps: &ApiDeps,
    owner_id: &str,
    user_id: &str,
    q: &UserContextQuery,
) -> Result<UserContextResponse, DomainError> {
    let user_id = user_id_param(user_id)?;
    let now = deps.clock.now();
    let since = q.context.max_age.and_then(|age| now.checked_sub_signed(age));
    let page = deps
        .store
        .lists
        .list_conversations(
            owner_id,
            &ConversationList::User(user_id.clone()),
            None,
            USER_CONTEXT_CONVERSATIONS,
        )
        .await?;
    let mut records: Vec<ConversationRecord> = page
        .items
        .into_iter()
        .filter(|r| {
            !r.deleting
                && !expired(r, now)
                && q.agent_id.as_ref().is_none_or(|a| *a == r.conversation.agent_id)
                && since.is_none_or(|t| r.conversation.last_activity_at >= t)
        })
        .collect();
    let mut after = None;
    let newest = records.first().map(|r| r.id().to_string());
    if let (Some(command), Some(newest)) = (q.context.after.as_deref(), newest) {
        let (record, status) = load_after(deps, owner_id, &newest, Some(command), true).await?;
        if let Some(first) = records.first_mut() {
            *first = record;
        }
        after = status;
    }
    let mut picker = Picker::new(&q.context);
    for (i, record) in records.iter().enumerate() {
        pick_from(deps, &mut picker, record, since, i).await?;
        if picker.full {
            break;
        }
    }
    let (messages, tokens) = picker.finish().await?;
    let mut conversations: Vec<String> = Vec::new();
    let messages = messages
        .into_iter()
        .map(|(message, i)| {
            let conversation_id = records.get(i).map(|r| r.id().to_string()).unwrap_or_default();
            if conversations.last() != Some(&conversation_id) {
                conversations.push(conversation_id.clone());
            }
            UserContextMessage {
                conversation_id,
                message,
            }
        })
        .collect();
    Ok(UserContextResponse {
        user_id,
        agent_id: q.agent_id.clone(),
        messages,
        conversations,
        tokens,
        after,
    })
}
