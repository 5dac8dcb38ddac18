"""Shared machinery of convo's end-to-end suite.

Every test talks HTTP to a real ``convo-local`` process (the binary named by
``CONVO_LOCAL_BIN``). Writes are asynchronous (202, then persisted by a
background worker), so tests poll with :func:`wait_until` instead of sleeping.

Standard library only, plus pytest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

BIN = os.environ.get("CONVO_LOCAL_BIN", "/work/main/target/debug/convo-local")
STARTUP_TIMEOUT = 15.0
SLOW = 4.0 if os.environ.get("CONVO_E2E_STORE") == "aws" else 1.0
STOP_TIMEOUT = 10.0

# The documented fields of a conversation, exactly.
CONVERSATION_FIELDS = {
    "conversationId", "ownerId", "status", "type", "channel", "userId", "userName", "agentId",
    "agentName", "createdAt", "startTime", "lastActivityAt", "endTime", "durationSeconds",
    "durationMinutes", "title", "titleSource", "titleGeneratedAt", "messageCount",
    "firstMessagePreview", "lastMessagePreview", "flagged", "flagType", "flagReason", "severity",
    "flagStatus", "flaggedAt", "reviewedBy", "reviewedAt", "reviewNote", "metadata", "archivedAt", "redactPii", "expiresAt",
}

# What the documented error body may hold.
ERROR_FIELDS = {"code", "message", "details", "traceId"}


# --------------------------------------------------------------------------
# small utilities


def free_port() -> int:
    """A loopback port nobody listens on right now (bind port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    """An id no other test uses (keeps per-user stats exact on a shared server)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def parse_ts(value: str) -> datetime:
    """Parses the API's RFC 3339 timestamps (``2026-01-01T10:00:00.123Z``)."""
    assert isinstance(value, str), f"not a timestamp: {value!r}"
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def wait_until(fn, timeout: float = 10.0, interval: float = 0.05, what: str | None = None):
    """Calls ``fn`` until it returns something truthy and returns that value.

    Fails the test after ``timeout`` seconds, naming the last value seen (or
    the last exception raised), so a timeout explains itself.
    """
    # moto is far slower than DynamoDB and SQS (it copies a table for each
    # item of a transaction): waits stretch in AWS mode, assertions do not.
    timeout *= SLOW
    deadline = time.monotonic() + timeout
    last, last_exc = None, None
    while True:
        try:
            last = fn()
            last_exc = None
            if last:
                return last
        except AssertionError as e:  # a check inside fn that is not true yet
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f"last exception: {last_exc!r}" if last_exc else f"last value: {last!r}"
            raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}; {detail}")
        time.sleep(interval)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(secret: str, sub: str = "alice", exp_offset: int = 3600, iss: str = "convo-local",
             aud: str = "convo", alg: str = "HS256", extra: dict | None = None) -> str:
    """Signs an HS256 JWT with the standard library (for expired or forged tokens)."""
    now = int(time.time())
    header = {"typ": "JWT", "alg": alg}
    claims = {"sub": sub, "iss": iss, "aud": aud, "iat": now, "exp": now + exp_offset}
    claims.update(extra or {})
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    if alg == "none":  # an unsigned token, which must never be accepted
        return signing_input + "."
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


# --------------------------------------------------------------------------
# HTTP client

_DEFAULT = object()


