"""Erasure throughput (issue 23): how fast the erasure job of
`DELETE /users/{userId}` erases a user, from the 202 to `done`.

One user with CONVERSATIONS conversations of MESSAGES messages each (and a
second user whose data must stay); the user is erased and the job's report
(`GET /erasures/{id}`) followed until it is done, timed.

    .venv/bin/python bench/erasure_speed.py <convo-local> embedded [conversations] [messages]
    .venv/bin/python bench/erasure_speed.py <convo-local> moto [conversations] [messages]

`embedded`: a local server in memory. `moto`: convo-local in AWS mode on
the template's table and queues, deployed on a moto server this script
starts (DynamoDB, SQS and KMS wire APIs; moto's latencies, not AWS's). The
job's settling wait for the lagging index (`CONVO_ERASURE_SETTLE`, 5 s by
default) is part of the time on DynamoDB and is reported apart.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "infra"))

from local_server import LocalServer, free_port  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/convo-local"
MODE = sys.argv[2] if len(sys.argv) > 2 else "embedded"
CONVERSATIONS = int(sys.argv[3]) if len(sys.argv) > 3 else 100
MESSAGES = int(sys.argv[4]) if len(sys.argv) > 4 else 10
SETTLE = os.environ.get("CONVO_ERASURE_SETTLE", "5s")


class MotoServer(LocalServer):
    """convo-local in AWS mode against a fresh moto server and stack."""

    def __init__(self, binary: str):
        self.binary = binary
        moto_port = free_port()
        self.moto = subprocess.Popen(
            [sys.executable, str(ROOT / "tests/moto_server.py"), "-H", "127.0.0.1", "-p", str(moto_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        aws = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}", "AWS_REGION": "us-east-1",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
        os.environ.update(aws)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{aws['AWS_ENDPOINT_URL']}/moto-api/", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        import stack
        env = {**os.environ, **stack.environment(stack.deploy("bench-erasure")), "CONVO_ERASURE_SETTLE": SETTLE}
        self.port = free_port()
        self.data_dir = tempfile.mkdtemp()
        self.proc = subprocess.Popen(
            [binary, "serve", "--aws", "--addr", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir,
             "--appends-per-minute", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health")
                break
            except Exception:
                time.sleep(0.1)

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self.moto.terminate()
        self.moto.wait()


def main():
    server = MotoServer(BIN) if MODE == "moto" else LocalServer(BIN)
    with server as srv:
        tok = srv.token("toy-company")
        text = "we built a sandcastle with a moat and a bridge and then the tide came in"
        ids = []
        for user in ("child-erased", "child-kept"):
            for c in range(CONVERSATIONS if user == "child-erased" else 2):
                status, conv, _ = srv.call(tok, "POST", "/conversations", {"userId": user, "agentId": f"toy-{c}"})
                assert status == 201, (status, conv)
                batch = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} {text}"}
                         for i in range(MESSAGES)]
                status, _, _ = srv.call(tok, "POST", f"/conversations/{conv['conversationId']}/messages",
                                        {"messages": batch})
                assert status == 202, status
                ids.append((user, conv["conversationId"]))
        for _, cid in ids:
            for _ in range(1200):
                _, c, _ = srv.call(tok, "GET", f"/conversations/{cid}")
                if c["messageCount"] == MESSAGES:
                    break
                time.sleep(0.05)
        started = time.perf_counter()
        status, report, _ = srv.call(tok, "DELETE", "/users/child-erased")
        assert status == 202, (status, report)
        answered = time.perf_counter() - started
        while report["status"] != "done":
            time.sleep(0.05)
            _, report, _ = srv.call(tok, "GET", f"/erasures/{report['erasureId']}")
        took = time.perf_counter() - started
        assert report["conversationsDeleted"] == CONVERSATIONS, report
        assert report["messagesDeleted"] == CONVERSATIONS * MESSAGES, report
        for user, cid in ids:
            status, _, _ = srv.call(tok, "GET", f"/conversations/{cid}")
            assert status == (404 if user == "child-erased" else 200), (user, status)
        settle = float(SETTLE.rstrip("s")) if MODE == "moto" else 0.0
        working = max(took - settle, 1e-9)
        print(json.dumps({
            "mode": MODE,
            "binary": BIN,
            "conversations": CONVERSATIONS,
            "messages": CONVERSATIONS * MESSAGES,
            "answeredMs": round(answered * 1000, 1),
            "seconds": round(took, 2),
            "settleSeconds": settle,
            "conversationsPerSecond": round(CONVERSATIONS / working, 1),
            "messagesPerSecond": round(CONVERSATIONS * MESSAGES / working),
        }))


if __name__ == "__main__":
    main()
