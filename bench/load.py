#!/usr/bin/env python3
"""The local server under load (issue 6, item 6).

Starts `convo-local serve --in-memory` (the embedded store and queues, in
memory) on a free loopback port with the append rate limit off, and measures:

* append (POST /conversations/{id}/messages, one exchange of two ~200-char
  messages per request) and the context read
  (GET /conversations/{id}/context?maxMessages=20) with wrk at a fixed
  concurrency: requests per second, p50 and p99 latency, non-2xx answers and
  socket errors;
* that nothing accepted is lost: after the append run, waits until the
  writes queue is drained and compares the messages accepted (202 answers,
  counted by wrk's response hook and by the server's request log) with the
  conversations' messageCount;
* the lag from the 202 answer of an append to the first read that returns
  its messages (sequential appends to one fresh conversation, read polled
  every millisecond or so).

Python 3.11 standard library only; needs `wrk` on PATH (Debian: apt-get
install wrk). Writes the figures as JSON to --out and a summary to stderr.

    bench/load.py --convo-local target/release/convo-local --duration 10 \\
        --connections 16 --threads 2 --out load.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER_DESCRIPTION = "convo-local serve --in-memory (embedded store and queues)"

# One exchange: a user turn and the assistant's reply, 200 characters each,
# plain child talk the moderator lets through ("safe"), so every message is a
# normal stored message.
USER_TEXT = (
    "Can you tell me a story about a little dragon who lives in a castle by the "
    "sea and wants to learn to fly over the tall mountains, and what happens "
    "when the dragon meets a friendly knight and a clever owl on the way?"
)
ASSISTANT_TEXT = (
    "Once upon a time, a small green dragon named Pip lived in an old castle by "
    "the sea. Every morning Pip flapped her tiny wings and dreamed of the "
    "mountains. One day a kind knight and a wise owl came to visit the castle."
)


def fit(text: str, n: int = 200) -> str:
    """Exactly n characters, ending with a full stop."""
    while len(text) < n:
        text = text + " " + text
    return text[: n - 1].rstrip() + "."


APPEND_BODY = json.dumps(
    {
        "messages": [
            {"role": "user", "content": fit(USER_TEXT)},
            {"role": "assistant", "content": fit(ASSISTANT_TEXT)},
        ]
    },
    separators=(",", ":"),
)
MESSAGES_PER_APPEND = 2


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- HTTP client


class Client:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, port: int, token: str | None = None, timeout: float = 30.0):
        self.port = port
        self.token = token
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: object | None = None) -> tuple[int, object]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            if isinstance(data, str):
                data = data.encode()
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                # A dropped keep-alive connection: reconnect once. Only GETs are
                # retried, so a POST is never sent twice.
                self.close()
                if attempt or method != "GET":
                    raise
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return resp.status, parsed

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def expect(status: int, body: object, wanted: tuple[int, ...], what: str) -> dict:
    if status not in wanted:
        raise BenchError(f"{what}: HTTP {status}: {json.dumps(body)[:500]}")
    if not isinstance(body, dict):
        raise BenchError(f"{what}: unexpected body {body!r:.200}")
    return body


# ---------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary: Path, data_dir: Path, write_workers: int | None):
        self.binary = binary
        self.data_dir = data_dir
        self.port = free_port()
        self.log_path = data_dir / "server.log"
        self.write_workers = write_workers
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 60.0) -> None:
        cmd = [
            str(self.binary), "serve", "--in-memory",
            "--data-dir", str(self.data_dir),
            "--addr", f"127.0.0.1:{self.port}",
            "--appends-per-minute", "0",
            "--log-format", "json",
            # The queue figures are the deep health's, for operators.
            "--operators", "bench",
            "--deep-health-interval", "0s",
        ]
        if self.write_workers is not None:
            cmd += ["--write-workers", str(self.write_workers)]
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.command = " ".join(cmd)
        deadline = time.monotonic() + timeout
        health = Client(self.port, timeout=2.0)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise BenchError(
                        f"convo-local exited with {self.proc.returncode} at start; log:\n{self.log_tail()}"
                    )
                try:
                    status, _ = health.request("GET", "/health")
                    if status == 200:
                        return
                except OSError:
                    health.close()
                if time.monotonic() > deadline:
                    raise BenchError(f"convo-local did not answer GET /health within {timeout:.0f}s")
                time.sleep(0.05)
        finally:
            health.close()

    def token(self) -> str:
        out = subprocess.run(
            [str(self.binary), "token", "--sub", "bench", "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, timeout=60,
        )
        if out.returncode != 0 or not out.stdout.strip():
            raise BenchError(f"convo-local token failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout.strip().splitlines()[-1].strip()

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def accepted_appends_in_log(self) -> int | None:
        """202 answers to appends, from the server's own request log."""
        if self._log:
            self._log.flush()
        n = 0
        seen_any = False
        try:
            with open(self.log_path, "rb") as f:
                for line in f:
                    if b'"route"' not in line:
                        continue
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    seen_any = True
                    if rec.get("route") == "POST /conversations/{id}/messages" and rec.get("status") == 202:
                        n += 1
        except OSError:
            return None
        return n if seen_any else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self._log:
            self._log.close()
            self._log = None


