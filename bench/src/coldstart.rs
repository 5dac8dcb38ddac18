//! Cold start (issue 6): how long a Lambda function's process takes, from
//! `exec` to its first request to the Lambda Runtime API's `next` endpoint,
//! and how much memory it peaks at while serving one event.
//!
//! Each run starts a fresh process against a small emulator of the Runtime
//! API (an axum server on `127.0.0.1`, fresh per run) that serves one fixture
//! event, records what the process answers, and then holds the process's
//! following `next` request forever, as Lambda does while an environment is
//! frozen between invocations. The peak resident set (`VmHWM` of
//! `/proc/<pid>/status`) is read while the process is still alive, then the
//! process is killed and reaped. Runs are sequential, so runs never compete
//! with each other for the machine's cores.
//!
//! The same measure applies to any runtime client: the Rust functions'
//! binaries and the Python peer (`python3 -m awslambdaric …`) alike.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// A process to measure: a Lambda runtime client and the event it is served.
#[derive(Debug, Clone)]
pub struct Target {
    /// The function's name: `AWS_LAMBDA_FUNCTION_NAME`, the ARN, the report.
    pub name: String,
    /// The executable (a path, or a name looked up in `PATH`). It should be
    /// the runtime client itself, not a wrapper that forks it: only this
    /// process is measured and killed.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The process's environment besides the Lambda variables. The process
    /// does not inherit the caller's environment (only `PATH`), as a Lambda
    /// environment would not, and so that the caller's `AWS_*`, `RUST_LOG`
    /// or proxy settings do not change what is measured. An entry here
    /// overrides a default (`AWS_REGION`, `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`,
    /// …), except `AWS_LAMBDA_RUNTIME_API`, which is always the emulator.
    pub env: Vec<(String, String)>,
    /// The event served by the first `next`.
    pub event: serde_json::Value,
}

/// One run: one fresh process serving one event.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Milliseconds from just before the process was spawned to the arrival
    /// of its first `next` request. For a process that never asks for an
    /// event, up to whichever came first: its init error, its exit, or the
    /// timeout (the `outcome` tells which).
    pub init_ms: f64,
    /// The process's peak resident set (`VmHWM`) in kB, read after it
    /// answered the event and while it was alive; `None` if it could not be
    /// read (the process had exited, or never answered).
    pub peak_rss_kb: Option<u64>,
    pub outcome: Outcome,
}

/// How a run ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Outcome {
    /// The process posted a response for the event (body truncated to about
    /// 2 KB).
    Response { body: String },
    /// The process posted an invocation error for the event.
    Error { body: String },
    /// The process posted an initialisation error.
    InitError { body: String },
    /// The process exited before answering (`code` is `None` if a signal
    /// ended it).
    Exited { code: Option<i32> },
    /// The process neither answered nor exited within the timeout.
    TimedOut,
}

/// All the runs of one target.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub runs: usize,
    /// Median, minimum and maximum of `init_ms` over all runs.
    pub median_init_ms: f64,
    pub min_init_ms: f64,
    pub max_init_ms: f64,
    /// Median of the runs' peak RSS, over the runs where it could be read.
    pub median_peak_rss_kb: Option<u64>,
    /// How many runs ended in [`Outcome::Response`].
    pub responses: usize,
    pub samples: Vec<Sample>,
}

