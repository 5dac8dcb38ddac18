"""Bad requests through HTTP: each gets the documented status, error code and
error body, and none of them changes anything (checked after the table)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from conftest import assert_error, make_jwt, unique

T = "{t}"  # the target conversation: active, with messages and metadata
E = "{e}"  # an ended conversation
MISSING = "01ARZ3NDEKTSV4RRFFQ69G5FAV"  # a well-formed ULID nobody created
IDEMPOTENCY_KEY = "bad-input-first-append"
CREATE_USER = "bad-input-user"  # no conversation may ever be created for this user


def msg(content="hello", role="user", **extra):
    return {"role": role, "content": content, **extra}


def future(days=1):
    return (datetime.now(timezone.utc) + timedelta(days=days)).isoformat().replace("+00:00", "Z")


BIG_METADATA = {"blob": "x" * 8200}


@dataclass
class Case:
    id: str
    method: str
    path: str
    body: object = None
    status: int = 400
    code: str = "validation_failed"
    field: str | None = None
    auth: str = "alice"  # alice | bob | none | expired | forged | wrong_aud | wrong_iss | alg_none | basic | garbage
    headers: dict = dataclasses.field(default_factory=dict)


APPEND = f"/conversations/{T}/messages"
CREATE = "/conversations"
PATCH = f"/conversations/{T}"


def create_body(**over):
    body = {"userId": CREATE_USER, "agentId": "agent-x"}
    body.update(over)
    return {k: v for k, v in body.items() if v is not ...}


CASES = [
    # --- malformed bodies ---------------------------------------------------
    Case("append-malformed-json", "POST", APPEND, b'{"messages": [', code="malformed_json"),
    Case("append-not-json", "POST", APPEND, b"hello there", code="malformed_json"),
    Case("append-empty-body", "POST", APPEND, b"", code="malformed_json"),
    Case("create-malformed-json", "POST", CREATE, b'{"userId": "a", ', code="malformed_json"),
    Case("patch-malformed-json", "PATCH", PATCH, b"{title: 1}", code="malformed_json"),
    Case("end-malformed-json", "POST", f"/conversations/{T}/end", b"{", code="malformed_json"),
    # --- wrong types, missing fields, unknown fields -----------------------
    Case("append-messages-not-array", "POST", APPEND, {"messages": "hello"}, field="messages"),
    Case("append-content-number", "POST", APPEND, {"messages": [msg(42)]}, field="messages[0].content"),
    Case("append-missing-messages", "POST", APPEND, {}, field="messages"),
    Case("append-missing-content", "POST", APPEND, {"messages": [{"role": "user"}]}, field="messages[0].content"),
    Case("append-missing-role", "POST", APPEND, {"messages": [{"content": "hi"}]}, field="messages[0].role"),
    Case("append-unknown-role", "POST", APPEND, {"messages": [msg(role="wizard")]}, field="messages[0].role"),
    Case("append-bad-direction", "POST", APPEND, {"messages": [msg(direction="sideways")]}, field="messages[0].direction"),
    Case("append-bad-created-at", "POST", APPEND, {"messages": [msg(createdAt="yesterday")]}, field="messages[0].createdAt"),
    Case("append-unknown-field", "POST", APPEND, {"messages": [msg()], "priority": 1}, field="priority"),
    Case("append-unknown-message-field", "POST", APPEND, {"messages": [msg(mood="happy")]}, field="messages[0].mood"),
    Case("create-missing-agent", "POST", CREATE, create_body(agentId=...), field="agentId"),
    Case("create-user-id-number", "POST", CREATE, create_body(userId=7), field="userId"),
    Case("create-unknown-field", "POST", CREATE, create_body(color="red"), field="color"),
    Case("create-reuse-active-string", "POST", CREATE, create_body(reuseActive="yes"), field="reuseActive"),
    Case("create-metadata-not-object", "POST", CREATE, create_body(metadata=[1, 2]), field="metadata"),
    Case("patch-unknown-field", "PATCH", PATCH, {"title": "x", "pinned": True}, field="pinned"),
    Case("patch-metadata-not-object", "PATCH", PATCH, {"metadata": "x"}, field="metadata"),
    Case("end-unknown-field", "POST", f"/conversations/{T}/end", {"why": "bored"}, field="why"),
    # --- values out of bounds ------------------------------------------------
    Case("append-empty-content", "POST", APPEND, {"messages": [msg("")]}, field="messages[0].content"),
    Case("append-blank-content", "POST", APPEND, {"messages": [msg("ok"), msg("  \n ")]},
         field="messages[1].content"),
    Case("append-no-messages", "POST", APPEND, {"messages": []}, field="messages"),
    Case("append-21-messages", "POST", APPEND, {"messages": [msg(f"m{i}") for i in range(21)]},
         field="messages"),
    Case("append-oversize-content", "POST", APPEND, {"messages": [msg("a" * 16385)]}, status=413,
         code="payload_too_large", field="messages[0].content"),
    Case("append-oversize-content-multibyte", "POST", APPEND, {"messages": [msg("é" * 8193)]}, status=413,
         code="payload_too_large", field="messages[0].content"),
    Case("append-oversize-body", "POST", APPEND, {"messages": [msg("b" * 600_000)]}, status=413,
         code="payload_too_large", field="body"),
    Case("append-encoded-too-large", "POST", APPEND, {"messages": [msg("c" * 16000) for _ in range(20)]},
         status=413, code="payload_too_large", field="messages"),
    Case("append-oversize-metadata", "POST", APPEND, {"messages": [msg(metadata=BIG_METADATA)]}, status=413,
         code="payload_too_large", field="messages[0].metadata"),
    Case("append-created-at-future", "POST", APPEND, {"messages": [msg(createdAt=future())]},
         field="messages[0].createdAt"),
    Case("append-http-audio-url", "POST", APPEND, {"messages": [msg(audioUrl="http://x.test/a.mp3")]},
         field="messages[0].audioUrl"),
    Case("append-empty-external-id", "POST", APPEND, {"messages": [msg(externalId="")]},
         field="messages[0].externalId"),
    Case("append-non-ascii-idempotency-key", "POST", APPEND, {"messages": [msg()]},
         headers={"Idempotency-Key": "kl\u00e9".encode("utf-8")}, field="Idempotency-Key"),
    Case("append-long-idempotency-key", "POST", APPEND, {"messages": [msg()]},
         headers={"Idempotency-Key": "k" * 201}, field="Idempotency-Key"),
    Case("create-long-user-id", "POST", CREATE, create_body(userId="u" * 201), field="userId"),
    Case("create-empty-agent-id", "POST", CREATE, create_body(agentId="  "), field="agentId"),
    Case("create-user-id-with-slash", "POST", CREATE, create_body(userId="a/b"), field="userId"),
    Case("create-long-agent-name", "POST", CREATE, create_body(agentName="n" * 201), field="agentName"),
    Case("create-blank-title", "POST", CREATE, create_body(title=" "), field="title"),
    Case("create-oversize-metadata", "POST", CREATE, create_body(metadata=BIG_METADATA), status=413,
         code="payload_too_large", field="metadata"),
    Case("create-invalid-phone", "POST", CREATE, create_body(userId="hello", agentId="+14155552671",
                                                             channel="sms"),
         code="invalid_phone_number", field="userId"),
    Case("create-invalid-agent-phone", "POST", CREATE, create_body(userId="+14155552671", agentId="+1 555",
                                                                   channel="sms"),
         code="invalid_phone_number", field="agentId"),
    Case("patch-bad-status", "PATCH", PATCH, {"status": "deleted"}, field="status"),
    Case("patch-blank-title", "PATCH", PATCH, {"title": ""}, field="title"),
    Case("patch-long-title", "PATCH", PATCH, {"title": "t" * 201}, field="title"),
    Case("patch-oversize-metadata", "PATCH", PATCH, {"metadata": BIG_METADATA}, status=413,
         code="payload_too_large", field="metadata"),
    # each part is under 8 KiB, but merged into the stored metadata it is over
    Case("patch-metadata-merge-too-large", "PATCH", PATCH, {"metadata": {"pad": "x" * 8180}}, status=413,
         code="payload_too_large", field="metadata"),
    # --- query parameters ----------------------------------------------------
    Case("messages-limit-0", "GET", f"/conversations/{T}/messages?limit=0", field="limit"),
    Case("messages-limit-negative", "GET", f"/conversations/{T}/messages?limit=-1", field="limit"),
    Case("messages-limit-1000", "GET", f"/conversations/{T}/messages?limit=1000", field="limit"),
    Case("messages-limit-201", "GET", f"/conversations/{T}/messages?limit=201", field="limit"),
    Case("messages-limit-abc", "GET", f"/conversations/{T}/messages?limit=abc", field="limit"),
    Case("messages-limit-fraction", "GET", f"/conversations/{T}/messages?limit=1.5", field="limit"),
    Case("messages-bad-cursor", "GET", f"/conversations/{T}/messages?cursor=not-a-cursor",
         code="invalid_cursor", field="cursor"),
    Case("messages-bad-order", "GET", f"/conversations/{T}/messages?order=sideways", field="order"),
    Case("messages-bad-since", "GET", f"/conversations/{T}/messages?since=yesterday", field="since"),
    Case("messages-bad-until", "GET", f"/conversations/{T}/messages?until=2024-13-45", field="until"),
    Case("context-bad-max-age", "GET", f"/conversations/{T}/context?maxAge=yesterday", field="maxAge"),
    Case("context-zero-max-age", "GET", f"/conversations/{T}/context?maxAge=0h", field="maxAge"),
    Case("context-negative-max-age", "GET", f"/conversations/{T}/context?maxAge=-1h", field="maxAge"),
    Case("context-unit-max-age", "GET", f"/conversations/{T}/context?maxAge=3w", field="maxAge"),
    Case("context-max-messages-0", "GET", f"/conversations/{T}/context?maxMessages=0", field="maxMessages"),
    Case("list-bad-status", "GET", "/conversations?status=open", field="status"),
    Case("list-bad-flagged", "GET", "/conversations?flagged=yes", field="flagged"),
    Case("list-agent-with-hash", "GET", "/conversations?agentId=a%23b", field="agentId"),
    Case("list-limit-0", "GET", f"/conversations?userId={CREATE_USER}&limit=0", field="limit"),
    Case("list-bad-cursor", "GET", f"/conversations?userId={CREATE_USER}&cursor=abc", code="invalid_cursor",
         field="cursor"),
    Case("stats-bad-user-id", "GET", "/users/a%23b/stats", field="userId"),
    # --- unknown or malformed conversation ids ------------------------------
    Case("get-malformed-id", "GET", "/conversations/not-a-ulid", status=404, code="conversation_not_found"),
    Case("get-missing-id", "GET", f"/conversations/{MISSING}", status=404, code="conversation_not_found"),
    Case("append-malformed-id", "POST", "/conversations/not-a-ulid/messages", {"messages": [msg()]},
         status=404, code="conversation_not_found"),
    Case("append-missing-id", "POST", f"/conversations/{MISSING}/messages", {"messages": [msg()]},
         status=404, code="conversation_not_found"),
    Case("end-missing-id", "POST", f"/conversations/{MISSING}/end", status=404, code="conversation_not_found"),
    Case("patch-malformed-id", "PATCH", "/conversations/x%20y", {"title": "x"}, status=404,
         code="conversation_not_found"),
    Case("messages-missing-id", "GET", f"/conversations/{MISSING}/messages", status=404,
         code="conversation_not_found"),
    Case("context-lowercase-id-with-dash", "GET", "/conversations/01arz3ndektsv4rrffq69g5fa-/context",
         status=404, code="conversation_not_found"),
    # --- authentication ------------------------------------------------------
    Case("missing-token-get", "GET", f"/conversations/{T}", status=401, code="unauthorized", auth="none"),
    Case("missing-token-append", "POST", APPEND, {"messages": [msg()]}, status=401, code="unauthorized",
         auth="none"),
    Case("missing-token-stats", "GET", "/users/u1/stats", status=401, code="unauthorized", auth="none"),
    Case("expired-token", "POST", APPEND, {"messages": [msg()]}, status=401, code="unauthorized",
         auth="expired"),
    Case("wrong-signature", "POST", APPEND, {"messages": [msg()]}, status=401, code="unauthorized",
         auth="forged"),
    Case("wrong-audience", "GET", f"/conversations/{T}", status=401, code="unauthorized", auth="wrong_aud"),
    Case("wrong-issuer", "GET", f"/conversations/{T}", status=401, code="unauthorized", auth="wrong_iss"),
    Case("alg-none-token", "PATCH", PATCH, {"title": "pwned"}, status=401, code="unauthorized",
         auth="alg_none"),
    Case("basic-auth-scheme", "GET", f"/conversations/{T}", status=401, code="unauthorized", auth="basic"),
    Case("garbage-token", "POST", f"/conversations/{T}/end", status=401, code="unauthorized", auth="garbage"),
    # --- another owner's conversation ---------------------------------------
    Case("foreign-owner-get", "GET", f"/conversations/{T}", status=404, code="conversation_not_found",
         auth="bob"),
    Case("foreign-owner-messages", "GET", f"/conversations/{T}/messages", status=404,
         code="conversation_not_found", auth="bob"),
    Case("foreign-owner-context", "GET", f"/conversations/{T}/context", status=404,
         code="conversation_not_found", auth="bob"),
    Case("foreign-owner-append", "POST", APPEND, {"messages": [msg("from bob")]}, status=404,
         code="conversation_not_found", auth="bob"),
    Case("foreign-owner-patch", "PATCH", PATCH, {"title": "bob's now", "metadata": {"color": None}},
         status=404, code="conversation_not_found", auth="bob"),
    Case("foreign-owner-end", "POST", f"/conversations/{T}/end", status=404, code="conversation_not_found",
         auth="bob"),
    # --- state conflicts ------------------------------------------------------
    Case("append-after-end", "POST", f"/conversations/{E}/messages", {"messages": [msg("too late")]},
         status=409, code="conversation_ended"),
    Case("end-after-end", "POST", f"/conversations/{E}/end", status=409, code="conversation_ended"),
    Case("archive-active", "PATCH", PATCH, {"status": "archived"}, status=409, code="conversation_not_ended"),
    Case("archive-active-with-title", "PATCH", PATCH, {"title": "new", "status": "archived"}, status=409,
         code="conversation_not_ended"),
    Case("idempotency-key-reused", "POST", APPEND, {"messages": [msg("a different body")]}, status=409,
         code="idempotency_key_reused", headers={"Idempotency-Key": IDEMPOTENCY_KEY}),
    # --- routing ---------------------------------------------------------------
    Case("unknown-route", "GET", "/nope", status=404, code="route_not_found"),
    Case("unknown-route-without-token", "GET", "/v2/conversations", status=404, code="route_not_found",
         auth="none"),
    Case("unknown-subresource", "GET", f"/conversations/{T}/participants", status=404, code="route_not_found"),
    Case("put-conversation", "PUT", f"/conversations/{T}", status=405, code="method_not_allowed"),
    Case("delete-conversation-expired-token", "DELETE", f"/conversations/{T}", status=401, code="unauthorized",
         auth="expired"),
    Case("review-unknown-status", "POST", f"/conversations/{T}/review", {"flagStatus": "ignored"}),
    Case("review-unreviewed", "POST", f"/conversations/{T}/review", {"flagStatus": "unreviewed"},
         field="flagStatus"),
    Case("reviews-bad-status", "GET", "/reviews?status=pending", field="status"),
    Case("create-retention-zero", "POST", CREATE, {"userId": "u", "agentId": "a", "retentionDays": 0},
         field="retentionDays"),
    Case("put-conversations", "PUT", "/conversations", {"userId": "u", "agentId": "a"}, status=405,
         code="method_not_allowed"),
    Case("post-health", "POST", "/health", status=405, code="method_not_allowed", auth="none"),
]

assert len(CASES) >= 24
assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def world(server, api, bob):
    """The conversations the table aims at, and a snapshot of them."""
    t = api.create(unique("target-user"), "agent-t", metadata={"color": "blue", "n": 1})["conversationId"]
    status, _, first = api.post(f"/conversations/{t}/messages",
                                {"messages": [msg("Tell me about whales"), msg("They are big.", "assistant")]},
                                headers={"Idempotency-Key": IDEMPOTENCY_KEY})
    assert status == 202, first
    api.wait_count(t, 2)
    e = api.create(unique("ended-user"), "agent-e")["conversationId"]
    api.append(e, ("user", "goodbye soon"))
    api.end(e)
    api.wait_status(e, "ended")
    api.wait_queues_idle()

    secret = server.secret()
    tokens = {
        "alice": api.token,
        "bob": bob.token,
        "none": None,
        "expired": make_jwt(secret, "alice", exp_offset=-3600),
        "forged": make_jwt("not-the-secret", "alice"),
        "wrong_aud": make_jwt(secret, "alice", aud="someone-else"),
        "wrong_iss": make_jwt(secret, "alice", iss="evil"),
        "alg_none": make_jwt(secret, "alice", alg="none"),
    }
    snapshot = {
        "t": api.conversation(t),
        "t_messages": api.all_messages(t),
        "e": api.conversation(e),
        "e_messages": api.all_messages(e),
    }
    return {"t": t, "e": e, "tokens": tokens, "snapshot": snapshot, "ran": []}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request(case: Case, api, world):
    path = case.path.replace(T, world["t"]).replace(E, world["e"])
    headers = dict(case.headers)
    token = None
    if case.auth == "basic":
        headers["Authorization"] = "Basic YWxpY2U6c2VjcmV0"
    elif case.auth == "garbage":
        headers["Authorization"] = "Bearer not.a.jwt"
    else:
        token = world["tokens"][case.auth]
    resp = api.call(case.method, path, case.body, token=token, headers=headers)
    world["ran"].append(case.id)
    assert_error(resp, case.status, case.code, field=case.field)


def test_the_table_changed_nothing(api, bob, world):
    """Runs after the table: every conversation is exactly as before it."""
    api.wait_queues_idle()
    snap = world["snapshot"]
    assert api.conversation(world["t"]) == snap["t"]
    assert api.conversation(world["e"]) == snap["e"]
    assert api.all_messages(world["e"]) == snap["e_messages"]
    # nothing was queued behind the table's requests either: a sentinel
    # appended now lands right after the messages stored before the table
    after = api.flush(world["t"])
    assert after[:-1] == snap["t_messages"]
    assert after[-1]["messageIndex"] == len(snap["t_messages"])
    c = api.conversation(world["t"])
    assert c["messageCount"] == snap["t"]["messageCount"] + 1
    assert c["metadata"] == {"color": "blue", "n": 1}
    assert (c["title"], c["titleSource"], c["status"]) == (snap["t"]["title"], snap["t"]["titleSource"], "active")
    # no create in the table made a conversation
    for client in (api, bob):
        assert client.ok("GET", f"/conversations?userId={CREATE_USER}")["conversations"] == []
    assert bob.ok("GET", "/conversations?userId=" + snap["t"]["userId"])["conversations"] == []