class Client:
    """A tiny JSON client bound to one server and, by default, one token.

    ``call`` returns ``(status, headers, body)``: headers as a dict with
    lower-case names, body parsed as JSON (``None`` when empty, the raw text
    when it is not JSON).
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 15.0):
        u = urllib.parse.urlsplit(base_url)
        self.base_url = base_url
        self.host, self.port = u.hostname, u.port
        self.token = token
        self.timeout = timeout

    def with_token(self, token: str | None) -> "Client":
        return Client(self.base_url, token, self.timeout)

    def call(self, method: str, path: str, body=None, token=_DEFAULT, headers: dict | None = None,
             conn: http.client.HTTPConnection | None = None):
        token = self.token if token is _DEFAULT else token
        hdrs = {"Accept": "application/json"}
        data = None
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
            hdrs["Content-Type"] = "application/json"
        elif body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        hdrs.update(headers or {})
        own = conn is None
        c = conn or http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            c.request(method, path, body=data, headers=hdrs)
            resp = c.getresponse()
            raw = resp.read()
            resp_headers = {k.lower(): v for k, v in resp.getheaders()}
            status = resp.status
        finally:
            if own:
                c.close()
        if not raw:
            parsed = None
        else:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
        return status, resp_headers, parsed

    # conveniences -------------------------------------------------------

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.call("PATCH", path, body, **kw)

    def ok(self, method, path, body=None, expect=200, **kw):
        """Calls and asserts the status; returns the body."""
        status, _, data = self.call(method, path, body, **kw)
        assert status == expect, f"{method} {path}: expected {expect}, got {status}: {data!r}"
        return data

    def create(self, user_id=None, agent_id="agent-1", expect=201, **fields):
        body = {"userId": user_id or unique("user"), "agentId": agent_id}
        body.update(fields)
        return self.ok("POST", "/conversations", body, expect=expect)

    def append(self, cid, *messages, headers=None, expect=202):
        """Appends messages given as (role, content) pairs or dicts."""
        msgs = [m if isinstance(m, dict) else {"role": m[0], "content": m[1]} for m in messages]
        return self.ok("POST", f"/conversations/{cid}/messages", {"messages": msgs}, expect=expect,
                       headers=headers)

    def end(self, cid, expect=202, **kw):
        return self.ok("POST", f"/conversations/{cid}/end", expect=expect, **kw)

    def conversation(self, cid):
        return self.ok("GET", f"/conversations/{cid}")

    def messages(self, cid, **query):
        q = urllib.parse.urlencode(query)
        return self.ok("GET", f"/conversations/{cid}/messages" + (f"?{q}" if q else ""))

    def all_messages(self, cid, limit=200, order="asc"):
        """Every stored message, following nextCursor to the end."""
        out, cursor, pages = [], None, 0
        while True:
            q = {"limit": limit, "order": order}
            if cursor:
                q["cursor"] = cursor
            page = self.messages(cid, **q)
            out.extend(page["messages"])
            cursor = page["nextCursor"]
            pages += 1
            assert pages < 1000, "pagination does not terminate"
            if not cursor:
                return out

    def erase_user(self, user_id, stored_as=None, timeout=30.0):
        """Erases a user (202 and a Location) and follows the job until it is
        done; returns the finished report. The running report names the id
        the user is stored under (``stored_as``, default ``user_id``)."""
        status, headers, started = self.call("DELETE", f"/users/{urllib.parse.quote(user_id, safe='')}")
        assert status == 202, (status, started)
        assert started["status"] == "running", started
        assert started["userId"] == (stored_as or user_id), started
        assert headers["location"] == f"/erasures/{started['erasureId']}", headers
        return wait_until(lambda: (r := self.ok("GET", headers["location"]))["status"] == "done" and r,
                          timeout, what=f"the erasure of {user_id}")

    def stats(self, user_id):
        return self.ok("GET", f"/users/{urllib.parse.quote(user_id, safe='')}/stats")

    def health(self):
        """The deep health (this client's owner must be an operator)."""
        status, _, data = self.call("GET", "/health/deep")
        assert status == 200, (status, data)
        return data

    # synchronisation helpers ---------------------------------------------

    def wait_count(self, cid, count, timeout=10.0):
        """Waits until the conversation's messageCount reaches ``count``; returns it."""
        return wait_until(lambda: (c := self.conversation(cid))["messageCount"] >= count and c,
                          timeout, what=f"{cid} to hold {count} messages")

    def wait_status(self, cid, status, timeout=10.0):
        return wait_until(lambda: (c := self.conversation(cid))["status"] == status and c,
                          timeout, what=f"{cid} to become {status}")

    def flush(self, cid, timeout=10.0):
        """Appends a sentinel behind every write accepted so far and waits for it.

        The writes queue is FIFO per conversation, so once the sentinel is
        stored everything accepted before it has been applied (or dropped).
        Returns every stored message, sentinel included (it is the last one).
        """
        marker = f"sentinel {uuid.uuid4().hex}"
        self.append(cid, ("user", marker))

        def done():
            msgs = self.all_messages(cid)
            return msgs and msgs[-1]["content"] == marker and msgs

        return wait_until(done, timeout, what=f"sentinel of {cid}")

    def wait_queues_idle(self, timeout=10.0):
        """Waits until both queues hold nothing visible or in flight."""

        def idle():
            comps = {c["name"]: c for c in self.health()["components"]}
            return all(comps[q]["visible"] == 0 and comps[q]["inFlight"] == 0
                       for q in ("writesQueue", "titlesQueue"))

        wait_until(idle, timeout, what="queues to drain")


def assert_error(resp, status: int, code: str, field: str | None = None):
    """Asserts an answer is the documented error: status, code and body shape."""
    got_status, headers, body = resp
    assert got_status == status, f"expected {status} {code}, got {got_status}: {body!r}"
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict) and set(err) <= ERROR_FIELDS, err
    assert err["code"] == code, f"expected code {code}, got {err!r}"
    assert isinstance(err["message"], str) and err["message"].strip(), err
    if "details" in err:
        assert err["details"] is None or isinstance(err["details"], dict), err
    if "traceId" in err:
        assert isinstance(err["traceId"], str) and err["traceId"], err
    if field is not None:
        assert (err.get("details") or {}).get("field") == field, f"expected field {field}: {err!r}"
    return err


