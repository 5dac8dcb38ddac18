//! What a user's context costs (issue 25): the SMS case of seed 001, a user
//! who texted an agent in several sessions of a day, read back in one
//! `GET /users/{userId}/context`. Every DynamoDB request of the run is
//! captured and billed by the same ledger as the cost run (`report::bill`),
//! so the figures are counted, not timed.

use std::time::Instant;

use convo_schema::Role;
use convo_schema::api::AppendRequest;
use convo_schema::queries::{ContextParams, UserContextParams};
use serde::Serialize;

use crate::drive::{Harness, OWNER, Operation, exchanges, new_message};

/// One user-context read, billed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserContextCost {
    pub conversations: usize,
    pub messages_per_conversation: usize,
    pub max_messages: usize,
    /// Messages the read returned, and from how many conversations.
    pub returned: usize,
    pub from_conversations: usize,
    pub dynamodb_requests: usize,
    /// Each request: its operation, table and index.
    pub request_list: Vec<String>,
    pub read_units: f64,
    pub response_bytes: usize,
    pub ms: f64,
}

/// `conversations` sessions of `exchanges_per` exchanges (all but the last
/// ended), then one user context read per `max_messages`.
pub async fn run(
    prefix: &str,
    conversations: usize,
    exchanges_per: usize,
    max_messages: &[usize],
) -> Result<Vec<UserContextCost>, String> {
    let h = Harness::new(prefix).await?;
    let mut ops = vec![Operation {
        table: Some(h.table_description.clone()),
        ..Operation::convo("table", 0)
    }];
    let user = "texter-1";
    let texts = exchanges(exchanges_per);
    for i in 0..conversations {
        let cid = h.create_conversation(user).await?;
        for [u, a] in &texts {
            let req = AppendRequest {
                messages: vec![new_message(Role::User, u), new_message(Role::Assistant, a)],
            };
            convo_domain::service::append_messages(&h.deps, OWNER, &cid, req, None)
                .await
                .map_err(|e| format!("append: {e:?}"))?;
            h.drain(1).await?;
        }
        if i + 1 < conversations {
            convo_domain::service::end_session(&h.deps, OWNER, &cid, None)
                .await
                .map_err(|e| format!("end: {e:?}"))?;
            h.drain(1).await?;
            h.drain_titles().await?;
        }
    }
    ops.push(Operation {
        requests: h.dynamo.take(),
        queue_requests: h.sqs.take(),
        ..Operation::convo("setup", 0)
    });
    let mut reads = Vec::new();
    for &max in max_messages {
        let max_text = max.to_string();
        let query = UserContextParams {
            agent_id: Some("toy-7"),
            context: ContextParams {
                max_messages: Some(&max_text),
                max_age: Some("24h"),
                ..Default::default()
            },
        }
        .parse()
        .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let ctx = convo_domain::service::user_context(&h.deps, OWNER, user, &query)
            .await
            .map_err(|e| format!("user context: {e:?}"))?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        ops.push(Operation {
            ms,
            requests: h.dynamo.take(),
            queue_requests: h.sqs.take(),
            returned: Some(ctx.messages.len()),
            ..Operation::convo("user-context", 0)
        });
        let list = ops
            .last()
            .map(|op| {
                op.requests
                    .iter()
                    .map(|r| {
                        let table = r.request["TableName"].as_str().unwrap_or("");
                        let mut text = match r.request["IndexName"].as_str() {
                            Some(index) => format!("{} {table} ({index})", r.op),
                            None => format!("{} {table}", r.op),
                        };
                        if let Some(limit) = r.request["Limit"].as_u64() {
                            text.push_str(&format!(" limit {limit}"));
                        }
                        if let Some(count) = r.response["Count"].as_u64() {
                            text.push_str(&format!(", {count} items"));
                        }
                        text
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        reads.push((max, ctx.messages.len(), ctx.conversations.len(), ms, list));
    }
    let billed = crate::report::bill(&ops)?;
    let costs = &billed.costs[billed.costs.len() - reads.len()..];
    Ok(reads
        .into_iter()
        .zip(costs)
        .map(|((max, returned, from, ms, request_list), (cost, _))| UserContextCost {
            conversations,
            messages_per_conversation: 2 * exchanges_per,
            max_messages: max,
            returned,
            from_conversations: from,
            dynamodb_requests: cost.requests,
            request_list,
            read_units: cost.read_units,
            response_bytes: cost.response_bytes,
            ms,
        })
        .collect())
}
