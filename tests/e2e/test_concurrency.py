"""Many clients appending to one conversation at once: every message is
stored exactly once, with dense indexes, and each client's messages keep the
order in which they were accepted."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter

from conftest import assert_error, parse_ts, unique

THREADS = 8
PER_THREAD = 50
TOTAL = THREADS * PER_THREAD


def test_parallel_appends_are_all_stored_once_in_order(api):
    cid = api.create()["conversationId"]
    barrier = threading.Barrier(THREADS)
    acks: list[list] = [[] for _ in range(THREADS)]
    errors: list = []

    def client(t: int):
        conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
        try:
            barrier.wait()
            for i in range(PER_THREAD):
                content = f"thread {t} message {i}"
                status, _, body = api.call("POST", f"/conversations/{cid}/messages",
                                           {"messages": [{"role": "user", "content": content}]}, conn=conn)
                if status != 202:
                    errors.append((t, i, status, body))
                    return
                acks[t].append(body)
        except Exception as e:  # reported below: a thread must not die silently
            errors.append((t, repr(e)))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not any(th.is_alive() for th in threads), "client threads hung"
    assert errors == [], errors[:5]
    assert sum(len(a) for a in acks) == TOTAL

    accepted_ids = {b["messages"][0]["messageId"] for a in acks for b in a}
    assert len(accepted_ids) == TOTAL, "message ids in the 202 answers must be distinct"
    assert len({b["commandId"] for a in acks for b in a}) == TOTAL

    conv = api.wait_count(cid, TOTAL, timeout=30)
    assert conv["messageCount"] == TOTAL

    messages = api.all_messages(cid, limit=200)
    assert len(messages) == TOTAL
    assert [m["messageIndex"] for m in messages] == list(range(TOTAL))
    ids = [m["messageId"] for m in messages]
    assert len(set(ids)) == TOTAL
    assert set(ids) == accepted_ids

    expected = {f"thread {t} message {i}" for t in range(THREADS) for i in range(PER_THREAD)}
    counts = Counter(m["content"] for m in messages)
    assert set(counts) == expected
    assert max(counts.values()) == 1, [c for c, n in counts.items() if n > 1][:5]

    # each client's appends were accepted one after another, so they are
    # stored in that order (the writes queue is FIFO per conversation)
    for t in range(THREADS):
        mine = [m["messageIndex"] for m in messages if m["content"].startswith(f"thread {t} ")]
        order = [int(m["content"].rsplit(" ", 1)[1]) for m in messages if m["content"].startswith(f"thread {t} ")]
        assert order == list(range(PER_THREAD)), f"thread {t} stored out of order"
        assert mine == sorted(mine)

    # the descending walk agrees
    desc = api.all_messages(cid, limit=150, order="desc")
    assert [m["messageId"] for m in desc] == ids[::-1]
    # and the conversation's previews follow the first and last stored messages
    assert conv["firstMessagePreview"] == messages[0]["content"]
    assert api.conversation(cid)["lastMessagePreview"] == messages[-1]["content"]


def test_patches_during_appends_lose_nothing(api):
    """PATCHes (metadata merges) racing the persist worker on one
    conversation: neither side's writes are lost."""
    cid = api.create(metadata={"start": True})["conversationId"]
    n_msgs, n_patches = 120, 60
    errors: list = []

    def appender():
        for i in range(n_msgs):
            status, _, body = api.post(f"/conversations/{cid}/messages",
                                       {"messages": [{"role": "user", "content": f"msg {i}"}]})
            if status != 202:
                errors.append(("append", i, status, body))

    def patcher():
        for i in range(n_patches):
            for _attempt in range(20):  # 503 dependency_unavailable invites a retry
                status, _, body = api.patch(f"/conversations/{cid}", {"metadata": {f"k{i}": i}})
                if status != 503:
                    break
                time.sleep(0.01)
            if status != 200:
                errors.append(("patch", i, status, body))

    threads = [threading.Thread(target=appender), threading.Thread(target=patcher)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert errors == [], errors[:5]
    conv = api.wait_count(cid, n_msgs, timeout=20)
    assert conv["messageCount"] == n_msgs
    assert conv["metadata"] == {"start": True, **{f"k{i}": i for i in range(n_patches)}}
    msgs = api.all_messages(cid)
    assert [m["content"] for m in msgs] == [f"msg {i}" for i in range(n_msgs)]
    assert [m["messageIndex"] for m in msgs] == list(range(n_msgs))
    api.wait_queues_idle()
    comps = {c["name"]: c for c in api.health()["components"]}
    assert comps["writesQueue"]["deadLetters"] == 0


def test_append_right_after_end_is_refused_or_kept_and_counted(api):
    """An append sent right after POST /end either meets 409
    conversation_ended (the end was already applied) or is accepted with 202
    (the end was still queued). An accepted write is never lost: it is stored
    once, after the end, without moving lastActivityAt past endTime, and the
    user's stats count it."""
    trials = 10
    user = unique("late")
    accepted = 0
    for trial in range(trials):
        cid = api.create(user, f"agent-{trial}")["conversationId"]
        api.append(cid, ("user", "hello"), ("assistant", "hi"))
        api.end(cid)
        resp = api.post(f"/conversations/{cid}/messages", {"messages": [{"role": "user", "content": "too late"}]})
        if resp[0] == 202:
            accepted += 1
        else:
            assert_error(resp, 409, "conversation_ended")
        api.wait_status(cid, "ended")
        api.wait_queues_idle()
        conv = api.conversation(cid)
        contents = [m["content"] for m in api.all_messages(cid)]
        expected = ["hello", "hi", "too late"] if resp[0] == 202 else ["hello", "hi"]
        assert contents == expected, (trial, resp[0], contents)
        assert conv["messageCount"] == len(expected)
        assert parse_ts(conv["lastActivityAt"]) <= parse_ts(conv["endTime"])
    stats = api.stats(user)
    assert (stats["conversations"], stats["messages"]) == (trials, 2 * trials + accepted)

