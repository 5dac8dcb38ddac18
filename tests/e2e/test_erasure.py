"""Erasure over HTTP: a conversation, then everything about a user."""

from __future__ import annotations

from conftest import unique


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

    assert api.ok("DELETE", f"/users/{user}") == {"userId": user, "conversationsDeleted": 1}
    assert api.get(f"/conversations/{b}")[0] == 404
    assert api.ok("GET", f"/conversations?userId={user}")["conversations"] == []
    assert api.stats(user)["conversations"] == 0
    # Bob's conversation with the same user id is his, and stays.
    assert bob.conversation(theirs)["messageCount"] == 2