# --------------------------------------------------------------------------
# the server process


def _clean_env(extra: dict | None = None) -> dict:
    """The environment for convo-local: none of the caller's CONVO_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVO_")}
    env.setdefault("NO_COLOR", "1")
    env.update(extra or {})
    return env


# tests/infra/stack.py deploys the template's resources in AWS mode.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infra"))

# "embedded" (the default) or "aws": the same suite against convo-local in
# AWS mode, on DynamoDB and SQS at AWS_ENDPOINT_URL (moto in tests/run).
STORE = os.environ.get("CONVO_E2E_STORE", "embedded")


def aws_prefix(data_dir: Path) -> str:
    """The table and queue prefix of one server's data (stable across restarts)."""
    import hashlib
    return "e2e-" + hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]


def aws_stack(name: str) -> dict:
    """AWS mode: the table and queues of infra/template.yaml, deployed as a
    CloudFormation stack at AWS_ENDPOINT_URL (moto), and the environment the
    template gives the functions. Idempotent: a restarted server finds its
    stack."""
    import boto3
    import stack

    env = stack.environment(stack.deploy(name))
    # A short visibility timeout (the template's is 180 s): records held by a
    # killed server come back within seconds instead of minutes.
    sqs = boto3.client("sqs")
    for var in ("CONVO_WRITES_QUEUE_URL", "CONVO_TITLES_QUEUE_URL"):
        sqs.set_queue_attributes(QueueUrl=env[var], Attributes={"VisibilityTimeout": "5"})
    return env


