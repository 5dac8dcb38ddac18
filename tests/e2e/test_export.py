"""A user's export (issue 23): a parent's right to review everything convo
holds about their child — every conversation and message, opened, page by
page — over HTTP and through the Python client."""

from __future__ import annotations

import urllib.parse

from conftest import assert_error, unique

from convo_client import ConvoClient


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def test_the_export_holds_every_conversation_and_message_opened(make_server):
    srv = make_server("--appends-per-minute", "0")
    api, bob = srv.client("alice"), srv.client("bob")
    user = "+1 (415) 555-0188"  # any spelling of a phone number: one user
    said = {}
    ids = []
    for agent, appends in [("toy-1", 1), ("toy-2", 27), ("toy-3", 1)]:
        cid = api.create(user, agent)["conversationId"]
        ids.append(cid)
        said[cid] = []
        for a in range(appends):
            batch = [("user" if i % 2 == 0 else "assistant", f"{agent} line {a}-{i} about Mia's swimming")
                     for i in range(20)]
            api.append(cid, *batch)
            said[cid] += [c for _, c in batch]
        api.wait_count(cid, len(said[cid]), timeout=30)
    theirs = bob.create(user, "toy-1")["conversationId"]
    bob.append(theirs, ("user", "bob's child"))

    pages, conversations, messages = 0, [], []
    cursor = None
    while True:
        path = f"/users/{q('+14155550188')}/export" + (f"?cursor={q(cursor)}" if cursor else "")
        page = api.ok("GET", path)
        pages += 1
        assert page["userId"] == "+14155550188"
        assert len(page["messages"]) <= 500
        conversations += [c["conversationId"] for c in page["conversations"]]
        messages += page["messages"]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert pages >= 2
    assert sorted(conversations) == sorted(ids)
    for cid in ids:
        assert [m["content"] for m in messages if m["conversationId"] == cid] == said[cid]
    assert theirs not in {m["conversationId"] for m in messages}

    # The client turns the pages into JSON-lines records.
    client = ConvoClient(srv.base_url, token=srv.token("alice"))
    records = list(client.export_user(user))
    assert [r["type"] for r in records].count("conversation") == 3
    assert len([r for r in records if r["type"] == "message"]) == sum(len(v) for v in said.values())
    first_seen = {}
    for i, r in enumerate(records):
        if r["type"] == "conversation":
            first_seen[r["conversation"]["conversationId"]] = i
        else:
            assert first_seen[r["message"]["conversationId"]] < i, "a conversation comes before its messages"

    # A user nobody holds exports empty; bad ids and cursors are refused.
    empty = api.ok("GET", f"/users/{unique('nobody')}/export")
    assert (empty["conversations"], empty["messages"], empty["nextCursor"]) == ([], [], None)
    assert_error(api.get(f"/users/{q('+1 555')}/export"), 400, "invalid_phone_number", "userId")
    assert_error(api.get(f"/users/{q(user)}/export?cursor=not-a-cursor"), 400, "invalid_cursor")
    assert_error(api.call("GET", f"/users/{q(user)}/export", token=None), 401, "unauthorized")
