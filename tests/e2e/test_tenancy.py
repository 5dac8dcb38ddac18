"""Tenancy matrix: for every route, owner B using owner A's ids gets exactly the
answer a missing id gets, and nothing of A's changes."""

from __future__ import annotations

import pytest

from conftest import unique

MISSING = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def snapshot(api, cid, user):
    return {
        "conversation": api.conversation(cid),
        "messages": api.all_messages(cid),
        "stats": api.stats(user),
        "list": api.ok("GET", f"/conversations?userId={user}"),
        "reviews": [c["conversationId"] for c in api.ok("GET", "/reviews?limit=200")["conversations"]],
    }


def routes(cid, user):
    """(method, path, body) for every route that names a conversation or a user."""
    return [
        ("GET", f"/conversations/{cid}", None),
        ("PATCH", f"/conversations/{cid}", {"title": "mine now", "metadata": {"x": 1}}),
        ("PATCH", f"/conversations/{cid}", {"status": "archived"}),
        ("POST", f"/conversations/{cid}/messages", {"messages": [{"role": "user", "content": "intruder"}]}),
        ("POST", f"/conversations/{cid}/end", None),
        ("POST", f"/conversations/{cid}/review", {"flagStatus": "dismissed"}),
        ("GET", f"/conversations/{cid}/messages", None),
        ("GET", f"/conversations/{cid}/messages?flagged=true", None),
        ("GET", f"/conversations/{cid}/context", None),
        ("DELETE", f"/conversations/{cid}", None),
        ("GET", f"/conversations?userId={user}", None),
        ("GET", f"/users/{user}/stats", None),
        ("DELETE", f"/users/{user}", None),
    ]


def comparable(resp, cid, user, missing_cid, missing_user):
    status, _, body = resp
    if isinstance(body, dict) and "error" in body:
        return status, body["error"]["code"]
    if isinstance(body, dict) and "erasureId" in body:
        # An erasure is a new job each time: its id and time are its own.
        body = {k: v for k, v in body.items() if k not in ("erasureId", "requestedAt")}
    # Successful answers may only differ by the id asked about.
    text = repr(body).replace(cid, "<id>").replace(missing_cid, "<id>").replace(user, "<user>")
    return status, text.replace(missing_user, "<user>")


@pytest.mark.parametrize("i", range(len(routes("x", "y"))))
def test_a_foreign_id_answers_like_a_missing_one(api, bob, i):
    user = unique("tenant")
    cid = api.create(user, "toy-1", metadata={"keep": True})["conversationId"]
    api.append(cid, ("user", "hello"), ("user", "damn it"))
    api.end(cid)
    api.wait_status(cid, "ended")
    api.wait_queues_idle()
    before = snapshot(api, cid, user)

    method, path, body = routes(cid, user)[i]
    missing_user = unique("nobody")
    m_method, m_path, m_body = routes(MISSING, missing_user)[i]
    foreign = bob.call(method, path, body)
    missing = bob.call(m_method, m_path, m_body)
    assert comparable(foreign, cid, user, MISSING, missing_user) == comparable(missing, cid, user, MISSING, missing_user)
    api.wait_queues_idle()
    assert snapshot(api, cid, user) == before