class Server:
    """One ``convo-local serve`` process on a free loopback port."""

    def __init__(self, data_dir: Path, *args: str, in_memory: bool = False, env: dict | None = None,
                 port: int | None = None):
        if not os.path.exists(BIN):
            pytest.fail(f"convo-local binary not found at {BIN} (set CONVO_LOCAL_BIN)")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.in_memory = in_memory
        self.env = _clean_env(env)
        # alice may read the deep health (GET /health/deep); bob may not.
        self.env.setdefault("CONVO_OPERATORS", "alice")
        # The suite polls the queues' figures: a fresh answer every time.
        self.env.setdefault("CONVO_DEEP_HEALTH_INTERVAL", "0s")
        # An erasure on the DynamoDB store waits this long for its index
        # before its last pass (the default is 5s).
        self.env.setdefault("CONVO_ERASURE_SETTLE", "1s")
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.stdout_path = self.stderr_path = None
        self.starts = 0

    def start(self) -> "Server":
        self.starts += 1
        log_dir = self.data_dir.parent / f"{self.data_dir.name}-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"stdout-{self.starts}.log"
        self.stderr_path = log_dir / f"stderr-{self.starts}.log"
        cmd = [BIN, "serve", "--addr", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir), *self.args]
        if not any(a.startswith("--appends-per-minute") for a in self.args):
            # The suite hammers single users; test_rate_limit.py sets its own.
            cmd += ["--appends-per-minute", "0"]
        if self.in_memory:
            cmd.append("--in-memory")
        env = self.env
        if STORE == "aws":
            env = {**self.env, **aws_stack(aws_prefix(self.data_dir))}
            cmd += ["--aws", "--retry-delay", "1s"]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        self._wait_ready()
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"convo-local exited with {self.proc.returncode} at startup\n{self.logs()}")
            if "listening on" in self.stdout():
                try:
                    status, _, body = Client(self.base_url, timeout=2).get("/health", token=None)
                    if status == 200 and body.get("status") == "healthy":
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"convo-local did not become ready within {STARTUP_TIMEOUT}s\n{self.logs()}")

    def stdout(self) -> str:
        try:
            return self.stdout_path.read_text(errors="replace")
        except OSError:
            return ""

    def logs(self, tail: int = 4000) -> str:
        err = ""
        try:
            err = self.stderr_path.read_text(errors="replace")[-tail:]
        except OSError:
            pass
        return f"--- stdout ---\n{self.stdout()}\n--- stderr (tail) ---\n{err}"

    def stop(self, sig=signal.SIGTERM) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        p = self.proc
        if p is None or p.poll() is not None:
            return None if p is None else p.returncode
        p.send_signal(sig)
        try:
            return p.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
            return None

    def token(self, sub: str = "alice", ttl: str = "1h") -> str:
        out = subprocess.run([BIN, "token", "--sub", sub, "--ttl", ttl, "--data-dir", str(self.data_dir)],
                             capture_output=True, text=True, env=self.env, timeout=15)
        assert out.returncode == 0, out.stderr
        tok = out.stdout.strip()
        assert tok.count(".") == 2, tok
        return tok

    def secret(self) -> str:
        if self.env.get("CONVO_JWT_SECRET"):
            return self.env["CONVO_JWT_SECRET"]
        return (self.data_dir / "jwt-secret").read_text().strip()

    def client(self, sub: str | None = "alice") -> Client:
        return Client(self.base_url, self.token(sub) if sub else None)


@pytest.fixture
def make_server(tmp_path):
    """Starts dedicated servers for one test; every one is stopped at teardown."""
    started: list[Server] = []

    def make(*args, data_dir=None, in_memory=False, env=None, start=True) -> Server:
        s = Server(data_dir or tmp_path / f"data{len(started)}", *args, in_memory=in_memory, env=env)
        started.append(s)
        return s.start() if start else s

    yield make
    for s in started:
        s.stop()


def _shared_scope(fixture_name, config):
    # In AWS mode each test module gets its own server, so its own table:
    # moto slows down as a table grows.
    return "module" if STORE == "aws" else "session"


@pytest.fixture(scope=_shared_scope)
def server(tmp_path_factory):
    """The shared server (on-disk store) most tests use."""
    s = Server(tmp_path_factory.mktemp("shared") / "data")
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope=_shared_scope)
def api(server) -> Client:
    """A client of the shared server speaking for owner ``alice``."""
    return server.client("alice")


@pytest.fixture(scope=_shared_scope)
def bob(server) -> Client:
    """A client of the shared server speaking for another owner, ``bob``."""
    return server.client("bob")


def pytest_report_header(config):
    return f"convo-local: {BIN} (store: {STORE})"