/// The Runtime API's version prefix.
const API: &str = "/2018-06-01/runtime";
/// The invocation's time budget, announced by `Lambda-Runtime-Deadline-Ms`.
const INVOCATION_BUDGET_MS: i64 = 30_000;
/// The memory size announced to the process, in MB.
const MEMORY_SIZE_MB: &str = "256";
/// The account in the function's ARN.
const ACCOUNT: &str = "123456789012";
/// The region when the target's environment names none.
const DEFAULT_REGION: &str = "us-east-1";
/// How much of a posted body a sample keeps, in bytes.
const BODY_KEPT: usize = 2048;
/// How often the run checks whether the process has exited.
const EXIT_POLL: Duration = Duration::from_millis(5);
/// How long, after the process answered, the run waits for its next `next`
/// (the sign that it is done with the event) before reading its peak RSS.
const SETTLE: Duration = Duration::from_secs(2);
/// How long a handler waits for the run to acknowledge an answer (the run
/// reads the RSS in between, while the process awaits the reply).
const ACK_WAIT: Duration = Duration::from_secs(5);
/// How long killing and reaping, or stopping the emulator, may take before
/// the run falls back to a blocking wait, or aborts the server task.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Measures `runs` cold starts of `target`, one after the other; each run
/// gets `timeout` from spawn to the process's answer. Fails only if a run
/// cannot be set up (no runs, the emulator cannot listen, the program
/// cannot be spawned, the process cannot be waited for); a process that
/// misbehaves is a sample with the corresponding [`Outcome`].
pub async fn measure(target: &Target, runs: usize, timeout: Duration) -> Result<Summary, String> {
    if runs == 0 {
        return Err(format!("{}: no runs asked for", target.name));
    }
    let event = Bytes::from(
        serde_json::to_vec(&target.event).map_err(|e| format!("{}: cannot serialise the event: {e}", target.name))?,
    );
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        let sample = run_once(target, event.clone(), timeout, run)
            .await
            .map_err(|e| format!("{}: run {} of {runs}: {e}", target.name, run + 1))?;
        samples.push(sample);
    }
    Ok(summarise(&target.name, samples))
}

/// Figures over the samples (which must not be empty).
fn summarise(name: &str, samples: Vec<Sample>) -> Summary {
    let mut init: Vec<f64> = samples.iter().map(|s| s.init_ms).collect();
    init.sort_by(f64::total_cmp);
    let mut rss: Vec<u64> = samples.iter().filter_map(|s| s.peak_rss_kb).collect();
    rss.sort_unstable();
    Summary {
        name: name.to_string(),
        runs: samples.len(),
        median_init_ms: median_f64(&init),
        min_init_ms: init.first().copied().unwrap_or(f64::NAN),
        max_init_ms: init.last().copied().unwrap_or(f64::NAN),
        median_peak_rss_kb: median_u64(&rss),
        responses: samples
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Response { .. }))
            .count(),
        samples,
    }
}

/// The median of sorted values (the mean of the middle two for an even
/// count); NaN for none.
fn median_f64(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The median of sorted values (the mean of the middle two, rounded down,
/// for an even count); `None` for none.
fn median_u64(sorted: &[u64]) -> Option<u64> {
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some(sorted[n / 2 - 1] / 2 + sorted[n / 2] / 2 + (sorted[n / 2 - 1] % 2 + sorted[n / 2] % 2) / 2),
    }
}

/// One run: a fresh emulator, a fresh process, one event.
async fn run_once(target: &Target, event: Bytes, timeout: Duration, run: usize) -> Result<Sample, String> {
    let region = target
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "AWS_REGION")
        .map_or(DEFAULT_REGION, |(_, v)| v.as_str());
    let mut server = Server::start(&target.name, region, event, run).await?;
    let mut command = command(target, &server.address);

    let started = Instant::now();
    let child = command
        .spawn()
        .map_err(|e| format!("cannot spawn {}: {e}", target.program.display()))?;
    let mut child = Reaper::new(child);
    let deadline = tokio::time::Instant::from_std(started + timeout);

    let mut state = RunState::default();
    let mut exited: Option<ExitStatus> = None;
    loop {
        // After an answer, wait for the process's next `next`, not longer
        // than `SETTLE` (and never past the deadline).
        let limit = state.settle.map_or(deadline, |s| s.min(deadline));
        tokio::select! {
            biased;
            report = server.reports.recv() => {
                let Some(report) = report else {
                    return Err("the Runtime API emulator stopped".into());
                };
                if state.apply(report, child.pid()) {
                    break;
                }
            }
            _ = tokio::time::sleep(EXIT_POLL) => {
                if let Some(status) = child.try_wait()? {
                    // An answer posted just before the exit is still an answer.
                    while let Ok(report) = server.reports.try_recv() {
                        state.apply(report, child.pid());
                    }
                    exited = Some(status);
                    break;
                }
            }
            _ = tokio::time::sleep_until(limit) => break,
        }
    }
    let ended = Instant::now();

    // The process is idle (or stuck) once it answered: its peak so far is
    // its peak for the event. Read it again now that it is done.
    if state.outcome.is_some()
        && exited.is_none()
        && child.try_wait()?.is_none()
        && let Some(kb) = read_peak_rss_kb(child.pid())
    {
        state.peak_rss_kb = Some(state.peak_rss_kb.map_or(kb, |earlier| earlier.max(kb)));
    }
    child.kill_and_reap().await?;
    server.stop().await;

    let outcome = match (state.outcome, exited) {
        (Some(outcome), _) => outcome,
        (None, Some(status)) => Outcome::Exited { code: status.code() },
        (None, None) => Outcome::TimedOut,
    };
    let init_end = state.init_end.unwrap_or(ended);
    Ok(Sample {
        init_ms: init_end.saturating_duration_since(started).as_secs_f64() * 1000.0,
        peak_rss_kb: state.peak_rss_kb,
        outcome,
    })
}

