"""A fault-injecting HTTP proxy to put in front of moto (or any AWS endpoint).

Every request is forwarded to ``upstream`` unchanged (method, path, query,
headers, body) and the answer is sent back unchanged, except that a share of
the DynamoDB requests (``X-Amz-Target: DynamoDB_20120810.*``) is answered with
an injected error instead, *before* it reaches the upstream: nothing of a
failed request is applied. The share (and the operations it applies to) can
be changed at any time (``proxy.fail_rate = 0.3``), so resources can be
created through the proxy before faults are turned on. SQS receives on one
queue can also be held back for a while (``hold_receives``), to let a
backlog build up in front of the consumers.

Standard library only.
"""

from __future__ import annotations

import http.server
import json
import random
import threading
import urllib.error
import urllib.request
from collections import Counter

# Headers that belong to one hop, never forwarded.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "content-length",
}

DYNAMODB_TARGET = "DynamoDB_20120810"

# The injected answers: (status, __type), one picked at random per fault.
FAULTS = [
    (400, "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"),
    (500, "com.amazonaws.dynamodb.v20120810#InternalServerError"),
]


class FaultProxy:
    """A threaded HTTP proxy on a free loopback port; ``url`` is its address."""

    def __init__(self, upstream: str, fail_rate: float = 0.0, seed: int | None = None,
                 fail_ops: set[str] | None = None):
        self.upstream = upstream.rstrip("/")
        self.fail_rate = fail_rate
        # DynamoDB operations faults apply to ("UpdateItem", ...); None: all of them
        self.fail_ops = fail_ops
        # SQS receives held back (see hold_receives)
        self._hold: str | None = None
        self._released = threading.Event()
        self._released.set()
        self.holding = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        # what was injected, by (status, operation), and what was forwarded
        self.injected: Counter = Counter()
        self.forwarded: Counter = Counter()
        # the next N requests of an X-Amz-Target ("AWSEvents.PutEvents")
        # answered 500 InternalException, whatever the service
        self.fail_next: Counter = Counter()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs expect

            def log_message(self, fmt, *args):  # quiet
                pass

            def _read_body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            # trailers, up to the empty line
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()  # CRLF after each chunk
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _answer(self, status: int, headers, body: bytes):
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in HOP_BY_HOP and k.lower() not in ("server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self):
                body = self._read_body()
                target = self.headers.get("X-Amz-Target") or ""
                if proxy._held(target, body):
                    with proxy._lock:
                        proxy.holding += 1
                    try:
                        proxy._released.wait(30)
                    finally:
                        with proxy._lock:
                            proxy.holding -= 1
                with proxy._lock:
                    forced = proxy.fail_next[target] > 0
                    if forced:
                        proxy.fail_next[target] -= 1
                        proxy.injected[(500, target)] += 1
                if forced:
                    payload = json.dumps({"__type": "InternalException", "message": "injected"}).encode()
                    self._answer(500, [("Content-Type", "application/x-amz-json-1.1"),
                                       ("x-amzn-RequestId", "injected-fault")], payload)
                    return
                if target.startswith(DYNAMODB_TARGET):
                    fault = proxy._draw(target.split(".", 1)[-1])
                    if fault is not None:
                        status, kind = fault
                        op = target.split(".", 1)[-1]
                        with proxy._lock:
                            proxy.injected[(status, op)] += 1
                        payload = json.dumps({"__type": kind, "message": "injected"}).encode()
                        self._answer(status, [("Content-Type", "application/x-amz-json-1.0"),
                                              ("x-amzn-RequestId", "injected-fault")], payload)
                        return
                with proxy._lock:
                    proxy.forwarded[target.split(".", 1)[0] or "other"] += 1
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                try:
                    status, resp_headers, resp_body = proxy._forward(self.command, self.path, headers, body)
                except OSError as e:
                    status, resp_headers, resp_body = 502, [("Content-Type", "text/plain")], str(e).encode()
                self._answer(status, resp_headers, resp_body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    def _forward(self, method: str, path: str, headers: dict, body: bytes):
        """Sends one request upstream on a connection of its own: a request
        is never sent twice."""
        req = urllib.request.Request(self.upstream + path, data=body if body else None, headers=headers,
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.getheaders(), resp.read()
        except urllib.error.HTTPError as e:  # 4xx/5xx from upstream: passed on as they are
            return e.code, list(e.headers.items()), e.read()

    def _draw(self, operation: str):
        with self._lock:
            if self.fail_ops is not None and operation not in self.fail_ops:
                return None
            if self.fail_rate > 0 and self._rng.random() < self.fail_rate:
                return self._rng.choice(FAULTS)
        return None

    def _held(self, target: str, body: bytes) -> bool:
        hold = self._hold
        if hold is None or self._released.is_set():
            return False
        receive = target == "AmazonSQS.ReceiveMessage" or b"Action=ReceiveMessage" in body
        return receive and hold.encode() in body

    def hold_receives(self, queue_name_part: str):
        """Holds every SQS ReceiveMessage on a queue whose URL contains
        ``queue_name_part`` until :meth:`release_receives` (at most 30 s): the
        consumers stall, as a backlogged or throttled worker would, while
        producers keep sending."""
        with self._lock:
            self._hold = queue_name_part
            self._released.clear()

    def release_receives(self):
        with self._lock:
            self._hold = None
            self._released.set()

    @property
    def faults(self) -> int:
        with self._lock:
            return sum(self.injected.values())

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self):
        self.release_receives()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
