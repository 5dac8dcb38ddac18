"""Delivery lag of events through webhooks, locally: how long from the API
accepting a flagged message (its 202; the event's `time`) to the webhook
receiving `message.flagged` — the worker's commit, the events queue and the
signed POST together, so an upper bound of commit-to-webhook. One
conversation per sender, appends paced one at a time, on the embedded
store on disk (each queue write is durable):

    .venv/bin/python bench/event_lag.py target/release/convo-local [N]
"""

import http.server
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/convo-local"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 500

arrived: dict[str, float] = {}
lock = threading.Lock()


class Hook(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        now = time.time()
        e = json.loads(body)
        if e["type"] == "message.flagged":
            with lock:
                arrived.setdefault(e["data"]["messageId"], now)
        self.send_response(204)
        self.end_headers()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
threading.Thread(target=hook.serve_forever, daemon=True).start()
port, d = free_port(), tempfile.mkdtemp()
srv = subprocess.Popen([BIN, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", d, "--appends-per-minute", "0",
                        "--webhook-url", f"http://127.0.0.1:{hook.server_address[1]}/hook"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
base = f"http://127.0.0.1:{port}"
for _ in range(100):
    try:
        urllib.request.urlopen(base + "/health")
        break
    except Exception:
        time.sleep(0.1)
token = subprocess.check_output([BIN, "token", "--sub", "lag", "--data-dir", d]).decode().strip()


def call(method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


try:
    cid = call("POST", "/conversations", {"userId": "kid", "agentId": "teddy"})["conversationId"]
    accepted: dict[str, float] = {}
    for i in range(N):
        t = time.time()
        ack = call("POST", f"/conversations/{cid}/messages",
                   {"messages": [{"role": "user", "content": f"I will punch you in the face {i}"}]})
        accepted[ack["messages"][0]["messageId"]] = t
        time.sleep(0.01)
    deadline = time.time() + 30
    while len(arrived) < N and time.time() < deadline:
        time.sleep(0.1)
    lags = sorted((arrived[m] - t) * 1000 for m, t in accepted.items() if m in arrived)
    q = statistics.quantiles(lags, n=100)
    print(f"{len(lags)}/{N} message.flagged delivered; acceptance to webhook: "
          f"p50 {q[49]:.1f} ms, p90 {q[89]:.1f} ms, p99 {q[98]:.1f} ms, max {lags[-1]:.1f} ms")
finally:
    srv.terminate()
    srv.wait()