/// The command for one run: the target's program and arguments, a cleared
/// environment with `PATH`, the Lambda variables and the target's own, and
/// no standard streams (what the process logs is not measured, and is not
/// kept: it may contain the event).
fn command(target: &Target, address: &str) -> Command {
    let mut command = Command::new(&target.program);
    command
        .args(&target.args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    let stream = format!(
        "{}/[$LATEST]{:016x}",
        chrono::Utc::now().format("%Y/%m/%d"),
        random_u64()
    );
    let defaults = [
        ("AWS_LAMBDA_FUNCTION_NAME", target.name.clone()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", MEMORY_SIZE_MB.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", target.name)),
        ("AWS_LAMBDA_LOG_STREAM_NAME", stream),
        ("AWS_REGION", DEFAULT_REGION.to_string()),
    ];
    for (key, value) in defaults {
        command.env(key, value);
    }
    for (key, value) in &target.env {
        command.env(key, value);
    }
    command.env("AWS_LAMBDA_RUNTIME_API", address);
    command
}

/// What the run has seen so far.
#[derive(Default)]
struct RunState {
    /// When the process's initialisation ended: its first `next`, or its
    /// init error.
    init_end: Option<Instant>,
    outcome: Option<Outcome>,
    peak_rss_kb: Option<u64>,
    /// Until when to wait for the process's next `next` after its answer.
    settle: Option<tokio::time::Instant>,
}

impl RunState {
    /// Takes in one report of the emulator; true when the run is over (the
    /// process answered and asked for another event).
    fn apply(&mut self, report: Report, pid: u32) -> bool {
        match report {
            Report::Next { at, nth } => {
                if nth == 1 {
                    self.init_end.get_or_insert(at);
                }
                nth > 1 && self.outcome.is_some()
            }
            Report::Answer { outcome, at, ack } => {
                self.init_end.get_or_insert(at);
                if self.outcome.is_none() {
                    // The process is alive: it awaits the reply to its post.
                    self.peak_rss_kb = read_peak_rss_kb(pid);
                    self.outcome = Some(outcome);
                    self.settle = Some(tokio::time::Instant::now() + SETTLE);
                }
                let _ = ack.send(());
                false
            }
        }
    }
}

/// The peak resident set of a live process, in kB (`VmHWM` of
/// `/proc/<pid>/status`); `None` if the process is gone or a zombie, or
/// off Linux.
fn read_peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

/// `VmHWM`, in kB, from the text of `/proc/<pid>/status`.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// A random number, from the standard library's per-process hash keys (the
/// request and trace ids only need to differ between runs).
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

/// A child process that is killed and reaped however the run ends: on the
/// normal path by [`Reaper::kill_and_reap`], on an early return or a
/// cancelled future by `Drop`, so that no process outlives its run and no
/// zombie is left.
struct Reaper {
    child: Option<Child>,
    pid: u32,
}

