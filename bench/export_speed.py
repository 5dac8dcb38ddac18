"""Export speed (issue 23): how fast `GET /users/{userId}/export` hands out
a user's data, on a local server (in memory, sealed as by default).

One user with CONVERSATIONS conversations of MESSAGES messages (300
characters each); the export is followed page by page to the end, timed.

    .venv/bin/python bench/export_speed.py target/release/convo-local [conversations] [messages]
"""

import http.client
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/convo-local"
CONVERSATIONS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
MESSAGES = int(sys.argv[3]) if len(sys.argv) > 3 else 400


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(port, token, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
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


def main():
    port = free_port()
    d = tempfile.mkdtemp()
    srv = subprocess.Popen(
        [BIN, "serve", "--addr", f"127.0.0.1:{port}", "--in-memory", "--data-dir", d, "--appends-per-minute", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health")
                break
            except Exception:
                time.sleep(0.1)
        tok = subprocess.check_output([BIN, "token", "--sub", "parent-app", "--data-dir", d]).decode().strip()
        text = ("the swimming lesson went well and the teacher said next week we try the deep end " * 4)[:300]
        ids = []
        for c in range(CONVERSATIONS):
            _, conv, _ = call(port, tok, "POST", "/conversations", {"userId": "child-7", "agentId": f"toy-{c}"})
            ids.append(conv["conversationId"])
            for start in range(0, MESSAGES, 20):
                batch = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{start + i} {text}"}
                         for i in range(min(20, MESSAGES - start))]
                status, _, _ = call(port, tok, "POST", f"/conversations/{conv['conversationId']}/messages",
                                    {"messages": batch})
                assert status == 202, status
        for cid in ids:
            for _ in range(600):
                _, c, _ = call(port, tok, "GET", f"/conversations/{cid}")
                if c["messageCount"] == MESSAGES:
                    break
                time.sleep(0.05)
        started = time.perf_counter()
        pages = messages = size = 0
        cursor = None
        while True:
            path = "/users/child-7/export" + (f"?cursor={urllib.parse.quote(cursor)}" if cursor else "")
            status, page, n = call(port, tok, "GET", path)
            assert status == 200, status
            pages += 1
            size += n
            messages += len(page["messages"])
            cursor = page["nextCursor"]
            if not cursor:
                break
        took = time.perf_counter() - started
        assert messages == CONVERSATIONS * MESSAGES, messages
        print(json.dumps({
            "binary": BIN,
            "conversations": CONVERSATIONS,
            "messages": messages,
            "pages": pages,
            "seconds": round(took, 2),
            "messagesPerSecond": round(messages / took),
            "megabytes": round(size / 1e6, 1),
            "msPerPage": round(took / pages * 1000, 1),
        }))
    finally:
        srv.terminate()
        srv.wait()


if __name__ == "__main__":
    main()
