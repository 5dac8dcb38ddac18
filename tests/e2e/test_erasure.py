"""Erasure over HTTP: a conversation, then everything about a user."""

from __future__ import annotations

import uuid

import pytest
from conftest import STORE, assert_error, unique


def test_erasure(api, bob):
    user = unique("erase")
    a = api.create(user, "toy-1")["conversationId"]
    b = api.create(user, "toy-2")["conversationId"]
    theirs = bob.create(user, "toy-1")["conversationId"]
    api.append(a, ("user", "first"), ("assistant", "reply"))
    api.append(b, ("user", "second"))
    bob.append(theirs, ("user", "bob's"))
    api.end(a)
    api.wait_status(a, "ended")
    api.flush(b)
    bob.flush(theirs)
    assert api.stats(user)["conversations"] == 1

    assert api.ok("DELETE", f"/conversations/{a}") == {"conversationId": a, "deleted": True}
    assert api.get(f"/conversations/{a}")[0] == 404
    assert api.stats(user)["conversations"] == 0
    # Idempotent; another owner's attempt is answered alike and changes nothing.
    assert api.ok("DELETE", f"/conversations/{a}") == {"conversationId": a, "deleted": True}
    assert bob.ok("DELETE", f"/conversations/{b}") == {"conversationId": b, "deleted": True}
    assert api.conversation(b)["messageCount"] == 2  # "second" and the flush sentinel

    report = api.erase_user(user)
    assert report["outcome"] == "erased"
    assert (report["conversationsDeleted"], report["messagesDeleted"]) == (1, 2)
    # A finished erasure keeps its counts but no id of the person.
    assert "userId" not in report and report["finishedAt"] >= report["requestedAt"]
    # Only its owner sees it; an id that names nothing is not found alike.
    assert_error(bob.get(f"/erasures/{report['erasureId']}"), 404, "erasure_not_found")
    assert_error(api.get("/erasures/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404, "erasure_not_found")
    assert_error(api.get("/erasures/not-an-id"), 404, "erasure_not_found")
    # A user the owner holds nothing of: done, nothing held.
    nobody = api.erase_user(unique("nobody"))
    assert (nobody["outcome"], nobody["conversationsDeleted"]) == ("nothing_held", 0)
    assert api.get(f"/conversations/{b}")[0] == 404
    assert api.ok("GET", f"/conversations?userId={user}")["conversations"] == []
    assert api.stats(user)["conversations"] == 0
    # Bob's conversation with the same user id is his, and stays.
    assert bob.conversation(theirs)["messageCount"] == 2


@pytest.mark.skipif(STORE != "embedded", reason="the embedded store's files on disk")
def test_nothing_of_an_erased_user_stays_on_disk(make_server):
    """After a user's erasure and a stop, no file of the data directory holds
    their phone number, their conversation ids or what they said: the
    database is compacted at the stop (issue 23)."""
    srv = make_server("--appends-per-minute", "0")
    api = srv.client("alice")
    phone_digits = "4155550177"
    marker = "zebra-umbrella-" + uuid.uuid4().hex[:8]
    kept = api.create("child-kept", "toy-1")["conversationId"]
    api.append(kept, ("user", "a message that stays"))
    ids = []
    for agent in ["+14155550100", "+14155550101"]:
        cid = api.create(f"+1 (415) 555-0177", agent, channel="sms")["conversationId"]
        ids.append(cid)
        for i in range(12):
            api.append(cid, ("user", f"{marker} number {i}"), ("assistant", f"reply {i} to {marker}"))
        api.end(cid)
        api.wait_status(cid, "ended")
    api.wait_queues_idle()
    files = lambda: [p for p in srv.data_dir.rglob("*") if p.is_file()]

    def holding(needle: str) -> list[str]:
        return [p.name for p in files() if needle.encode() in p.read_bytes()]

    # While the user exists their data is on disk (sealed: the ids are).
    assert holding(ids[0]), "the check can see what it looks for"
    erased = api.erase_user("+14155550177")
    assert erased["conversationsDeleted"] == 2
    api.wait_queues_idle()
    srv.stop()
    for needle in [phone_digits, ids[0], ids[1], marker]:
        assert holding(needle) == [], f"{needle!r} is still in {holding(needle)}"
    # What was not erased is still there, and served after a restart.
    srv.start()
    assert api.conversation(kept)["messageCount"] == 1