# ---------------------------------------------------------------- wrk

LUA_TEMPLATE = r"""
-- Generated by bench/load.py. Round-robin over the conversations, one
-- counter per thread (each wrk thread has its own Lua state), requests
-- pre-built in init(); statuses counted per thread and summed in done().
local ids = {IDS}
local method = {METHOD}
local suffix = {SUFFIX}
local body = {BODY}
local nthreads = {NTHREADS}
local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  reqs = {}
  local headers = {
    ["Authorization"] = {AUTH},
    ["Accept"] = "application/json",
  }
  if body ~= nil then headers["Content-Type"] = "application/json" end
  for i, id in ipairs(ids) do
    reqs[i] = wrk.format(method, "/conversations/" .. id .. suffix, headers, body)
  end
  -- threads start at evenly spread offsets so they do not walk in step
  counter = math.floor(tid * #ids / nthreads)
end

function request()
  counter = counter + 1
  return reqs[(counter % #reqs) + 1]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then
      for k, v in pairs(s) do total[k] = (total[k] or 0) + v end
    end
  end
  for k, v in pairs(total) do
    io.write(string.format("BENCH_STATUS %d %d\n", k, v))
  end
  io.write(string.format("BENCH_EXACT requests=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def lua_string(s: str) -> str:
    if not s.isascii():
        raise BenchError("wrk scripts are written with ASCII strings only")
    return json.dumps(s)  # an ASCII JSON string is a valid Lua string literal


def write_lua(path: Path, ids: list[str], method: str, suffix: str, body: str | None,
              token: str, threads: int) -> None:
    text = (
        LUA_TEMPLATE.replace("{IDS}", "{" + ", ".join(lua_string(i) for i in ids) + "}")
        .replace("{METHOD}", lua_string(method))
        .replace("{SUFFIX}", lua_string(suffix))
        .replace("{BODY}", lua_string(body) if body is not None else "nil")
        .replace("{NTHREADS}", str(threads))
        .replace("{AUTH}", lua_string(f"Bearer {token}"))
    )
    path.write_text(text)


UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(value: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", value.strip())
    if not m:
        raise BenchError(f"cannot read wrk latency {value!r}")
    return round(float(m.group(1)) * UNITS_MS[m.group(2)], 3)


def parse_wrk(out: str) -> dict:
    res: dict = {}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not m:
        raise BenchError(f"no Requests/sec in wrk's output:\n{out}")
    res["rps"] = round(float(m.group(1)), 1)
    dist = out.split("Latency Distribution", 1)
    if len(dist) != 2:
        raise BenchError(f"no Latency Distribution in wrk's output (--latency missing?):\n{out}")
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", dist[1], re.M))
    res["p50_ms"] = to_ms(pct["50"])
    res["p99_ms"] = to_ms(pct["99"])
    m = re.search(r"(\d+) requests in ([0-9.]+\w+)", out)
    res["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errs = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {
        "connect": 0, "read": 0, "write": 0, "timeout": 0}
    res["socket_errors"] = sum(errs.values())
    res["socket_errors_detail"] = errs
    res["status_counts"] = {k: int(v) for k, v in re.findall(r"^BENCH_STATUS (\d+) (\d+)$", out, re.M)}
    m = re.search(r"^BENCH_EXACT requests=(\d+) p50_us=(\d+) p99_us=(\d+) max_us=(\d+)$", out, re.M)
    if m:
        res["max_ms"] = round(int(m.group(4)) / 1000, 3)
    return res


def run_wrk(wrk: str, args, script: Path, url: str, name: str) -> dict:
    cmd = [wrk, "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
           "--timeout", args.wrk_timeout, "--latency", "-s", str(script), url]
    print(f"[load] {name}: {' '.join(cmd)}", file=sys.stderr)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 120)
    if out.returncode != 0:
        raise BenchError(f"wrk failed ({out.returncode}) for {name}:\n{out.stdout}\n{out.stderr}")
    if args.verbose:
        print(out.stdout, file=sys.stderr)
    res = parse_wrk(out.stdout)
    res["command"] = " ".join(cmd)
    return res


# ---------------------------------------------------------------- phases


def health_writes(client: Client) -> dict:
    status, body = client.request("GET", "/health/deep")
    if not isinstance(body, dict):
        raise BenchError(f"GET /health/deep: HTTP {status}: {body!r:.200}")
    for c in body.get("components", []):
        if c.get("name") == "writesQueue":
            return c
    raise BenchError(f"GET /health/deep has no writesQueue component: {json.dumps(body)[:300]}")


def wait_drained(client: Client, timeout: float) -> dict:
    """Wait until the writes queue holds nothing visible or in flight."""
    start = time.monotonic()
    first = health_writes(client)
    peak = first.get("visible", 0) + first.get("inFlight", 0)
    while True:
        q = health_writes(client)
        depth = q.get("visible", 0) + q.get("inFlight", 0)
        peak = max(peak, depth)
        if depth == 0:
            return {
                "queue_depth_after_run": first.get("visible", 0) + first.get("inFlight", 0),
                "drain_s": round(time.monotonic() - start, 3),
                "dead_letters": q.get("deadLetters", 0),
            }
        if time.monotonic() - start > timeout:
            raise BenchError(f"the writes queue did not drain within {timeout:.0f}s (depth {depth})")
        time.sleep(0.05)


def message_count(client: Client, conv_id: str) -> int:
    status, body = client.request("GET", f"/conversations/{conv_id}")
    body = expect(status, body, (200,), f"GET /conversations/{conv_id}")
    return int(body.get("messageCount") or 0)


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def measure_lag(port: int, token: str, samples: int, poll_interval_s: float, timeout_s: float) -> dict:
    writer = Client(port, token)
    reader = Client(port, token)
    try:
        status, conv = writer.request("POST", "/conversations", {
            "userId": "bench-lag", "agentId": "bench-agent", "type": "bench"})
        conv_id = expect(status, conv, (201,), "POST /conversations (lag)")["conversationId"]
        path_append = f"/conversations/{conv_id}/messages"
        path_read = f"/conversations/{conv_id}/messages?order=desc&limit={MESSAGES_PER_APPEND}"
        lags, lowers, answers, polls, rtts = [], [], [], [], []
        missed = 0
        for _ in range(samples):
            t0 = time.perf_counter()
            status, body = writer.request("POST", path_append, APPEND_BODY)
            t_ans = time.perf_counter()
            body = expect(status, body, (202,), "POST messages (lag)")
            answers.append((t_ans - t0) * 1e3)
            want = {m["messageId"] for m in body["messages"]}
            n = 0
            last_miss = None  # when the last read that did not hold them was sent
            while True:
                t_send = time.perf_counter()
                status, page = reader.request("GET", path_read)
                t_seen = time.perf_counter()
                page = expect(status, page, (200,), "GET messages (lag)")
                rtts.append((t_seen - t_send) * 1e3)
                n += 1
                if want <= {m["messageId"] for m in page.get("messages", [])}:
                    lags.append((t_seen - t_ans) * 1e3)
                    lowers.append(0.0 if last_miss is None else max(0.0, (last_miss - t_ans) * 1e3))
                    polls.append(n)
                    break
                last_miss = t_send
                if t_seen - t_ans > timeout_s:
                    missed += 1
                    break
                rest = poll_interval_s - (time.perf_counter() - t_send)
                if rest > 0:
                    time.sleep(rest)
        r3 = lambda v: None if v is None else round(v, 3)  # noqa: E731
        return {
            "samples": len(lags),
            "p50_ms": r3(pct(lags, 50)),
            "p99_ms": r3(pct(lags, 99)),
            "max_ms": r3(max(lags) if lags else None),
            "mean_ms": r3(statistics.fmean(lags) if lags else None),
            "lower_bound_p50_ms": r3(pct(lowers, 50)),
            "lower_bound_p99_ms": r3(pct(lowers, 99)),
            "answer_p50_ms": r3(pct(answers, 50)),
            "answer_p99_ms": r3(pct(answers, 99)),
            "not_seen_within_timeout": missed,
            "seen_on_first_poll": sum(1 for p in polls if p == 1),
            "poll_rtt_p50_ms": r3(pct(rtts, 50)),
            "poll_interval_ms": round(poll_interval_s * 1e3, 3),
            "method": (
                "sequential appends to one fresh conversation on an idle server; lag = from the 202 "
                "answer read by the client to the answer of the first GET /messages?order=desc that "
                "holds the returned messageIds (an upper bound: it includes up to one poll round trip); "
                "lower_bound = to the sending of the last read that did not hold them (0 when the "
                "first read already did)"
            ),
        }
    finally:
        writer.close()
        reader.close()


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--convo-local", required=True, type=Path, help="the convo-local binary")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--conversations", type=int, default=64, help="conversations to spread load over (default 64)")
    ap.add_argument("--lag-samples", type=int, default=200, help="sequential appends timed to persistence (default 200)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--wrk-timeout", default="30s",
                    help="wrk --timeout: answers slower than this count as socket timeouts, not latency (default 30s)")
    ap.add_argument("--write-workers", type=int, default=None,
                    help="convo-local --write-workers (default: the server's default)")
    ap.add_argument("--poll-interval-ms", type=float, default=1.0, help="lag: least time between reads (default 1)")
    ap.add_argument("--drain-timeout", type=float, default=300.0,
                    help="seconds to wait for the writes queue to drain after the append run (default 300)")
    ap.add_argument("--verbose", action="store_true", help="echo wrk's output")
    args = ap.parse_args()

    wrk = shutil.which("wrk")
    if wrk is None:
        print("bench/load.py: `wrk` is not on PATH; install it (Debian/Ubuntu: apt-get install wrk) "
              "and run again", file=sys.stderr)
        return 2
    binary = args.convo_local.resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        print(f"bench/load.py: {args.convo_local} is not an executable (build it with "
              f"`cargo build -p convo-local`)", file=sys.stderr)
        return 2
    if args.threads > args.connections:
        print("bench/load.py: --threads must not exceed --connections", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="convo-load-"))
    server = Server(binary, tmp, args.write_workers)
    result: dict = {
        "server": SERVER_DESCRIPTION,
        "binary": str(binary),
        "rate_limit": "off (--appends-per-minute 0)",
        "connections": args.connections,
        "threads": args.threads,
        "duration_s": args.duration,
        "conversations": args.conversations,
    }
    warnings: list[str] = []
    try:
        server.start()
        result["server_command"] = server.command
        token = server.token()
        base = f"http://127.0.0.1:{server.port}"
        client = Client(server.port, token)

        ids = []
        for i in range(args.conversations):
            status, body = client.request("POST", "/conversations", {
                "userId": f"bench-user-{i}", "agentId": "bench-agent", "type": "bench"})
            ids.append(expect(status, body, (201,), "POST /conversations")["conversationId"])

        # Probe one append so a wrong body fails here, not as 100% non-2xx.
        status, body = client.request("POST", f"/conversations/{ids[0]}/messages", APPEND_BODY)
        probe = expect(status, body, (202,), "probe append")
        actions = sorted({m["safety"]["action"] for m in probe["messages"]})
        if actions != ["safe"]:
            warnings.append(f"the benchmark exchange is screened as {actions}, not safe")
        probe_messages = MESSAGES_PER_APPEND

        append_lua = tmp / "append.lua"
        context_lua = tmp / "context.lua"
        write_lua(append_lua, ids, "POST", "/messages", APPEND_BODY, token, args.threads)
        write_lua(context_lua, ids, "GET", "/context?maxMessages=20", None, token, args.threads)

        # 1. appends
        append = run_wrk(wrk, args, append_lua, base, "append")
        t_end = time.monotonic()
        drain = wait_drained(client, args.drain_timeout)
        drain["drain_s"] = round(time.monotonic() - t_end, 3)
        counts = [message_count(client, i) for i in ids]
        persisted = sum(counts)
        wrk_202 = append["status_counts"].get("202", 0)
        server_202 = server.accepted_appends_in_log()
        accepted_client = wrk_202 * MESSAGES_PER_APPEND + probe_messages
        accepted_server = None if server_202 is None else server_202 * MESSAGES_PER_APPEND
        result["append"] = append
        result["persisted"] = {
            "accepted_messages": accepted_client,
            "persisted_messages": persisted,
            "accepted_messages_server_log": accepted_server,
            "lost_messages": max(0, (accepted_server if accepted_server is not None else accepted_client) - persisted),
            "queue_depth_after_run": drain["queue_depth_after_run"],
            "drain_s": drain["drain_s"],
            "dead_letters": drain["dead_letters"],
            "min_messages_per_conversation": min(counts),
            "note": (
                "accepted_messages = 2 x the 202 answers wrk received (+ 2 for one probe append before "
                "the run); accepted_messages_server_log = 2 x the 202s in the server's request log "
                "(probe included), which also "
                "counts appends whose answer was still in flight when wrk stopped, so it may exceed "
                "accepted_messages by up to 2 x connections; persisted_messages = sum of messageCount "
                "once the writes queue is empty"
            ),
        }

        # 2. the context read (the conversations now hold the appended messages)
        result["context"] = run_wrk(wrk, args, context_lua, base, "context")

        # 3. lag from 202 to persisted
        result["lag"] = measure_lag(server.port, token, args.lag_samples,
                                    args.poll_interval_ms / 1e3, timeout_s=30.0)
        client.close()
    except BenchError as e:
        print(f"bench/load.py: {e}", file=sys.stderr)
        if server.proc is not None:
            print(f"server log (last lines):\n{server.log_tail()}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    # Flag everything that is not a clean run.
    for name in ("append", "context"):
        r = result[name]
        odd = {k: v for k, v in r["status_counts"].items() if not k.startswith("2")}
        if r["non_2xx"] or odd:
            warnings.append(f"{name}: {r['non_2xx']} non-2xx answers (statuses {r['status_counts']})")
        if r["socket_errors"]:
            warnings.append(f"{name}: socket errors {r['socket_errors_detail']}")
    p = result["persisted"]
    if p["persisted_messages"] < p["accepted_messages"] or p["lost_messages"]:
        warnings.append(f"LOST MESSAGES: accepted {p['accepted_messages']} "
                        f"(server log {p['accepted_messages_server_log']}), persisted {p['persisted_messages']}")
    elif (p["accepted_messages_server_log"] is not None
          and p["persisted_messages"] != p["accepted_messages_server_log"]):
        warnings.append(f"persisted {p['persisted_messages']} != accepted in the server's log "
                        f"{p['accepted_messages_server_log']}")
    if p["dead_letters"]:
        warnings.append(f"{p['dead_letters']} dead letters in the writes queue")
    if p["min_messages_per_conversation"] < 20:
        warnings.append(f"some conversation holds only {p['min_messages_per_conversation']} messages: "
                        "the context read returned fewer than 20")
    if result["lag"]["not_seen_within_timeout"]:
        warnings.append(f"lag: {result['lag']['not_seen_within_timeout']} appends not readable within 30s")
    result["ok"] = not warnings
    result["warnings"] = warnings
    result["notes"] = [
        "wrk is closed-loop (each connection waits for its answer), so latency percentiles do not "
        "include queueing a fixed-rate client would see (coordinated omission)",
        "wrk and the server share the machine's cores",
    ]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    a, c, lag = result["append"], result["context"], result["lag"]
    print(
        f"\n{SERVER_DESCRIPTION}, rate limit off; wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s, {args.conversations} conversations\n"
        f"  append : {a['rps']:>9.1f} req/s  p50 {a['p50_ms']:.2f} ms  p99 {a['p99_ms']:.2f} ms  "
        f"({a['requests']} requests, non-2xx {a['non_2xx']}, socket errors {a['socket_errors']})\n"
        f"  context: {c['rps']:>9.1f} req/s  p50 {c['p50_ms']:.2f} ms  p99 {c['p99_ms']:.2f} ms  "
        f"({c['requests']} requests, non-2xx {c['non_2xx']}, socket errors {c['socket_errors']})\n"
        f"  messages: accepted {p['accepted_messages']} (wrk's 202s) / "
        f"{p['accepted_messages_server_log']} (server log), persisted {p['persisted_messages']}, "
        f"lost {p['lost_messages']}; queue depth after the run "
        f"{p['queue_depth_after_run']}, drained in {p['drain_s']} s\n"
        f"  lag 202 -> readable ({lag['samples']} samples): p50 {lag['p50_ms']} ms  p99 {lag['p99_ms']} ms  "
        f"max {lag['max_ms']} ms; 202 answer p50 {lag['answer_p50_ms']} ms  p99 {lag['answer_p99_ms']} ms\n"
        + ("  WARNINGS:\n" + "".join(f"    - {w}\n" for w in warnings) if warnings else "  no warnings\n")
        + f"  -> {args.out}",
        file=sys.stderr,
    )
    return 0 if not warnings else 3


if __name__ == "__main__":
    sys.exit(main())
