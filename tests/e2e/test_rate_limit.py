"""Appends per conversation per minute: over the limit, 429 with Retry-After, nothing enqueued.

The worker counts the appends it stores (in the conversation's head, which
the API reads anyway), so the test lets each append be stored before the
next: appends still on the queue are not counted yet (see the README)."""

from __future__ import annotations

import time

from conftest import assert_error, unique


def test_appends_over_the_limit_get_429_and_change_nothing(make_server):
    srv = make_server("--appends-per-minute", "3")
    api = srv.client("alice")
    # Stay clear of a minute boundary so all appends share one window.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    user = unique("rl")
    cid = api.create(user, "toy-1")["conversationId"]
    for i in range(3):
        api.append(cid, ("user", f"m{i}"))
        api.wait_count(cid, i + 1)
    status, headers, body = api.post(f"/conversations/{cid}/messages", {"messages": [{"role": "user", "content": "m3"}]})
    assert_error((status, headers, body), 429, "rate_limited")
    retry_after = int(headers.get("retry-after") or headers.get("Retry-After"))
    assert 1 <= retry_after <= 60
    # Another conversation has its own budget.
    other = api.create(unique("rl"), "toy-1")["conversationId"]
    api.append(other, ("user", "fine"))
    api.flush(other)
    api.wait_queues_idle()
    assert [m["content"] for m in api.all_messages(cid)] == ["m0", "m1", "m2"]
    assert api.conversation(cid)["messageCount"] == 3
