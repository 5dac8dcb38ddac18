"""Heavy-read isolation (issue 23): one owner's plain reads beside another
owner's worst-case token-budget context reads, on one local server.

Owner "heavy" holds a conversation of 200 messages of 16 KiB; four threads
read its `/context?maxTokens=10000000` (every message counted) in a loop.
Owner "light" reads its own small conversation meanwhile. The figure is the
ratio of light's median read latency with the heavy reads running to its
median alone, measured in the same run (machines are noisy: compare ratios).

    .venv/bin/python bench/heavy_read.py target/release/convo-local [seconds]
"""

import json
import statistics
import sys
import threading
import time

from local_server import LocalServer

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/convo-local"
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
HEAVY_READERS = 4


def light_latencies(srv, token, cid, seconds):
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        status, _, _ = srv.call(token, "GET", f"/conversations/{cid}/messages?limit=10")
        assert status == 200
        out.append((time.perf_counter() - t) * 1000)
    return out


def main():
    with LocalServer(BIN) as srv:
        tok = {o: srv.token(o) for o in ("heavy", "light")}
        _, heavy, _ = srv.call(tok["heavy"], "POST", "/conversations", {"userId": "u", "agentId": "a"})
        hid = heavy["conversationId"]
        words = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " * 300)[:16000]
        for i in range(100):
            status, _, _ = srv.call(tok["heavy"], "POST", f"/conversations/{hid}/messages",
                             {"messages": [{"role": "user", "content": f"{i} {words}"},
                                           {"role": "assistant", "content": f"{i} {words}"}]})
            assert status == 202, status
        _, light, _ = srv.call(tok["light"], "POST", "/conversations", {"userId": "u", "agentId": "a"})
        lid = light["conversationId"]
        srv.call(tok["light"], "POST", f"/conversations/{lid}/messages",
             {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]})
        # Everything stored before measuring.
        for _ in range(600):
            _, c, _ = srv.call(tok["heavy"], "GET", f"/conversations/{hid}")
            if c["messageCount"] == 200:
                break
            time.sleep(0.1)
        status, ctx, _ = srv.call(tok["heavy"], "GET", f"/conversations/{hid}/context?maxTokens=10000000")
        assert status == 200 and len(ctx["messages"]) == 200, (status, len(ctx.get("messages", [])))

        alone = light_latencies(srv, tok["light"], lid, SECONDS / 2)
        stop = threading.Event()
        heavy_done = []

        def heavy_reader():
            while not stop.is_set():
                t = time.perf_counter()
                status, _, _ = srv.call(tok["heavy"], "GET", f"/conversations/{hid}/context?maxTokens=10000000")
                assert status == 200
                heavy_done.append((time.perf_counter() - t) * 1000)

        threads = [threading.Thread(target=heavy_reader) for _ in range(HEAVY_READERS)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        beside = light_latencies(srv, tok["light"], lid, SECONDS)
        stop.set()
        for t in threads:
            t.join()
        a, b = statistics.median(alone), statistics.median(beside)
        print(json.dumps({
            "binary": BIN,
            "lightReadMedianMsAlone": round(a, 2),
            "lightReadMedianMsBesideHeavy": round(b, 2),
            "lightReadP99MsBesideHeavy": round(sorted(beside)[int(len(beside) * 0.99) - 1], 2),
            "ratio": round(b / a, 1),
            "heavyReadMedianMs": round(statistics.median(heavy_done), 1) if heavy_done else None,
            "heavyReads": len(heavy_done),
            "lightReads": len(beside),
        }))


if __name__ == "__main__":
    main()