impl Reaper {
    fn new(child: Child) -> Self {
        let pid = child.id();
        Reaper {
            child: Some(child),
            pid,
        }
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status if the process has exited (reaping it).
    fn try_wait(&mut self) -> Result<Option<ExitStatus>, String> {
        match self.child.as_mut() {
            Some(child) => child
                .try_wait()
                .map_err(|e| format!("cannot wait for process {}: {e}", self.pid)),
            None => Ok(None),
        }
    }

    /// Kills the process (if it still runs) and reaps it without blocking
    /// the runtime; if it is not gone within `STOP_WAIT`, `Drop` waits.
    async fn kill_and_reap(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        // Once reaped, `kill` does not signal (the pid may be reused), and it
        // reports no error for a process that has exited.
        let _ = child.kill();
        let give_up = Instant::now() + STOP_WAIT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => {
                    self.child = None;
                    return Ok(());
                }
                Ok(None) if Instant::now() < give_up => tokio::time::sleep(Duration::from_millis(1)).await,
                Ok(None) => return Err(format!("process {} did not die within {STOP_WAIT:?}", self.pid)),
                Err(e) => return Err(format!("cannot reap process {}: {e}", self.pid)),
            }
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the emulator tells the run.
enum Report {
    /// A `next` request arrived (the `nth` of this run).
    Next { at: Instant, nth: usize },
    /// The process answered; the emulator replies once `ack` is sent (or
    /// dropped), so the process is known to be alive until then.
    Answer {
        outcome: Outcome,
        at: Instant,
        ack: oneshot::Sender<()>,
    },
}

/// The emulator's state for one run.
struct Emulator {
    /// The fixture event, as served.
    event: Bytes,
    /// The headers of the one invocation (request id, deadline aside).
    request_id: String,
    invocation_headers: Vec<(HeaderName, HeaderValue)>,
    nexts: AtomicUsize,
    answered: AtomicBool,
    reports: mpsc::UnboundedSender<Report>,
    /// Becomes true when the run is over: held requests then end.
    shutdown: watch::Receiver<bool>,
}

/// The Runtime API emulator of one run.
struct Server {
    /// `127.0.0.1:<port>`, for `AWS_LAMBDA_RUNTIME_API`.
    address: String,
    reports: mpsc::UnboundedReceiver<Report>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    /// Listens on a free port of 127.0.0.1 and serves the one invocation of
    /// function `name` in `region`.
    async fn start(name: &str, region: &str, event: Bytes, run: usize) -> Result<Server, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("the Runtime API emulator cannot listen: {e}"))?;
        let address = listener
            .local_addr()
            .map_err(|e| format!("the Runtime API emulator has no address: {e}"))?
            .to_string();

        let (a, b) = (random_u64(), random_u64() ^ run as u64);
        let request_id = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        );
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let trace_id = format!(
            "Root=1-{epoch:08x}-{:024x};Parent={:016x};Sampled=0",
            ((u128::from(random_u64()) << 32) | u128::from(random_u64() >> 32)) & ((1u128 << 96) - 1),
            random_u64()
        );
        let arn = format!("arn:aws:lambda:{region}:{ACCOUNT}:function:{name}");
        let value = |what: &str, text: &str| {
            HeaderValue::from_str(text).map_err(|e| format!("the {what} is not a valid header value: {e}"))
        };
        let invocation_headers = vec![
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (
                HeaderName::from_static("lambda-runtime-aws-request-id"),
                value("request id", &request_id)?,
            ),
            (
                HeaderName::from_static("lambda-runtime-invoked-function-arn"),
                value("function ARN", &arn)?,
            ),
            (
                HeaderName::from_static("lambda-runtime-trace-id"),
                value("trace id", &trace_id)?,
            ),
        ];

        let (reports_tx, reports) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let emulator = Arc::new(Emulator {
            event,
            request_id,
            invocation_headers,
            nexts: AtomicUsize::new(0),
            answered: AtomicBool::new(false),
            reports: reports_tx,
            shutdown: shutdown_rx.clone(),
        });
        let app = Router::new()
            .route(&format!("{API}/invocation/next"), get(next))
            .route(&format!("{API}/invocation/{{id}}/response"), post(response))
            .route(&format!("{API}/invocation/{{id}}/error"), post(error))
            .route(&format!("{API}/init/error"), post(init_error))
            .fallback(|| async { StatusCode::NOT_FOUND })
            .with_state(emulator);
        let mut stop = shutdown_rx;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|over| *over).await;
                })
                .await;
        });
        Ok(Server {
            address,
            reports,
            shutdown,
            task,
        })
    }

    /// Ends held requests and stops serving (aborting if that takes long).
    async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(STOP_WAIT, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.task.abort();
    }
}

