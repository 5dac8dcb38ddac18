"""Export speed (issue 23): how fast `GET /users/{userId}/export` hands out
a user's data, on a local server (in memory, sealed as by default).

One user with CONVERSATIONS conversations of MESSAGES messages (300
characters each); the export is followed page by page to the end, timed.

    .venv/bin/python bench/export_speed.py target/release/convo-local [conversations] [messages]
"""

import json
import sys
import time
import urllib.parse

from local_server import LocalServer

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/convo-local"
CONVERSATIONS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
MESSAGES = int(sys.argv[3]) if len(sys.argv) > 3 else 400


def main():
    with LocalServer(BIN) as srv:
        tok = srv.token("parent-app")
        text = ("the swimming lesson went well and the teacher said next week we try the deep end " * 4)[:300]
        ids = []
        for c in range(CONVERSATIONS):
            _, conv, _ = srv.call(tok, "POST", "/conversations", {"userId": "child-7", "agentId": f"toy-{c}"})
            ids.append(conv["conversationId"])
            for start in range(0, MESSAGES, 20):
                batch = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{start + i} {text}"}
                         for i in range(min(20, MESSAGES - start))]
                status, _, _ = srv.call(tok, "POST", f"/conversations/{conv['conversationId']}/messages",
                                    {"messages": batch})
                assert status == 202, status
        for cid in ids:
            for _ in range(600):
                _, c, _ = srv.call(tok, "GET", f"/conversations/{cid}")
                if c["messageCount"] == MESSAGES:
                    break
                time.sleep(0.05)
        started = time.perf_counter()
        pages = messages = size = 0
        cursor = None
        while True:
            path = "/users/child-7/export" + (f"?cursor={urllib.parse.quote(cursor)}" if cursor else "")
            status, page, n = srv.call(tok, "GET", path)
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


if __name__ == "__main__":
    main()
