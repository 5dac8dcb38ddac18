"""The documented life of a conversation, end to end, plus the features a
client leans on: SMS numbers, reuseActive, externalId, Idempotency-Key,
moderation and pagination."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

import pytest

from conftest import CONVERSATION_FIELDS, assert_error, parse_ts, unique, wait_until


def title_words(title: str) -> list[str]:
    return title.split()


def assert_generated_title(conv):
    assert conv["titleSource"] == "generated", conv
    assert conv["titleGeneratedAt"] is not None, conv
    parse_ts(conv["titleGeneratedAt"])
    assert isinstance(conv["title"], str), conv
    n = len(title_words(conv["title"]))
    assert 3 <= n <= 8, f"title {conv['title']!r} has {n} words"


def test_health(api, bob):
    h = api.health()
    assert h["status"] == "healthy"
    names = [c["name"] for c in h["components"]]
    assert names == ["store", "writesQueue", "titlesQueue", "eventsQueue"], names
    assert all(c["ok"] is True for c in h["components"])


def test_health_without_a_token_is_liveness_only(api, bob):
    """Anyone may ask whether the API answers; nobody learns any tenant's
    counts or the queues' figures without an operator's token."""
    status, _, body = api.call("GET", "/health", token=None)
    assert status == 200
    assert set(body) == {"status", "timestamp"} and body["status"] == "healthy", body
    parse_ts(body["timestamp"])
    # The deep health needs a token, and one of an operator.
    assert_error(api.call("GET", "/health/deep", token=None), 401, "unauthorized")
    err = assert_error(bob.get("/health/deep"), 403, "forbidden")
    assert "operator" in err["message"]
    assert api.get("/health/deep")[0] == 200


def test_the_deep_health_is_asked_once_per_interval(make_server):
    """With the default interval (2 s) two deep-health reads in a row are
    one answer: the store and the queues are asked once."""
    srv = make_server(env={"CONVO_DEEP_HEALTH_INTERVAL": "2s"})
    ops = srv.client("alice")
    first, second = ops.health(), ops.health()
    assert first == second, (first, second)
    time.sleep(2.1)
    assert ops.health()["timestamp"] != first["timestamp"]


def test_walkthrough(api):
    user = unique("kid")
    agent = unique("agent")

    # --- create ---------------------------------------------------------
    conv = api.create(user, agent, userName="Kid", agentName="Pip", metadata={"device": "toy-7", "drop": 1})
    assert set(conv) == CONVERSATION_FIELDS, set(conv) ^ CONVERSATION_FIELDS
    cid = conv["conversationId"]
    assert len(cid) == 26 and cid.isalnum()
    expected = {
        "ownerId": "alice", "status": "active", "type": "chat", "channel": "web",
        "userId": user, "userName": "Kid", "agentId": agent, "agentName": "Pip",
        "endTime": None, "durationSeconds": None, "durationMinutes": None,
        "title": None, "titleSource": None, "titleGeneratedAt": None, "messageCount": 0,
        "firstMessagePreview": None, "lastMessagePreview": None, "flagged": False, "flagType": None,
        "flagReason": None, "severity": None, "flagStatus": None,
        "metadata": {"device": "toy-7", "drop": 1}, "archivedAt": None,
    }
    assert {k: conv[k] for k in expected} == expected
    assert conv["createdAt"] == conv["startTime"] == conv["lastActivityAt"]
    assert api.conversation(cid) == conv

    # --- first exchange -----------------------------------------------
    exchange = [("user", "Can you tell me about dragons?"),
                ("assistant", "Dragons are mythical creatures that breathe fire.")]
    ack = api.append(cid, *exchange)
    assert set(ack) == {"conversationId", "commandId", "acceptedAt", "messages", "blocked"}, ack
    assert ack["conversationId"] == cid and ack["blocked"] is False
    assert [m["role"] for m in ack["messages"]] == ["user", "assistant"]
    for m in ack["messages"]:
        assert m["safety"]["action"] == "safe" and m["safety"]["score"] == 1.0, m
        assert "externalId" not in m
    assert len({m["messageId"] for m in ack["messages"]}) == 2

    c = api.wait_count(cid, 2)
    assert c["messageCount"] == 2
    msgs = api.messages(cid)
    assert msgs["conversationId"] == cid and msgs["nextCursor"] is None
    assert [m["messageIndex"] for m in msgs["messages"]] == [0, 1]
    assert [(m["role"], m["content"]) for m in msgs["messages"]] == exchange
    assert [m["messageId"] for m in msgs["messages"]] == [m["messageId"] for m in ack["messages"]]
    for m in msgs["messages"]:
        assert m["acceptedAt"] == ack["acceptedAt"]
        assert m["createdAt"] == ack["acceptedAt"]  # no createdAt given: the server's clock
        assert m["flagged"] is False and m["blocked"] is False and m["externalId"] is None
        assert m["safety"]["action"] == "safe"
    assert c["firstMessagePreview"] == exchange[0][1]
    assert c["lastMessagePreview"] == exchange[1][1]
    assert c["lastActivityAt"] == ack["acceptedAt"]

    ctx = api.ok("GET", f"/conversations/{cid}/context")
    assert ctx == {"conversationId": cid, "messages": [{"role": r, "content": t} for r, t in exchange]}

    # --- a few more exchanges -----------------------------------------
    more = [
        [("user", "Do dragons live in castles?"), ("assistant", "In stories they often guard castles.")],
        [("user", "What do dragons eat?"), ("assistant", "Stories say they eat sheep.")],
        [("user", "Can dragons fly over mountains?"), ("assistant", "Yes, high over mountains.")],
    ]
    for ex in more:
        api.append(cid, *ex)
        exchange += ex
    api.wait_count(cid, 8)
    stored = api.all_messages(cid)
    assert [m["messageIndex"] for m in stored] == list(range(8))
    assert [(m["role"], m["content"]) for m in stored] == exchange

    ctx = api.ok("GET", f"/conversations/{cid}/context?maxMessages=3")
    assert ctx["messages"] == [{"role": r, "content": t} for r, t in exchange[-3:]]
    ctx = api.ok("GET", f"/conversations/{cid}/context?maxMessages=15&maxAge=24h")
    assert ctx["messages"] == [{"role": r, "content": t} for r, t in exchange]
    desc = api.messages(cid, order="desc", limit=3)
    assert [m["messageIndex"] for m in desc["messages"]] == [7, 6, 5]

    # metadata merge: a null removes a key
    patched = api.ok("PATCH", f"/conversations/{cid}", {"metadata": {"drop": None, "mood": "happy"}})
    assert patched["metadata"] == {"device": "toy-7", "mood": "happy"}

    # --- end ------------------------------------------------------------
    before_end = api.conversation(cid)
    ended_ack = api.end(cid)
    assert set(ended_ack) == {"conversationId", "commandId", "acceptedAt", "status"}
    assert ended_ack["conversationId"] == cid and ended_ack["status"] == "ending"

    ended = api.wait_status(cid, "ended")
    assert ended["endTime"] is not None
    end_time, start = parse_ts(ended["endTime"]), parse_ts(ended["startTime"])
    assert end_time == max(parse_ts(ended_ack["acceptedAt"]), parse_ts(before_end["lastActivityAt"]))
    secs = (end_time - start) // timedelta(seconds=1)
    assert ended["durationSeconds"] == secs
    assert ended["durationMinutes"] == (secs + 30) // 60
    assert ended["messageCount"] == 8

    # the title: generated (3-8 words), from the user's topic words
    titled = wait_until(lambda: (c := api.conversation(cid))["titleSource"] == "generated" and c,
                        what="a generated title")
    assert_generated_title(titled)
    assert "dragon" in titled["title"].lower(), titled["title"]

    # stats of the user
    stats = api.stats(user)
    assert stats["userId"] == user
    assert stats["conversations"] == 1
    assert stats["messages"] == 8
    assert stats["totalSeconds"] == secs
    assert parse_ts(stats["lastConversationAt"]) == start

    # writes after the end are refused
    assert_error(api.post(f"/conversations/{cid}/messages", {"messages": [{"role": "user", "content": "hi"}]}),
                 409, "conversation_ended")
    assert_error(api.post(f"/conversations/{cid}/end"), 409, "conversation_ended")

    # --- list: newest first --------------------------------------------
    later = []
    for _ in range(3):
        time.sleep(0.005)
        later.append(api.create(user, agent)["conversationId"])
    listing = api.ok("GET", f"/conversations?userId={urllib.parse.quote(user)}")
    assert [c["conversationId"] for c in listing["conversations"]] == later[::-1] + [cid]
    assert listing["nextCursor"] is None
    # and paginated
    page1 = api.ok("GET", f"/conversations?userId={urllib.parse.quote(user)}&limit=3")
    assert [c["conversationId"] for c in page1["conversations"]] == later[::-1]
    assert page1["nextCursor"]
    page2 = api.ok("GET", f"/conversations?userId={urllib.parse.quote(user)}&limit=3"
                          f"&cursor={urllib.parse.quote(page1['nextCursor'])}")
    assert [c["conversationId"] for c in page2["conversations"]] == [cid]
    assert page2["nextCursor"] is None

    # --- user title, then archive --------------------------------------
    titled_by_user = api.ok("PATCH", f"/conversations/{cid}", {"title": "Our dragon talk"})
    assert titled_by_user["title"] == "Our dragon talk"
    assert titled_by_user["titleSource"] == "user"
    got = api.conversation(cid)
    assert got["title"] == "Our dragon talk" and got["titleSource"] == "user"

    archived = api.ok("PATCH", f"/conversations/{cid}", {"status": "archived"})
    assert archived["status"] == "archived"
    assert archived["archivedAt"] is not None
    assert parse_ts(archived["archivedAt"]) >= end_time
    assert archived["title"] == "Our dragon talk" and archived["titleSource"] == "user"
    assert api.conversation(cid)["status"] == "archived"
    # archiving again is harmless
    again = api.ok("PATCH", f"/conversations/{cid}", {"status": "archived"})
    assert again["status"] == "archived" and again["archivedAt"] == archived["archivedAt"]


def test_user_title_is_never_overwritten(api):
    """A user title set before the session ends survives the end and the title worker."""
    conv = api.create()
    cid = conv["conversationId"]
    p = api.ok("PATCH", f"/conversations/{cid}", {"title": "Bedtime story"})
    assert (p["title"], p["titleSource"]) == ("Bedtime story", "user")
    # enough messages to cross the early-title threshold (6) and more
    for i in range(4):
        api.append(cid, ("user", f"Tell me about rockets and planets number {i}"), ("assistant", "Sure!"))
    api.wait_count(cid, 8)
    api.end(cid)
    api.wait_status(cid, "ended")
    api.wait_queues_idle()
    got = api.conversation(cid)
    assert (got["title"], got["titleSource"], got["titleGeneratedAt"]) == ("Bedtime story", "user", None)


def test_title_set_at_creation_is_a_user_title(api):
    conv = api.create(title="Space questions")
    assert (conv["title"], conv["titleSource"]) == ("Space questions", "user")
    cid = conv["conversationId"]
    api.append(cid, ("user", "How far away is the moon?"))
    api.end(cid)
    api.wait_status(cid, "ended")
    api.wait_queues_idle()
    got = api.conversation(cid)
    assert (got["title"], got["titleSource"]) == ("Space questions", "user")


def test_sms_phone_normalization_and_reuse_active(api):
    conv = api.create("+1 (415) 555-2671", "+44 20 7946 0958", channel="sms")
    assert conv["userId"] == "+14155552671"
    assert conv["agentId"] == "+442079460958"
    assert conv["channel"] == "sms"
    cid = conv["conversationId"]

    # another spelling of the same pair, with reuseActive: the same conversation, 200
    again = api.create("+1 415 555 2671", "+442079460958", channel="sms", reuseActive=True, expect=200)
    assert again["conversationId"] == cid
    assert again == api.conversation(cid)
    again2 = api.create("\uff0b1.415.555.2671", "+44 20 7946 0958", channel="sms", reuseActive=True, expect=200)
    assert again2["conversationId"] == cid

    # without reuseActive: a new conversation
    fresh = api.create("+14155552671", "+442079460958", channel="sms", expect=201)
    assert fresh["conversationId"] != cid
    assert fresh["userId"] == "+14155552671"

    # invalid numbers, and national numbers (the identity rule: without +
    # an id is never a phone number, and an SMS conversation needs one)
    for national in ["(415) 555-2671", "4155552671"]:
        assert_error(api.post("/conversations", {"userId": national, "agentId": "+442079460958", "channel": "sms"}),
                     400, "invalid_phone_number", field="userId")
    assert_error(api.post("/conversations", {"userId": "hello", "agentId": "+442079460958", "channel": "sms"}),
                 400, "invalid_phone_number", field="userId")
    assert_error(api.post("/conversations", {"userId": "+14155552671", "agentId": "12", "channel": "sms"}),
                 400, "invalid_phone_number", field="agentId")

    # the SMS user's stats and list accept any spelling with a leading +
    listing = api.ok("GET", "/conversations?userId=" + urllib.parse.quote("+1 415 555 2671"))
    ids = [c["conversationId"] for c in listing["conversations"]]
    assert cid in ids and fresh["conversationId"] in ids
    assert all(c["userId"] == "+14155552671" for c in listing["conversations"])
    assert api.stats("+14155552671")["userId"] == "+14155552671"


def test_reuse_active_for_web_and_after_end(api):
    user, agent = unique("u"), unique("a")
    first = api.create(user, agent, reuseActive=True, expect=201)
    cid = first["conversationId"]
    assert api.create(user, agent, reuseActive=True, expect=200)["conversationId"] == cid
    # another agent or user is another pair
    other = api.create(user, unique("a"), reuseActive=True, expect=201)
    assert other["conversationId"] != cid
    # another owner never gets alice's conversation
    # (checked in test_reuse_active_is_per_owner)
    api.end(cid)
    api.wait_status(cid, "ended")
    after = api.create(user, agent, reuseActive=True, expect=201)
    assert after["conversationId"] != cid
    assert after["status"] == "active"


def test_reuse_active_is_per_owner(api, bob):
    user, agent = unique("u"), unique("a")
    mine = api.create(user, agent, reuseActive=True, expect=201)
    theirs = bob.create(user, agent, reuseActive=True, expect=201)
    assert theirs["conversationId"] != mine["conversationId"]
    assert theirs["ownerId"] == "bob"


def test_reuse_active_race_yields_one_conversation(api):
    user, agent = unique("race-u"), unique("race-a")
    n = 10
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i):
        barrier.wait()
        results[i] = api.post("/conversations", {"userId": user, "agentId": agent, "reuseActive": True})

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    statuses = sorted(r[0] for r in results)
    ids = {r[2]["conversationId"] for r in results}
    assert len(ids) == 1, f"{len(ids)} conversations for one pair: {ids}"
    assert statuses == [200] * (n - 1) + [201], statuses
    listing = api.ok("GET", f"/conversations?userId={user}")
    assert [c["conversationId"] for c in listing["conversations"]] == list(ids)


def test_external_id_is_stored_once(api):
    cid = api.create()["conversationId"]
    first = api.append(cid, {"role": "user", "content": "hello from sms", "externalId": "SM-1",
                             "direction": "inbound"})
    assert first["messages"][0]["externalId"] == "SM-1"
    # the same provider message delivered again (a webhook retry), alone and in a batch
    api.append(cid, {"role": "user", "content": "hello from sms", "externalId": "SM-1", "direction": "inbound"})
    api.append(cid, {"role": "assistant", "content": "hi there", "externalId": "SM-2", "direction": "outbound"},
               {"role": "user", "content": "hello from sms", "externalId": "SM-1", "direction": "inbound"})
    msgs = api.flush(cid)
    assert [(m["externalId"], m["content"]) for m in msgs[:-1]] == [("SM-1", "hello from sms"),
                                                                    ("SM-2", "hi there")]
    assert msgs[0]["messageId"] == first["messages"][0]["messageId"]
    assert msgs[0]["direction"] == "inbound" and msgs[1]["direction"] == "outbound"
    assert [m["messageIndex"] for m in msgs] == [0, 1, 2]
    assert api.conversation(cid)["messageCount"] == 3


def test_idempotency_key_replay(api):
    cid = api.create()["conversationId"]
    body = {"messages": [{"role": "user", "content": "What is a comet?"},
                         {"role": "assistant", "content": "A ball of ice and dust."}]}
    key = {"Idempotency-Key": unique("key")}
    s1, _, r1 = api.post(f"/conversations/{cid}/messages", body, headers=key)
    s2, _, r2 = api.post(f"/conversations/{cid}/messages", body, headers=key)
    assert (s1, s2) == (202, 202)
    assert r2 == r1, "a replay must return the first answer"
    assert r2["commandId"] == r1["commandId"]

    # same key, another body
    other = {"messages": [{"role": "user", "content": "What is a planet?"}]}
    assert_error(api.post(f"/conversations/{cid}/messages", other, headers=key), 409, "idempotency_key_reused")

    # a third identical replay still gets the first answer
    s3, _, r3 = api.post(f"/conversations/{cid}/messages", body, headers=key)
    assert (s3, r3) == (202, r1)

    msgs = api.flush(cid)
    assert [(m["role"], m["content"]) for m in msgs[:-1]] == [("user", "What is a comet?"),
                                                              ("assistant", "A ball of ice and dust.")]
    assert [m["messageId"] for m in msgs[:-1]] == [m["messageId"] for m in r1["messages"]]
    assert api.conversation(cid)["messageCount"] == 3

    # keys are scoped to one conversation: the same key elsewhere is a new request
    other_cid = api.create()["conversationId"]
    s4, _, r4 = api.post(f"/conversations/{other_cid}/messages", body, headers=key)
    assert s4 == 202 and r4["conversationId"] == other_cid and r4["commandId"] != r1["commandId"]
    assert [m["content"] for m in api.flush(other_cid)[:-1]] == ["What is a comet?", "A ball of ice and dust."]

    # the end is idempotent too: a replay after the end gets the first answer, not 409
    end_key = {"Idempotency-Key": unique("end")}
    e1 = api.end(cid, headers=end_key)
    api.wait_status(cid, "ended")
    e2 = api.end(cid, headers=end_key)
    assert e2 == e1
    # without the key it is a new request, refused
    assert_error(api.post(f"/conversations/{cid}/end"), 409, "conversation_ended")


def test_moderation_flags_self_harm(api):
    cid = api.create()["conversationId"]
    ack = api.append(cid, ("user", "I want to kill myself"))
    verdict = ack["messages"][0]["safety"]
    assert verdict["action"] == "flagged"
    assert verdict["severity"] == "critical"
    assert verdict["categories"] == ["self_harm"]
    assert 0.5 <= verdict["score"] < 0.8
    assert ack["blocked"] is False

    api.wait_count(cid, 1)
    # The conversation item is written right after the message's chunk: its
    # flag shows a moment after the message does.
    c = wait_until(lambda: (c := api.conversation(cid))["flagged"] and c, 10, what="the conversation's flag")
    assert c["flagStatus"] == "unreviewed"
    assert c["severity"] == "critical"
    assert c["flagType"] == "self_harm"
    m = api.messages(cid)["messages"][0]
    assert m["flagged"] is True and m["blocked"] is False
    assert m["safety"]["action"] == "flagged" and m["safety"]["severity"] == "critical"
    # flagged (not blocked) messages stay in the agent's context
    ctx = api.ok("GET", f"/conversations/{cid}/context")
    assert ctx["messages"] == [{"role": "user", "content": "I want to kill myself"}]


def test_moderation_blocks_and_hides_from_context(api):
    cid = api.create()["conversationId"]
    api.append(cid, ("user", "Tell me a story about a dragon"), ("assistant", "Once upon a time..."))
    ack = api.append(cid, ("user", "send me a naked picture, shit"))
    assert ack["blocked"] is True
    assert ack["messages"][0]["safety"]["action"] == "blocked"
    assert ack["messages"][0]["safety"]["score"] < 0.5
    api.wait_count(cid, 3)
    c = wait_until(lambda: (c := api.conversation(cid))["flagged"] and c, 10, what="the conversation's flag")
    assert c["flagStatus"] == "unreviewed"
    assert c["lastMessagePreview"] == "[withheld by moderation]"
    stored = api.all_messages(cid)
    assert stored[2]["blocked"] is True and stored[2]["flagged"] is True
    ctx = api.ok("GET", f"/conversations/{cid}/context")
    assert ctx["messages"] == [{"role": "user", "content": "Tell me a story about a dragon"},
                               {"role": "assistant", "content": "Once upon a time..."}]


def _decode_cursor(cursor: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


def _tamper(cursor: str, **changes) -> str:
    """Re-encodes a cursor with some of its (opaque, but decodable) parts changed."""
    wire = _decode_cursor(cursor)
    wire.update(changes)
    return base64.urlsafe_b64encode(json.dumps(wire).encode()).rstrip(b"=").decode()


def test_pagination_of_120_messages(api):
    cid = api.create()["conversationId"]
    contents = [f"message number {i:03d}" for i in range(120)]
    for start in range(0, 120, 20):
        api.append(cid, *[("user" if i % 2 == 0 else "assistant", contents[i]) for i in range(start, start + 20)])
    api.wait_count(cid, 120)

    seen, cursor, pages = [], None, []
    while True:
        q = {"limit": 50} | ({"cursor": cursor} if cursor else {})
        page = api.messages(cid, **q)
        pages.append(len(page["messages"]))
        seen.extend(page["messages"])
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert pages == [50, 50, 20]
    assert [m["messageIndex"] for m in seen] == list(range(120))
    assert [m["content"] for m in seen] == contents
    assert len({m["messageId"] for m in seen}) == 120

    # descending pages, too
    desc = api.all_messages(cid, limit=50, order="desc")
    assert [m["messageIndex"] for m in desc] == list(range(119, -1, -1))

    # a cursor edited by the client, or issued for another conversation, is refused
    first = api.messages(cid, limit=50)
    good = first["nextCursor"]
    other_cid = api.create()["conversationId"]
    bad_cursors = [
        good[:-3] + ("AAA" if good[-3:] != "AAA" else "BBB"),
        "!!!" + good,
        good[: len(good) // 2],
        base64.urlsafe_b64encode(b"garbage").decode().rstrip("="),
    ]
    try:  # today's cursors are base64url JSON {"s": scope, "p": position}
        wire = _decode_cursor(good)
    except ValueError:
        wire = None
    if isinstance(wire, dict) and isinstance(wire.get("s"), str) and cid in wire["s"]:
        bad_cursors += [_tamper(good, s=wire["s"].replace(cid, other_cid)), _tamper(good, p="not-a-number")]
    for bad in bad_cursors:
        assert_error(api.get(f"/conversations/{cid}/messages?limit=50&cursor={urllib.parse.quote(bad)}"),
                     400, "invalid_cursor")
    # a genuine cursor of this conversation does not open another one
    assert_error(api.get(f"/conversations/{other_cid}/messages?cursor={urllib.parse.quote(good)}"),
                 400, "invalid_cursor")


def _iso(dt) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_created_at_is_kept_and_accepted_at_is_the_servers(api):
    cid = api.create()["conversationId"]
    when = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=3)
    ack = api.append(cid, {"role": "user", "content": "an old sms", "createdAt": _iso(when)})
    m = api.wait_count(cid, 1) and api.messages(cid)["messages"][0]
    assert parse_ts(m["createdAt"]) == when
    assert m["acceptedAt"] == ack["acceptedAt"]
    assert parse_ts(m["acceptedAt"]) > when


def test_since_until_filter_on_created_at(api):
    """since is inclusive, until exclusive, both on createdAt; index order."""
    cid = api.create()["conversationId"]
    base = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=10)
    at = [base + timedelta(hours=h) for h in range(6)]
    api.append(cid, *[{"role": "user", "content": f"m{i}", "createdAt": _iso(t)} for i, t in enumerate(at)])
    api.wait_count(cid, 6)

    def contents(**q):
        return [m["content"] for m in api.messages(cid, **q)["messages"]]

    assert contents(since=_iso(at[2])) == ["m2", "m3", "m4", "m5"]
    assert contents(until=_iso(at[2])) == ["m0", "m1"]
    assert contents(since=_iso(at[1]), until=_iso(at[4])) == ["m1", "m2", "m3"]
    assert contents(since=_iso(at[1]), until=_iso(at[4]), order="desc") == ["m3", "m2", "m1"]
    assert contents(since=_iso(at[5] + timedelta(seconds=1))) == []
    # paging inside a window
    page = api.messages(cid, since=_iso(at[1]), limit=2)
    assert [m["content"] for m in page["messages"]] == ["m1", "m2"]
    rest = api.messages(cid, since=_iso(at[1]), limit=2, cursor=page["nextCursor"])
    assert [m["content"] for m in rest["messages"]] == ["m3", "m4"]


def test_since_until_with_backfilled_created_at(api):
    """A message whose client-given createdAt is older than the ones before it
    (an SMS delivered late, a backfill) is still found by a window that
    contains its createdAt."""
    cid = api.create()["conversationId"]
    base = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=10)
    h = lambda n: _iso(base + timedelta(hours=n))  # noqa: E731
    api.append(cid,
               {"role": "user", "content": "m0", "createdAt": h(1)},
               {"role": "user", "content": "m1", "createdAt": h(3)},
               {"role": "user", "content": "m2 (late)", "createdAt": h(0)},
               {"role": "user", "content": "m3", "createdAt": h(4)})
    api.wait_count(cid, 4)

    def contents(**q):
        return [m["content"] for m in api.messages(cid, **q)["messages"]]

    assert contents(since=h(2)) == ["m1", "m3"]
    assert contents(since=h(2), order="desc") == ["m3", "m1"]
    assert contents(until=h(2), order="desc") == ["m2 (late)", "m0"]
    assert contents(until=h(2)) == ["m0", "m2 (late)"]
    assert contents(since=h(0), until=h(2)) == ["m0", "m2 (late)"]


def test_context_max_age_and_max_messages(api):
    cid = api.create()["conversationId"]
    old = _iso(datetime.now(timezone.utc) - timedelta(days=2))
    api.append(cid, {"role": "user", "content": "two days ago", "createdAt": old},
               {"role": "assistant", "content": "old answer", "createdAt": old})
    api.append(cid, ("user", "now"), ("assistant", "answer now"), ("system", "note"), ("tool", "tool output"))
    api.wait_count(cid, 6)
    ctx = api.ok("GET", f"/conversations/{cid}/context?maxAge=24h")
    assert ctx["messages"] == [{"role": "user", "content": "now"}, {"role": "assistant", "content": "answer now"},
                               {"role": "system", "content": "note"}, {"role": "tool", "content": "tool output"}]
    ctx = api.ok("GET", f"/conversations/{cid}/context?maxAge=3d&maxMessages=5")
    assert [m["content"] for m in ctx["messages"]] == ["old answer", "now", "answer now", "note", "tool output"]
    ctx = api.ok("GET", f"/conversations/{cid}/context?maxMessages=200")
    assert len(ctx["messages"]) == 6


def test_early_title_while_active(api):
    """Once 6 messages are stored (the default --early-title-after) a title
    is generated without waiting for the end."""
    cid = api.create(type="story")["conversationId"]
    for q in ["Tell me a story about pirates", "Did the pirates find treasure?", "Was the treasure gold?"]:
        api.append(cid, ("user", q), ("assistant", "Arr!"))
    c = wait_until(lambda: (c := api.conversation(cid))["titleSource"] == "generated" and c,
                   what="an early title")
    assert c["status"] == "active"
    assert_generated_title(c)
    assert "pirate" in c["title"].lower() or "treasure" in c["title"].lower(), c["title"]


def test_title_leaves_out_participant_names(api):
    cid = api.create(userName="Mia", agentName="Teddy")["conversationId"]
    api.append(cid, ("user", "Teddy, Mia wants a story about dragons"), ("assistant", "Yes Mia!"))
    api.append(cid, ("user", "Mia loves dragons, Teddy. Dragons and castles, Teddy!"), ("assistant", "Ok"))
    api.end(cid)
    c = wait_until(lambda: (c := api.conversation(cid))["titleSource"] == "generated" and c, what="a title")
    assert_generated_title(c)
    words = {w.strip(":,.!").lower() for w in c["title"].split()}
    assert not words & {"mia", "teddy"}, c["title"]
    assert "dragons" in words or "dragon" in words, c["title"]


def test_previews_are_cut_at_120_characters(api):
    cid = api.create()["conversationId"]
    long = "".join(chr(ord("a") + i % 26) for i in range(300))
    api.append(cid, ("user", long), ("assistant", "short"))
    c = api.wait_count(cid, 2)
    assert c["firstMessagePreview"] == long[:120] + "…"
    assert c["lastMessagePreview"] == "short"


def test_concurrent_retries_with_one_idempotency_key(api):
    """Simultaneous retries of one request: each gets the first answer or
    409 request_in_progress, and the messages are stored once."""
    cid = api.create()["conversationId"]
    body = {"messages": [{"role": "user", "content": "only once please"}]}
    n = 8
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        barrier.wait()
        results[i] = api.post(f"/conversations/{cid}/messages", body, headers={"Idempotency-Key": "race-key"})

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    accepted = [r[2] for r in results if r[0] == 202]
    assert accepted, results
    assert all(a == accepted[0] for a in accepted), "every 202 must carry the first answer"
    for r in results:
        if r[0] != 202:
            assert_error(r, 409, "request_in_progress")
    # a retry afterwards gets the first answer
    status, _, again = api.post(f"/conversations/{cid}/messages", body, headers={"Idempotency-Key": "race-key"})
    assert (status, again) == (202, accepted[0])
    msgs = api.flush(cid)
    assert [m["content"] for m in msgs[:-1]] == ["only once please"]


def test_stats_path_accepts_phone_spellings(api):
    user = "+1 (206) 555-0100"
    cid = api.create(user, "+14155552671", channel="sms")["conversationId"]
    api.append(cid, ("user", "hi"))
    api.end(cid)
    api.wait_status(cid, "ended")
    s1 = wait_until(lambda: (s := api.stats("+12065550100"))["conversations"] == 1 and s, what="stats")
    assert s1["userId"] == "+12065550100" and s1["messages"] == 1
    assert api.ok("GET", "/users/+12065550100/stats") == s1  # a literal '+' in the path
    assert api.stats("+1 206 555 0100") == s1


@pytest.mark.parametrize("user", ["Zoë & co?", "a+b", "x,y=1", "100%", "kid", "kid-2"])
def test_unusual_user_ids_list_page_and_stats(api, user):
    """User ids travel in the query string and in the path: any allowed
    spelling lists, pages and reports stats for exactly that user."""
    agent = unique("agent")  # per-run agent; the user id itself is shared by reruns of this test
    q = urllib.parse.quote(user, safe="")
    before = api.ok("GET", f"/conversations?userId={q}&limit=200")["conversations"]
    stats_before = api.ok("GET", f"/users/{q}/stats")
    ids = []
    for _ in range(3):
        time.sleep(0.003)
        ids.append(api.create(user, agent)["conversationId"])
    page1 = api.ok("GET", f"/conversations?userId={q}&limit=2")
    assert [c["conversationId"] for c in page1["conversations"]] == ids[::-1][:2]
    assert all(c["userId"] == user for c in page1["conversations"])
    page2 = api.ok("GET", f"/conversations?userId={q}&limit=200&cursor={urllib.parse.quote(page1['nextCursor'])}")
    assert [c["conversationId"] for c in page2["conversations"]] == [ids[0]] + [c["conversationId"] for c in before]
    api.append(ids[0], ("user", "hello"))
    api.end(ids[0])
    api.wait_status(ids[0], "ended")
    stats = wait_until(lambda: (s := api.ok("GET", f"/users/{q}/stats"))["conversations"]
                       == stats_before["conversations"] + 1 and s, what="stats")
    assert stats["userId"] == user
    assert stats["messages"] == stats_before["messages"] + 1


def test_zz_no_dead_letters_on_the_shared_server(api):
    """Runs last on the shared server: no write or title job was given up on."""
    api.wait_queues_idle()
    h = api.health()
    assert h["status"] == "healthy"
    comps = {c["name"]: c for c in h["components"]}
    assert comps["writesQueue"]["deadLetters"] == 0
    assert comps["titlesQueue"]["deadLetters"] == 0
    assert comps["eventsQueue"]["deadLetters"] == 0
