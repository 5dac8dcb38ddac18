"""A convo-local server for the one-shot benchmark scripts (heavy_read.py,
export_speed.py): started in memory on a free loopback port, a token per
owner, one JSON call at a time."""

import http.client
import json
import socket
import subprocess
import tempfile
import time
import urllib.request


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class LocalServer:
    """`with LocalServer(bin) as srv:` — stopped on leaving the block."""

    def __init__(self, binary: str):
        self.binary = binary
        self.port = free_port()
        self.data_dir = tempfile.mkdtemp()
        self.proc = subprocess.Popen(
            [binary, "serve", "--addr", f"127.0.0.1:{self.port}", "--in-memory", "--data-dir", self.data_dir,
             "--appends-per-minute", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health")
                break
            except Exception:
                time.sleep(0.1)

    def token(self, owner: str) -> str:
        return subprocess.check_output(
            [self.binary, "token", "--sub", owner, "--data-dir", self.data_dir]).decode().strip()

    def call(self, token: str, method: str, path: str, body=None):
        """`(status, parsed body, body size in bytes)`."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Authorization": f"Bearer {token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        raw = r.read()
        c.close()
        return r.status, (json.loads(raw) if raw else None), len(raw)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()