/// `GET /runtime/invocation/next`: the event the first time; afterwards the
/// request is held until the run is over, as Lambda holds it while the
/// environment is frozen.
async fn next(State(emulator): State<Arc<Emulator>>) -> Response {
    let at = Instant::now();
    let nth = emulator.nexts.fetch_add(1, Ordering::SeqCst) + 1;
    let _ = emulator.reports.send(Report::Next { at, nth });
    if nth > 1 {
        let mut shutdown = emulator.shutdown.clone();
        let _ = shutdown.wait_for(|over| *over).await;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let deadline = chrono::Utc::now().timestamp_millis() + INVOCATION_BUDGET_MS;
    let mut headers = HeaderMap::new();
    for (name, value) in &emulator.invocation_headers {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(
        HeaderName::from_static("lambda-runtime-deadline-ms"),
        HeaderValue::from(deadline),
    );
    (StatusCode::OK, headers, emulator.event.clone()).into_response()
}

/// `POST /runtime/invocation/{id}/response`.
async fn response(State(emulator): State<Arc<Emulator>>, Path(id): Path<String>, body: Bytes) -> Response {
    let outcome = Outcome::Response { body: kept(&body) };
    answer(&emulator, Some(&id), outcome).await
}

/// `POST /runtime/invocation/{id}/error`.
async fn error(State(emulator): State<Arc<Emulator>>, Path(id): Path<String>, body: Bytes) -> Response {
    let outcome = Outcome::Error { body: kept(&body) };
    answer(&emulator, Some(&id), outcome).await
}

/// `POST /runtime/init/error`.
async fn init_error(State(emulator): State<Arc<Emulator>>, body: Bytes) -> Response {
    let outcome = Outcome::InitError { body: kept(&body) };
    answer(&emulator, None, outcome).await
}

/// Records the process's one answer and replies as Lambda does (202), once
/// the run has read the process's RSS. An unknown request id, or a second
/// answer, is refused (400), as Lambda refuses it.
async fn answer(emulator: &Emulator, id: Option<&str>, outcome: Outcome) -> Response {
    let at = Instant::now();
    if id.is_some_and(|id| id != emulator.request_id) {
        return refuse("InvalidRequestID", "Invalid request ID");
    }
    if emulator.answered.swap(true, Ordering::SeqCst) {
        return refuse("InvalidStateTransition", "The invocation was already answered");
    }
    let (ack, acked) = oneshot::channel();
    if emulator.reports.send(Report::Answer { outcome, at, ack }).is_ok() {
        let _ = tokio::time::timeout(ACK_WAIT, acked).await;
    }
    (StatusCode::ACCEPTED, axum::Json(serde_json::json!({ "status": "OK" }))).into_response()
}

/// A 400 with the Runtime API's error document.
fn refuse(error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorType": error_type, "errorMessage": message });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// The first `BODY_KEPT` bytes of a posted body (cut at a character), with
/// an ellipsis if cut.
fn kept(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.len() <= BODY_KEPT {
        return text.into_owned();
    }
    let mut end = BODY_KEPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake runtime client in Python: sleeps 50 ms (a known init time),
    /// writes its pid to `$FAKE_LOG`, asks for the event, reports what it
    /// was sent (headers, environment, a value derived from the event) as
    /// its response, then asks for the next event, which must be held: if it
    /// is answered, it writes `answered` to `$FAKE_LOG`.
    const ECHO: &str = r#"
import json, os, time, urllib.request
time.sleep(0.05)
log = open(os.environ["FAKE_LOG"], "a")
log.write("pid=%d\n" % os.getpid()); log.flush()
base = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
r = urllib.request.urlopen(base + "/invocation/next")
h = r.headers
event = json.loads(r.read())
rid = h["Lambda-Runtime-Aws-Request-Id"]
report = {
    "doubled": event["n"] * 2,
    "requestId": rid,
    "deadlineInMs": int(h["Lambda-Runtime-Deadline-Ms"]) - int(time.time() * 1000),
    "arn": h["Lambda-Runtime-Invoked-Function-Arn"],
    "trace": h["Lambda-Runtime-Trace-Id"],
    "contentType": h["Content-Type"],
    "env": {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k.startswith("FAKE_")},
    "home": os.environ.get("HOME"),
}
req = urllib.request.Request(base + "/invocation/" + rid + "/response", data=json.dumps(report).encode(), method="POST")
assert urllib.request.urlopen(req).status == 202
urllib.request.urlopen(base + "/invocation/next")
log.write("answered\n"); log.flush()
"#;

    /// Posts an invocation error for the event.
    const FAILS: &str = r#"
import json, os, urllib.request
base = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
r = urllib.request.urlopen(base + "/invocation/next")
rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
body = json.dumps({"errorType": "Boom", "errorMessage": "it failed"}).encode()
req = urllib.request.Request(base + "/invocation/" + rid + "/error", data=body, method="POST",
                             headers={"Lambda-Runtime-Function-Error-Type": "Boom"})
urllib.request.urlopen(req)
urllib.request.urlopen(base + "/invocation/next")
"#;

    /// Posts an initialisation error, then exits as a failed runtime does.
    const INIT_FAILS: &str = r#"
import json, os, sys, urllib.request
base = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
body = json.dumps({"errorType": "Runtime.Init", "errorMessage": "no config"}).encode()
urllib.request.urlopen(urllib.request.Request(base + "/init/error", data=body, method="POST"))
sys.exit(1)
"#;

    /// Answers with the wrong request id: exits 7 if refused with a 400,
    /// 8 if accepted.
    const WRONG_ID: &str = r#"
import os, sys, urllib.request, urllib.error
base = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
urllib.request.urlopen(base + "/invocation/next").read()
try:
    urllib.request.urlopen(urllib.request.Request(base + "/invocation/not-the-id/response", data=b"{}", method="POST"))
except urllib.error.HTTPError as e:
    sys.exit(7 if e.code == 400 else 9)
sys.exit(8)
"#;

    /// Writes its pid, then never asks for an event.
    const STUCK: &str = r#"
import os, time
log = open(os.environ["FAKE_LOG"], "a")
log.write("pid=%d\n" % os.getpid()); log.flush()
time.sleep(60)
"#;

    fn python(name: &str, script: &str, env: Vec<(String, String)>) -> Target {
        Target {
            name: name.to_string(),
            program: "python3".into(),
            args: vec!["-c".into(), script.into()],
            env,
            event: serde_json::json!({ "n": 21, "text": "héllo" }),
        }
    }

    /// A fresh, empty log file for a fake client.
    fn fake_log(test: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("convo-coldstart-{test}-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    /// The pids a fake client wrote to its log, and whether a held `next`
    /// was answered.
    fn read_log(path: &std::path::Path) -> (Vec<u32>, bool) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let pids = text
            .lines()
            .filter_map(|l| l.strip_prefix("pid="))
            .map(|p| p.parse().expect("pid"))
            .collect();
        (pids, text.lines().any(|l| l == "answered"))
    }

    /// Neither running nor a zombie: killed and reaped.
    fn assert_gone(pid: u32) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        // The pid may have been reused by an unrelated process; ours ran python.
        assert!(
            !status.lines().any(|l| l.starts_with("Name:") && l.contains("python")),
            "process {pid} survived its run: {status}"
        );
    }

    const TIMEOUT: Duration = Duration::from_secs(20);

    #[tokio::test]
    async fn serves_the_event_with_lambda_headers_and_records_the_response() {
        let log = fake_log("echo");
        let env = vec![
            ("FAKE_LOG".to_string(), log.display().to_string()),
            ("AWS_REGION".to_string(), "eu-west-1".to_string()),
        ];
        let summary = measure(&python("echo-fn", ECHO, env), 3, TIMEOUT)
            .await
            .expect("measure");

        assert_eq!(summary.name, "echo-fn");
        assert_eq!(summary.runs, 3);
        assert_eq!(summary.samples.len(), 3);
        assert_eq!(summary.responses, 3, "{:?}", summary.samples);
        let mut request_ids = Vec::new();
        for sample in &summary.samples {
            let Outcome::Response { body } = &sample.outcome else {
                panic!("not a response: {sample:?}");
            };
            let report: serde_json::Value = serde_json::from_str(body).expect("the fake's report");
            assert_eq!(report["doubled"], 42);
            let deadline_in = report["deadlineInMs"].as_i64().expect("deadline");
            assert!((29_000..=30_000).contains(&deadline_in), "deadline in {deadline_in} ms");
            assert_eq!(report["arn"], "arn:aws:lambda:eu-west-1:123456789012:function:echo-fn");
            assert!(report["trace"].as_str().expect("trace").starts_with("Root=1-"));
            assert_eq!(report["contentType"], "application/json");
            let env = &report["env"];
            assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "echo-fn");
            assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
            assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
            assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/echo-fn");
            assert!(env["AWS_LAMBDA_LOG_STREAM_NAME"].is_string());
            assert_eq!(env["AWS_REGION"], "eu-west-1", "the target's region wins");
            assert!(
                env["AWS_LAMBDA_RUNTIME_API"]
                    .as_str()
                    .expect("api")
                    .starts_with("127.0.0.1:")
            );
            assert_eq!(
                report["home"],
                serde_json::Value::Null,
                "the caller's environment leaked"
            );
            request_ids.push(report["requestId"].as_str().expect("request id").to_string());

            assert!(
                sample.init_ms >= 50.0,
                "init {} ms, below the fake's 50 ms sleep",
                sample.init_ms
            );
            assert!(sample.init_ms < TIMEOUT.as_secs_f64() * 1000.0);
            let rss = sample.peak_rss_kb.expect("the peak RSS of a live process");
            assert!(rss > 1_000, "{rss} kB");
        }
        request_ids.sort();
        request_ids.dedup();
        assert_eq!(request_ids.len(), 3, "request ids are per run");

        let mut init: Vec<f64> = summary.samples.iter().map(|s| s.init_ms).collect();
        init.sort_by(f64::total_cmp);
        assert_eq!(summary.median_init_ms, init[1]);
        assert_eq!(summary.min_init_ms, init[0]);
        assert_eq!(summary.max_init_ms, init[2]);
        assert!(summary.median_peak_rss_kb.is_some());

        let (pids, answered) = read_log(&log);
        let _ = std::fs::remove_file(&log);
        assert_eq!(pids.len(), 3, "one fresh process per run");
        assert!(!answered, "the second `next` was answered instead of held");
        for pid in pids {
            assert_gone(pid);
        }
    }

    /// One raw `GET next` (HTTP/1.1, blocking): the response's text, or the
    /// read's error if none came within `wait`.
    fn raw_next(address: &str, wait: Duration) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(address)?;
        stream.set_read_timeout(Some(wait))?;
        stream
            .write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    }

    #[tokio::test]
    async fn holds_the_second_next_until_the_run_is_over() {
        let server = Server::start("held", "us-east-1", Bytes::from_static(b"{\"n\":1}"), 0)
            .await
            .expect("emulator");
        let address = server.address.clone();
        let (first, second) = tokio::task::spawn_blocking(move || {
            let first = raw_next(&address, Duration::from_secs(5));
            let second = raw_next(&address, Duration::from_millis(300));
            (first, second)
        })
        .await
        .expect("client");
        let first = first.expect("the first next is answered");
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        assert!(first.contains("lambda-runtime-aws-request-id: "), "{first}");
        assert!(first.ends_with("{\"n\":1}"), "{first}");
        let held = second.expect_err("the second next is held");
        assert!(
            matches!(
                held.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{held}"
        );

        // Held requests end with the run.
        let address = server.address.clone();
        let third = tokio::task::spawn_blocking(move || raw_next(&address, Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopping = Instant::now();
        server.stop().await;
        let third = third.await.expect("client").expect("the held next ends");
        assert!(third.starts_with("HTTP/1.1 503"), "{third}");
        assert!(stopping.elapsed() < Duration::from_secs(2), "{:?}", stopping.elapsed());
    }

    #[tokio::test]
    async fn records_an_invocation_error() {
        let summary = measure(&python("fails", FAILS, vec![]), 1, TIMEOUT)
            .await
            .expect("measure");
        assert_eq!(summary.responses, 0);
        match &summary.samples[0].outcome {
            Outcome::Error { body } => assert!(body.contains("\"Boom\""), "{body}"),
            other => panic!("not an error: {other:?}"),
        }
        assert!(summary.samples[0].peak_rss_kb.is_some());
    }

    #[tokio::test]
    async fn records_an_init_error() {
        let summary = measure(&python("init-fails", INIT_FAILS, vec![]), 1, TIMEOUT)
            .await
            .expect("measure");
        match &summary.samples[0].outcome {
            Outcome::InitError { body } => assert!(body.contains("Runtime.Init"), "{body}"),
            other => panic!("not an init error: {other:?}"),
        }
    }

    #[tokio::test]
    async fn refuses_an_answer_for_another_request_id() {
        let summary = measure(&python("wrong-id", WRONG_ID, vec![]), 1, TIMEOUT)
            .await
            .expect("measure");
        assert!(
            matches!(summary.samples[0].outcome, Outcome::Exited { code: Some(7) }),
            "{:?}",
            summary.samples[0].outcome
        );
    }

    #[tokio::test]
    async fn a_process_that_exits_at_once_is_exited() {
        let target = python("exits", "import sys; sys.exit(3)", vec![]);
        let summary = measure(&target, 2, TIMEOUT).await.expect("measure");
        assert_eq!(summary.runs, 2);
        assert_eq!(summary.responses, 0);
        for sample in &summary.samples {
            assert!(
                matches!(sample.outcome, Outcome::Exited { code: Some(3) }),
                "{:?}",
                sample.outcome
            );
            assert_eq!(sample.peak_rss_kb, None);
            assert!(sample.init_ms < TIMEOUT.as_secs_f64() * 1000.0 / 2.0);
        }
    }

    #[tokio::test]
    async fn a_silent_process_times_out_and_is_killed() {
        let log = fake_log("stuck");
        let target = python("stuck", STUCK, vec![("FAKE_LOG".into(), log.display().to_string())]);
        let began = Instant::now();
        let summary = measure(&target, 1, Duration::from_millis(400)).await.expect("measure");
        assert!(began.elapsed() < Duration::from_secs(5), "{:?}", began.elapsed());
        let sample = &summary.samples[0];
        assert!(matches!(sample.outcome, Outcome::TimedOut), "{:?}", sample.outcome);
        assert!(sample.init_ms >= 400.0, "{}", sample.init_ms);
        let (pids, _) = read_log(&log);
        let _ = std::fs::remove_file(&log);
        assert_eq!(pids.len(), 1);
        assert_gone(pids[0]);
    }

    #[tokio::test]
    async fn a_program_that_cannot_start_is_an_error() {
        let target = Target {
            program: "/nonexistent/convo-coldstart-bootstrap".into(),
            ..python("missing", "", vec![])
        };
        let error = measure(&target, 1, TIMEOUT).await.expect_err("no such program");
        assert!(error.contains("cannot spawn"), "{error}");
        assert!(measure(&target, 0, TIMEOUT).await.is_err());
    }

    #[test]
    fn summary_figures() {
        let sample = |init_ms, peak_rss_kb, outcome| Sample {
            init_ms,
            peak_rss_kb,
            outcome,
        };
        let ok = || Outcome::Response { body: "{}".into() };
        let summary = summarise(
            "f",
            vec![
                sample(40.0, Some(9_000), ok()),
                sample(10.0, None, Outcome::TimedOut),
                sample(30.0, Some(7_001), ok()),
                sample(20.0, Some(8_000), Outcome::Exited { code: Some(1) }),
            ],
        );
        assert_eq!(summary.runs, 4);
        assert_eq!(summary.median_init_ms, 25.0);
        assert_eq!(summary.min_init_ms, 10.0);
        assert_eq!(summary.max_init_ms, 40.0);
        assert_eq!(summary.median_peak_rss_kb, Some(8_000));
        assert_eq!(summary.responses, 2);
        assert_eq!(median_u64(&[7, 9]), Some(8));
        assert_eq!(median_u64(&[7, 8]), Some(7));
        assert_eq!(median_u64(&[u64::MAX, u64::MAX]), Some(u64::MAX));
        assert_eq!(median_u64(&[]), None);
        assert_eq!(median_f64(&[1.0, 2.0, 9.0]), 2.0);
    }

    #[test]
    fn reads_vm_hwm_and_keeps_bodies_short() {
        let status = "Name:\tbootstrap\nVmPeak:\t  20000 kB\nVmHWM:\t    8120 kB\nVmRSS:\t 7000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(8120));
        assert_eq!(parse_vm_hwm("Name:\tzombie\nState:\tZ (zombie)\n"), None);
        assert_eq!(read_peak_rss_kb(std::process::id()).map(|kb| kb > 0), Some(true));

        assert_eq!(kept(b"{\"ok\":true}"), "{\"ok\":true}");
        let long = "é".repeat(BODY_KEPT);
        let cut = kept(long.as_bytes());
        assert!(
            cut.len() <= BODY_KEPT + "…".len() && cut.ends_with('…'),
            "{}",
            cut.len()
        );
    }

    #[test]
    fn outcomes_serialise_tagged() {
        let json = serde_json::to_value(Outcome::InitError { body: "x".into() }).expect("json");
        assert_eq!(json, serde_json::json!({ "kind": "initError", "body": "x" }));
        let json = serde_json::to_value(Outcome::TimedOut).expect("json");
        assert_eq!(json, serde_json::json!({ "kind": "timedOut" }));
    }
}
