"""The idle-session sweeper: a session idle for longer than --idle-timeout is
ended as of its last activity; a busy one is left alone."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from conftest import Client, parse_ts, unique, wait_until


def test_idle_sessions_are_ended_by_the_sweeper(make_server):
    srv = make_server("--idle-timeout", "2s", "--sweep-interval", "1s")
    api = Client(srv.base_url, srv.token("alice"))
    user = unique("kid")

    idle = api.create(user, "agent-idle")
    iid = idle["conversationId"]
    api.append(iid, ("user", "Tell me about penguins and icebergs"), ("assistant", "Penguins love ice."))
    before = api.wait_count(iid, 2)
    assert before["status"] == "active"

    # a second session stays busy the whole time: it must not be swept
    busy = api.create(user, "agent-busy")["conversationId"]
    stop = threading.Event()
    busy_errors = []

    def keep_busy():
        n = 0
        while not stop.is_set():
            status, _, body = api.post(f"/conversations/{busy}/messages",
                                       {"messages": [{"role": "user", "content": f"still here {n}"}]})
            if status != 202:
                busy_errors.append((status, body))
                return
            n += 1
            stop.wait(0.4)

    t = threading.Thread(target=keep_busy)
    t.start()
    try:
        started = time.monotonic()
        ended = api.wait_status(iid, "ended", timeout=12)
        waited = time.monotonic() - started
    finally:
        # let the busy session live a little past the idle one's end
        time.sleep(1.0)
        stop.set()
        t.join(10)
    assert busy_errors == []

    # ended by the sweeper: as of the last activity, not of the sweep
    assert ended["endTime"] == ended["lastActivityAt"], ended
    assert ended["lastActivityAt"] == before["lastActivityAt"]
    assert ended["messageCount"] == 2
    secs = (parse_ts(ended["endTime"]) - parse_ts(ended["startTime"])) // timedelta(seconds=1)
    assert ended["durationSeconds"] == secs
    assert ended["durationMinutes"] == (secs + 30) // 60
    assert waited < 10, f"the sweeper took {waited:.1f}s with a 2s idle timeout and a 1s interval"

    # the end went through the usual path: stats and a generated title
    stats = wait_until(lambda: (s := api.stats(user))["conversations"] >= 1 and s, what="stats")
    assert (stats["conversations"], stats["messages"], stats["totalSeconds"]) == (1, 2, secs)
    titled = wait_until(lambda: (c := api.conversation(iid))["titleSource"] == "generated" and c,
                        what="a generated title")
    assert 3 <= len(titled["title"].split()) <= 8, titled["title"]

    # the busy session was left alone
    assert api.conversation(busy)["status"] == "active"

    # and the reuseActive pair was released: a new session starts
    fresh = api.create(user, "agent-idle", reuseActive=True, expect=201)
    assert fresh["conversationId"] != iid
