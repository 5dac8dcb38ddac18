//! Bills the recorded operations of both systems with one [`Ledger`] each,
//! and writes the results: `report.json`, `report.md` (the tables
//! BENCHMARKS.md carries) and `cost-latency.png`. Also runs the cold-start
//! measurements of every function and of the peer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::capacity::{Cost, Ledger, TableShape};
use crate::coldstart::{self, Summary, Target};
use crate::drive::{ConcurrencyResult, Harness, Operation};

/// The messages before a checkpoint whose appends make its window: the
/// last 100 (fewer for shorter conversations).
const WINDOW: usize = 100;

/// One system's figures at one conversation length.
#[derive(Debug, Clone, Serialize)]
pub struct AtLength {
    pub length: usize,
    pub reached: bool,
    /// Why the conversation could not reach this length (the peer's item
    /// size limit).
    pub failure: Option<String>,
    /// Table and index write units per stored message, over the window.
    pub write_units_per_message: f64,
    pub index_write_units_per_message: f64,
    /// A whole conversation of this length: its creation, every append up
    /// to it, and (convo) its end with the title jobs.
    pub cumulative_write_units_per_message: f64,
    pub dynamodb_requests_per_append: f64,
    /// convo: the API's share of `dynamodb_requests_per_append`.
    pub api_requests_per_append: Option<f64>,
    pub queue_requests_per_append: f64,
    pub read_units_per_append: f64,
    pub tail_read_units: f64,
    pub tail_bytes: f64,
    pub tail_requests: f64,
    /// convo: the same read with `after=` the last append's command.
    pub tail_after_read_units: Option<f64>,
    pub append_ms_p50: f64,
    pub worker_ms_p50: Option<f64>,
    pub tail_ms_p50: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn read_lines(path: &Path) -> Result<Vec<Operation>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

/// LangChain's documented table for DynamoDBChatMessageHistory: hash key
/// `SessionId`, no sort key, no index.
fn peer_shape() -> TableShape {
    TableShape {
        hash: "SessionId".into(),
        range: None,
        indexes: Vec::new(),
    }
}

/// The operations of one system, billed in order through one ledger.
pub struct Billed {
    /// Per operation: its DynamoDB cost and its queue requests.
    pub costs: Vec<(Cost, Cost)>,
    /// Table write units by kind of item, over the appends only.
    pub append_writes_by_kind: BTreeMap<String, f64>,
    /// The same for the operations a conversation makes once (`setup`,
    /// `end`), per operation.
    pub once_writes_by_kind: BTreeMap<String, BTreeMap<String, f64>>,
}

pub fn bill(ops: &[Operation]) -> Result<Billed, String> {
    let mut ledger = Ledger::default();
    let mut costs = Vec::with_capacity(ops.len());
    let mut append_writes_by_kind = BTreeMap::new();
    let mut once_writes_by_kind: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for op in ops {
        if let Some(desc) = &op.table {
            let name = desc["TableName"].as_str().ok_or("table record without a name")?;
            ledger.add_table(name, TableShape::from_description(desc)?);
        }
        let mut cost = Cost::default();
        for r in &op.requests {
            if op.system == "peer"
                && r.op != "DescribeTable"
                && r.op != "CreateTable"
                && let Some(name) = r.request["TableName"].as_str()
            {
                ledger.add_table_if_missing(name, peer_shape());
            }
            cost.add(&ledger.apply(&r.op, &r.request, &r.response, r.request_bytes, r.response_bytes)?);
        }
        let kinds = std::mem::take(&mut ledger.writes_by_kind);
        if op.kind == "append" {
            for (k, v) in kinds {
                *append_writes_by_kind.entry(k).or_default() += v;
            }
        } else if op.kind == "setup" || op.kind == "end" {
            let once = once_writes_by_kind.entry(op.kind.clone()).or_default();
            for (k, v) in kinds {
                *once.entry(k).or_default() += v;
            }
        }
        let queue = Cost {
            requests: op.queue_requests.len(),
            ..Default::default()
        };
        costs.push((cost, queue));
    }
    Ok(Billed {
        costs,
        append_writes_by_kind,
        once_writes_by_kind,
    })
}

/// Table write units per stored message by kind of item, over every append.
pub fn writes_by_kind(ops: &[Operation], billed: &Billed) -> Vec<(String, f64)> {
    let stored: usize = ops
        .iter()
        .filter(|o| o.kind == "append" && o.error.is_none())
        .map(|o| o.messages)
        .sum();
    billed
        .append_writes_by_kind
        .iter()
        .map(|(k, v)| (k.clone(), v / stored.max(1) as f64))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// The figures of one system at each length.
pub fn at_lengths(ops: &[Operation], billed: &Billed, lengths: &[usize]) -> Vec<AtLength> {
    let billed = &billed.costs;
    let failure = ops
        .iter()
        .find(|o| o.kind == "append" && o.error.is_some())
        .map(|o| (o.messages_before, o.error.clone().unwrap_or_default()));
    let appends: Vec<(&Operation, &(Cost, Cost))> = ops
        .iter()
        .zip(billed)
        .filter(|(o, _)| o.kind == "append" && o.error.is_none())
        .collect();
    // A conversation is created once and ended once, whatever its length.
    let once_writes: f64 = ops
        .iter()
        .zip(billed)
        .filter(|(o, _)| o.kind == "setup" || o.kind == "end")
        .map(|(_, (c, _))| c.all_writes())
        .sum();
    let mut rows = Vec::new();
    for &length in lengths {
        let window_start = length.saturating_sub(WINDOW.min(length));
        let reached = appends.iter().any(|(o, _)| o.messages_before + o.messages >= length);
        let window: Vec<_> = appends
            .iter()
            .filter(|(o, _)| o.messages_before >= window_start && o.messages_before < length)
            .collect();
        let stored: usize = window.iter().map(|(o, _)| o.messages).sum();
        let sum = |f: &dyn Fn(&Cost) -> f64| window.iter().map(|(_, (c, _))| f(c)).sum::<f64>();
        let upto: Vec<_> = appends.iter().filter(|(o, _)| o.messages_before < length).collect();
        let upto_stored: usize = upto.iter().map(|(o, _)| o.messages).sum();
        let tails: Vec<_> = ops
            .iter()
            .zip(billed)
            .filter(|(o, _)| o.kind == "tail" && o.messages_before == length && o.error.is_none())
            .collect();
        let after_reads: Vec<f64> = ops
            .iter()
            .zip(billed)
            .filter(|(o, _)| o.kind == "tail-after" && o.messages_before == length)
            .map(|(_, (c, _))| c.read_units)
            .collect();
        let api_requests: Vec<f64> = window
            .iter()
            .filter_map(|(o, _)| o.api_requests.map(|n| n as f64))
            .collect();
        let n = window.len().max(1) as f64;
        let t = tails.len().max(1) as f64;
        rows.push(AtLength {
            length,
            reached,
            failure: match (&failure, reached) {
                (Some((at, e)), false) => Some(format!("fails at {at} messages: {}", first_line(e))),
                _ => None,
            },
            write_units_per_message: sum(&|c| c.write_units) / stored.max(1) as f64,
            index_write_units_per_message: sum(&|c| c.index_write_units) / stored.max(1) as f64,
            cumulative_write_units_per_message: (upto.iter().map(|(_, (c, _))| c.all_writes()).sum::<f64>()
                + once_writes)
                / upto_stored.max(1) as f64,
            dynamodb_requests_per_append: sum(&|c| c.requests as f64) / n,
            api_requests_per_append: (!api_requests.is_empty())
                .then(|| api_requests.iter().sum::<f64>() / api_requests.len() as f64),
            queue_requests_per_append: window.iter().map(|(_, (_, q))| q.requests as f64).sum::<f64>() / n,
            read_units_per_append: sum(&|c| c.read_units) / n,
            tail_read_units: tails.iter().map(|(_, (c, _))| c.read_units).sum::<f64>() / t,
            tail_bytes: tails.iter().map(|(_, (c, _))| c.response_bytes as f64).sum::<f64>() / t,
            tail_requests: tails.iter().map(|(_, (c, _))| c.requests as f64).sum::<f64>() / t,
            tail_after_read_units: (!after_reads.is_empty())
                .then(|| after_reads.iter().sum::<f64>() / after_reads.len() as f64),
            append_ms_p50: median(window.iter().map(|(o, _)| o.ms).collect()),
            worker_ms_p50: window
                .iter()
                .map(|(o, _)| o.worker_ms)
                .collect::<Option<Vec<f64>>>()
                .filter(|v| !v.is_empty())
                .map(median),
            tail_ms_p50: median(tails.iter().map(|(o, _)| o.ms).collect()),
        });
    }
    rows
}

/// Published us-east-1 prices in US dollars (on demand, first tier), for the
/// cost model; the pages are cited in BENCHMARKS.md.
mod price {
    /// DynamoDB on-demand: $0.625 per million write request units.
    pub const DYNAMODB_WRITE_UNIT: f64 = 0.625e-6;
    /// DynamoDB on-demand: $0.125 per million read request units.
    pub const DYNAMODB_READ_UNIT: f64 = 0.125e-6;
    /// SQS FIFO: $0.50 per million requests (each 64 KB is a request).
    pub const SQS_FIFO_REQUEST: f64 = 0.50e-6;
    /// Lambda: $0.20 per million requests.
    pub const LAMBDA_REQUEST: f64 = 0.20e-6;
    /// Lambda on arm64: $0.0000133334 per GB-second.
    pub const LAMBDA_ARM_GB_SECOND: f64 = 0.000_013_333_4;
    /// API Gateway HTTP API: $1.00 per million requests.
    pub const HTTP_API_REQUEST: f64 = 1.00e-6;
    /// Amazon Bedrock AgentCore Memory, short-term memory: $0.25 per 1,000
    /// new events (one event holds an exchange).
    pub const AGENTCORE_EVENT: f64 = 0.25e-3;
}

/// The template's memory sizes (GB): the API functions and the worker.
const API_MEMORY_GB: f64 = 0.25;
const WORKER_MEMORY_GB: f64 = 0.5;

/// Dollars per million stored messages, from the counted requests.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Dollars {
    pub dynamodb_writes: f64,
    pub dynamodb_reads: f64,
    pub sqs: f64,
    pub lambda: f64,
    pub http_api: f64,
    pub total: f64,
    /// The same with one `GET /context?after=` per exchange, as an agent
    /// makes.
    pub with_context_reads: f64,
}

/// convo's bill per million messages at one length: an exchange (two
/// messages) per append, each through the HTTP API, the API function, the
/// FIFO queue (send, the event source mapping's receive and delete) and the
/// worker; Lambda's time is the measured median on moto (an upper bound:
/// moto answers far slower than DynamoDB).
pub fn convo_dollars(c: &AtLength) -> Dollars {
    let per_append_messages = 2.0;
    let million = 1e6;
    let dynamodb_writes = c.cumulative_write_units_per_message * price::DYNAMODB_WRITE_UNIT * million;
    let dynamodb_reads = c.read_units_per_append / per_append_messages * price::DYNAMODB_READ_UNIT * million;
    let sqs = c.queue_requests_per_append / per_append_messages * price::SQS_FIFO_REQUEST * million;
    let gb_seconds =
        (API_MEMORY_GB * c.append_ms_p50.ceil() + WORKER_MEMORY_GB * c.worker_ms_p50.unwrap_or(0.0).ceil()) / 1000.0;
    let lambda =
        (2.0 * price::LAMBDA_REQUEST + gb_seconds * price::LAMBDA_ARM_GB_SECOND) / per_append_messages * million;
    let http_api = price::HTTP_API_REQUEST / per_append_messages * million;
    let total = dynamodb_writes + dynamodb_reads + sqs + lambda + http_api;
    let read = c.tail_after_read_units.unwrap_or(c.tail_read_units) * price::DYNAMODB_READ_UNIT
        + price::HTTP_API_REQUEST
        + price::LAMBDA_REQUEST
        + API_MEMORY_GB * c.tail_ms_p50.ceil() / 1000.0 * price::LAMBDA_ARM_GB_SECOND;
    Dollars {
        dynamodb_writes,
        dynamodb_reads,
        sqs,
        lambda,
        http_api,
        total,
        with_context_reads: total + read / per_append_messages * million,
    }
}

/// The peer's DynamoDB bill per million messages (it runs inside the
/// agent's process: no queue, function or API of its own).
pub fn peer_dollars(p: &AtLength) -> f64 {
    (p.cumulative_write_units_per_message * price::DYNAMODB_WRITE_UNIT
        + p.read_units_per_append / 2.0 * price::DYNAMODB_READ_UNIT)
        * 1e6
}

pub fn agentcore_dollars() -> f64 {
    price::AGENTCORE_EVENT / 2.0 * 1e6
}

fn write_cost_model(md: &mut String, convo: &[AtLength], peer: &[AtLength]) {
    let _ = writeln!(md, "\n### Dollars per million stored messages (us-east-1, on demand)\n");
    let _ = writeln!(
        md,
        "From the counted requests above at published prices (see \"Cost model\" below): a whole \
         conversation of each length, one exchange per append. convo: DynamoDB, SQS FIFO, Lambda (arm64, the \
         template's 256 MB API and 512 MB worker, at the median times measured on moto) and the HTTP API; \
         also with one `GET /context?after=` per exchange. The peer: its DynamoDB requests only. AgentCore \
         Memory: $0.25 per 1,000 short-term events, one event per exchange.\n"
    );
    let _ = writeln!(
        md,
        "| messages | convo: DynamoDB writes | reads | SQS | Lambda | HTTP API | total | with a context read per exchange | peer (DynamoDB) | AgentCore Memory | AgentCore ÷ convo |"
    );
    let _ = writeln!(
        md,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let agentcore = agentcore_dollars();
    for (i, c) in convo.iter().enumerate() {
        let d = convo_dollars(c);
        let peer = match peer.get(i) {
            Some(p) if p.reached => format!("{:.2}", peer_dollars(p)),
            Some(_) => "fails".into(),
            None => "not run".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | **{:.2}** | {:.2} | {} | {:.2} | {:.0} × |",
            c.length,
            d.dynamodb_writes,
            d.dynamodb_reads,
            d.sqs,
            d.lambda,
            d.http_api,
            d.total,
            d.with_context_reads,
            peer,
            agentcore,
            agentcore / d.total
        );
    }
}

/// The error's class and message, without the SDK's wrapping ("An error
/// occurred (X) when calling the Y operation: message").
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    let short = match (line.find("An error occurred ("), line.find("operation: ")) {
        (Some(a), Some(b)) => {
            let class = &line[a + 19..];
            let class = &class[..class.find(')').unwrap_or(class.len())];
            format!("{class}: {}", &line[b + 11..])
        }
        _ => line.to_string(),
    };
    short.chars().take(120).collect()
}

fn lengths_of(ops: &[Operation]) -> Vec<usize> {
    let mut l: Vec<usize> = ops
        .iter()
        .filter(|o| o.kind == "tail")
        .map(|o| o.messages_before)
        .collect();
    l.sort_unstable();
    l.dedup();
    l
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio(peer: f64, convo: f64) -> String {
    if peer.is_nan() || convo.is_nan() || convo == 0.0 {
        "—".into()
    } else {
        format!("{:.1} ×", peer / convo)
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes `report.json`, `report.md` and `cost-latency.png` into `dir`
/// from what `bench/run` left there.
pub fn write(dir: &Path) -> Result<(), String> {
    let convo_ops = read_lines(&dir.join("convo-cost.jsonl"))?;
    let peer_ops = read_lines(&dir.join("peer-cost.jsonl")).unwrap_or_default();
    let lengths = lengths_of(&convo_ops);
    let convo_billed = bill(&convo_ops)?;
    let convo = at_lengths(&convo_ops, &convo_billed, &lengths);
    let peer = if peer_ops.is_empty() {
        Vec::new()
    } else {
        at_lengths(&peer_ops, &bill(&peer_ops)?, &lengths)
    };
    let concurrency: Vec<ConcurrencyResult> = ["convo-concurrency.json", "peer-concurrency.json"]
        .iter()
        .filter_map(|f| read_json(&dir.join(f)))
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let coldstarts: Vec<Value> = read_json(&dir.join("coldstart.json"))
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let load = read_json(&dir.join("load.json"));

    let mut md = String::new();
    let p = |i: usize| peer.get(i);
    let _ = writeln!(md, "### Write and read cost by conversation length\n");
    let _ = writeln!(
        md,
        "Write units per stored message over the last {WINDOW} messages before each length (table + index; \
         convo's include everything an append writes: the messages with the conversation's head state, the \
         rate window, flag pointers and externalId claims when there are any); the same for a whole \
         conversation of that length (its creation, every append, and — convo — its end with the user's \
         totals and its title jobs); DynamoDB requests per append (convo: the API's + the worker's); the tail \
         read is the last 20 messages (convo: `GET /context?maxMessages=20`, and the same with `after=` the \
         append just made; peer: `history.messages[-20:]`).\n"
    );
    let _ = writeln!(
        md,
        "| messages | write units / message: convo | peer | peer ÷ convo | whole conversation: convo | peer | DynamoDB requests / append: convo (API + worker) | peer | SQS requests / append: convo | tail read units: convo | with `after=` | peer | tail read bytes: convo | peer |"
    );
    let _ = writeln!(
        md,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (i, c) in convo.iter().enumerate() {
        let (pw, pc, pr, pt, pb, pratio) = match p(i) {
            Some(x) if x.reached => (
                fmt(x.write_units_per_message + x.index_write_units_per_message),
                fmt(x.cumulative_write_units_per_message),
                fmt(x.dynamodb_requests_per_append),
                fmt(x.tail_read_units),
                fmt(x.tail_bytes),
                ratio(
                    x.write_units_per_message + x.index_write_units_per_message,
                    c.write_units_per_message + c.index_write_units_per_message,
                ),
            ),
            Some(x) => {
                let why = x.failure.clone().unwrap_or_else(|| "not reached".into());
                (why, "—".into(), "—".into(), "—".into(), "—".into(), "—".into())
            }
            None => (
                "not run".into(),
                "—".into(),
                "—".into(),
                "—".into(),
                "—".into(),
                "—".into(),
            ),
        };
        let requests = match c.api_requests_per_append {
            Some(api) => format!(
                "{} ({} + {})",
                fmt(c.dynamodb_requests_per_append),
                fmt(api),
                fmt(c.dynamodb_requests_per_append - api)
            ),
            None => fmt(c.dynamodb_requests_per_append),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.length,
            fmt(c.write_units_per_message + c.index_write_units_per_message),
            pw,
            pratio,
            fmt(c.cumulative_write_units_per_message),
            pc,
            requests,
            pr,
            fmt(c.queue_requests_per_append),
            fmt(c.tail_read_units),
            c.tail_after_read_units.map(fmt).unwrap_or_else(|| "—".into()),
            pt,
            fmt(c.tail_bytes),
            pb,
        );
    }
    let kinds = writes_by_kind(&convo_ops, &convo_billed);
    let _ = writeln!(
        md,
        "\nconvo's table write units per stored message by item (all appends; `C/M` a message chunk with the \
         head state, `C/META` the conversation item, `C/X` an externalId claim, `C/F` a flag pointer): {}.",
        kinds
            .iter()
            .map(|(k, v)| format!("`{k}` {v:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for op in ["setup", "end"] {
        let Some(kinds) = convo_billed.once_writes_by_kind.get(op) else {
            continue;
        };
        let what = if op == "setup" {
            "\nOnce per conversation, table write units for its creation (a transaction with the active pair)"
        } else {
            "and its end (a transaction with the user's totals, the release of the pair, the titles' writes)"
        };
        let total: f64 = kinds.values().sum();
        let _ = writeln!(
            md,
            "{what}: {} ({}){}",
            fmt(total),
            kinds
                .iter()
                .map(|(k, v)| format!("`{k}` {}", fmt(*v)))
                .collect::<Vec<_>>()
                .join(", "),
            if op == "setup" { ";" } else { "." }
        );
    }
    write_cost_model(&mut md, &convo, &peer);
    let _ = writeln!(md, "\n### Latency by conversation length (moto on loopback; medians)\n");
    let _ = writeln!(
        md,
        "convo's append is the API's answer (validate, screen, rate-limit, enqueue); the worker's persist is \
         shown beside it. The peer's append is `add_messages` (GetItem + UpdateItem of the whole history).\n"
    );
    let _ = writeln!(
        md,
        "| messages | append ms: convo (202) | convo worker persist | peer | tail read ms: convo | peer |"
    );
    let _ = writeln!(md, "| ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, c) in convo.iter().enumerate() {
        let (pa, pt) = match p(i) {
            Some(x) if x.reached => (fmt(x.append_ms_p50), fmt(x.tail_ms_p50)),
            Some(_) => ("failed".into(), "—".into()),
            None => ("not run".into(), "—".into()),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            c.length,
            fmt(c.append_ms_p50),
            c.worker_ms_p50.map(fmt).unwrap_or_else(|| "—".into()),
            pa,
            fmt(c.tail_ms_p50),
            pt
        );
    }
    if !concurrency.is_empty() {
        let _ = writeln!(md, "\n### Concurrency: writers appending to one conversation at once\n");
        let _ = writeln!(
            md,
            "| system | writers × appends | sent | stored | errors | indexes gapless, each message once |"
        );
        let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | --- |");
        for r in &concurrency {
            let _ = writeln!(
                md,
                "| {} | {} × {} | {} | {} | {} | {} |",
                r.system,
                r.writers,
                r.appends_per_writer,
                r.sent,
                r.stored,
                r.errors,
                match r.gapless_and_unique {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "—",
                }
            );
        }
    }
    if !coldstarts.is_empty() {
        let peer_init = coldstarts
            .iter()
            .find(|c| c["name"] == "peer (Python)")
            .and_then(|c| c["median_init_ms"].as_f64());
        let _ = writeln!(md, "\n### Cold start: exec to the first Runtime API `next` request\n");
        let _ = writeln!(
            md,
            "| binary | runs | median ms | min | max | peak RSS (MB, median) | handled the fixture | peer ÷ this |"
        );
        let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for c in &coldstarts {
            let median = c["median_init_ms"].as_f64().unwrap_or(f64::NAN);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {}/{} | {} |",
                c["name"].as_str().unwrap_or("?"),
                c["runs"],
                fmt(median),
                fmt(c["min_init_ms"].as_f64().unwrap_or(f64::NAN)),
                fmt(c["max_init_ms"].as_f64().unwrap_or(f64::NAN)),
                c["median_peak_rss_kb"]
                    .as_f64()
                    .map(|k| fmt(k / 1024.0))
                    .unwrap_or_else(|| "—".into()),
                c["responses"],
                c["runs"],
                peer_init.map(|p| ratio(p, median)).unwrap_or_else(|| "—".into()),
            );
        }
    }
    if let Some(l) = &load {
        let _ = writeln!(
            md,
            "\n### Local server (`convo-local serve --in-memory`), wrk, {} connections\n",
            l["connections"]
        );
        let _ = writeln!(md, "| request | requests/s | p50 ms | p99 ms | non-2xx |");
        let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: |");
        for (name, key) in [
            ("append (an exchange, 2 × 200 chars)", "append"),
            ("context (last 20)", "context"),
        ] {
            let r = &l[key];
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} |",
                fmt(r["rps"].as_f64().unwrap_or(f64::NAN)),
                fmt(r["p50_ms"].as_f64().unwrap_or(f64::NAN)),
                fmt(r["p99_ms"].as_f64().unwrap_or(f64::NAN)),
                r["non_2xx"]
            );
        }
        let lag = &l["lag"];
        let _ = writeln!(
            md,
            "\n202 → persisted (readable), {} sequential appends: p50 {} ms, p99 {} ms; accepted {} messages, persisted {}.",
            lag["samples"],
            fmt(lag["p50_ms"].as_f64().unwrap_or(f64::NAN)),
            fmt(lag["p99_ms"].as_f64().unwrap_or(f64::NAN)),
            l["persisted"]["accepted_messages"],
            l["persisted"]["persisted_messages"],
        );
    }
    std::fs::write(dir.join("report.md"), &md).map_err(|e| e.to_string())?;
    let summary = json!({
        "convo": convo,
        "peer": peer,
        "concurrency": concurrency,
        "coldstart": coldstarts,
        "load": load,
    });
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&summary).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    crate::plot::cost_and_latency(&dir.join("cost-latency.png"), &convo, &peer)?;
    print!("{md}");
    Ok(())
}

/// The fixture event each function's cold start is served.
const FUNCTIONS: [(&str, &str); 7] = [
    ("create-conversation", "apigw-create-conversation.json"),
    ("append-message", "apigw-append-message.json"),
    ("end-session", "apigw-end-session.json"),
    ("read-api", "apigw-context.json"),
    ("persist-writes", "sqs-persist-writes.json"),
    ("generate-title", "sqs-generate-title.json"),
    ("sweep-sessions", "eventbridge-sweep-sessions.json"),
];

/// Measures every function binary in `bin_dir` and the peer, against a
/// table and queues created on the endpoint, and writes the summaries.
pub async fn coldstart_all(
    bin_dir: &Path,
    runs: usize,
    peer_python: Option<&Path>,
    only: &[String],
    prefix: &str,
    out: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let h = Harness::new(prefix).await?;
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/events");
    let mut env: Vec<(String, String)> = vec![
        ("CONVO_TABLE".into(), h.settings.table.clone()),
        ("CONVO_WRITES_QUEUE_URL".into(), h.settings.writes_queue_url.clone()),
        ("CONVO_TITLES_QUEUE_URL".into(), h.settings.titles_queue_url.clone()),
        ("CONVO_EVENTS_QUEUE_URL".into(), h.settings.events_queue_url.clone()),
        ("CONVO_KEYS_TABLE".into(), h.settings.keys_table.clone()),
        ("CONVO_KMS_KEY_ID".into(), h.settings.kms_key_id.clone()),
        (
            "CONVO_ENCRYPTION".into(),
            if h.settings.config.encryption { "on" } else { "off" }.into(),
        ),
    ];
    for name in [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "PATH",
        "HOME",
    ] {
        if let Ok(v) = std::env::var(name) {
            env.push((name.into(), v));
        }
    }
    let mut summaries: Vec<Summary> = Vec::new();
    for (name, event) in FUNCTIONS {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let event_path = events.join(event);
        let event: Value =
            serde_json::from_slice(&std::fs::read(&event_path).map_err(|e| format!("{}: {e}", event_path.display()))?)
                .map_err(|e| e.to_string())?;
        let target = Target {
            name: name.into(),
            program: bin_dir.join(name),
            args: Vec::new(),
            env: env.clone(),
            event,
        };
        let s = coldstart::measure(&target, runs, timeout).await?;
        eprintln!("cold start {name}: {:.1} ms median", s.median_init_ms);
        if s.responses == 0 {
            return Err(format!(
                "{name} answered none of its {runs} fixture events: {:?}",
                s.samples.first().map(|x| &x.outcome)
            ));
        }
        summaries.push(s);
    }
    if let Some(python) = peer_python {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        let table = format!("{prefix}-peer");
        let _ = client
            .create_table()
            .table_name(&table)
            .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
            .key_schema(
                aws_sdk_dynamodb::types::KeySchemaElement::builder()
                    .attribute_name("SessionId")
                    .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .attribute_definitions(
                aws_sdk_dynamodb::types::AttributeDefinition::builder()
                    .attribute_name("SessionId")
                    .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .send()
            .await;
        let mut peer_env = env.clone();
        peer_env.push(("PEER_TABLE".into(), table));
        peer_env.push(("PEER_SESSION".into(), "coldstart".into()));
        let target = Target {
            name: "peer (Python)".into(),
            program: python.to_path_buf(),
            args: vec![
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("peer_lambda.py")
                    .display()
                    .to_string(),
            ],
            env: peer_env,
            event: json!({}),
        };
        let s = coldstart::measure(&target, runs, timeout).await?;
        eprintln!("cold start peer: {:.1} ms median", s.median_init_ms);
        summaries.push(s);
    }
    std::fs::write(out, serde_json::to_vec_pretty(&summaries).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
}
