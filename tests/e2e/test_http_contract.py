"""What fuzzing the documented routes found (issue 12), each kept fixed: a
query string that crashed the server, wrong error codes and fields, and the
HTTP semantics of 405 and HEAD."""

from __future__ import annotations

from conftest import assert_error, unique


def test_a_duration_ending_in_any_character_is_a_400_not_a_crash(api):
    cid = api.create(unique("fz"), "toy-1")["conversationId"]
    for raw in ["1%C3%A9", "%C3%A9", "24%E6%97%A5", "1h%CC%81", "%F0%9F%98%80"]:
        assert_error(api.get(f"/conversations/{cid}/context?maxAge={raw}"), 400, "validation_failed", "maxAge")
    # The server is still up and answers.
    assert api.ok("GET", f"/conversations/{cid}/context?maxAge=24h")["messages"] == []


def test_a_wrong_type_is_a_validation_error_naming_the_field(api):
    cid = api.create(unique("fz"), "toy-1")["conversationId"]
    for bad in [None, 5, [], {}]:
        err = assert_error(api.post(f"/conversations/{cid}/review", {"flagStatus": bad}), 400,
                           "validation_failed", "flagStatus")
        assert "FlagStatus" not in err["message"], err
    err = assert_error(api.post(f"/conversations/{cid}/messages", [1, 2]), 400, "validation_failed", "body")
    assert "struct" not in err["message"] and "AppendRequest" not in err["message"], err


def test_405_names_the_allowed_methods_and_head_answers_a_get(api):
    cid = api.create(unique("fz"), "toy-1")["conversationId"]
    status, headers, _ = api.call("PUT", f"/conversations/{cid}")
    assert status == 405
    assert set(headers["allow"].split(", ")) == {"GET", "HEAD", "PATCH", "DELETE"}, headers
    status, headers, _ = api.call("DELETE", "/health", token=None)
    assert (status, headers.get("allow")) == (405, "GET, HEAD")
    status, headers, _ = api.call("POST", "/conversations/x/messages/extra")
    assert (status, headers.get("allow")) == (405, "DELETE")
    status, headers, _ = api.call("POST", "/conversations/x/messages/extra/more")
    assert status == 404 and "allow" not in headers
    for path in ["/health", f"/conversations/{cid}", f"/conversations/{cid}/context"]:
        status, headers, body = api.call("HEAD", path)
        assert (status, body) == (200, None), (path, status, body)
        assert headers["content-type"].startswith("application/json")


def test_an_owner_id_no_key_can_hold_is_refused(server, api):
    from conftest import make_jwt

    for sub in ["x" * 201, "a\u001fb"]:
        token = make_jwt(server.secret(), sub=sub)
        assert_error(api.with_token(token).get("/conversations?userId=u"), 401, "unauthorized")
    # A `#` in an owner id is fine: the keys decode unambiguously.
    owner = api.with_token(make_jwt(server.secret(), sub="tenant#7"))
    cid = owner.create(unique("fz"), "toy-1")["conversationId"]
    assert owner.conversation(cid)["ownerId"] == "tenant#7"
    assert_error(api.get(f"/conversations/{cid}"), 404, "conversation_not_found")


def test_the_openapi_document_is_served_without_a_token_and_is_the_committed_one(api):
    import json
    import pathlib

    status, headers, body = api.call("GET", "/openapi.json", token=None)
    assert status == 200 and headers["content-type"].startswith("application/json")
    committed = json.loads((pathlib.Path(__file__).parents[2] / "openapi.json").read_text())
    assert body == committed
    assert body["openapi"] == "3.1.0"
    assert "/conversations/{id}/messages" in body["paths"]


def test_the_owner_lists_conversations_across_users_and_by_agent(server, api):
    from conftest import make_jwt

    owner = api.with_token(make_jwt(server.secret(), sub=unique("operator")))
    a = owner.create(unique("u"), "toy-a")["conversationId"]
    b = owner.create(unique("u"), "toy-b")["conversationId"]
    c = owner.create(unique("u"), "toy-a")["conversationId"]
    owner.end(b)
    owner.wait_status(b, "ended")
    listed = [x["conversationId"] for x in owner.ok("GET", "/conversations")["conversations"]]
    assert listed == [c, b, a]
    by_agent = [x["conversationId"] for x in owner.ok("GET", "/conversations?agentId=toy-a")["conversations"]]
    assert by_agent == [c, a]
    ended = [x["conversationId"] for x in owner.ok("GET", "/conversations?status=ended")["conversations"]]
    assert ended == [b]
    page = owner.ok("GET", "/conversations?limit=2")
    assert [x["conversationId"] for x in page["conversations"]] == [c, b]
    rest = owner.ok("GET", f"/conversations?limit=2&cursor={page['nextCursor']}")
    assert [x["conversationId"] for x in rest["conversations"]] == [a] and rest["nextCursor"] is None
    assert_error(owner.get(f"/conversations?agentId=toy-a&cursor={page['nextCursor']}"), 400, "invalid_cursor",
                 "cursor")
    assert_error(owner.get("/conversations?status=open"), 400, "validation_failed", "status")
    # Another owner's list holds none of them.
    theirs = api.ok("GET", "/conversations?limit=200")["conversations"]
    assert not {x["conversationId"] for x in theirs} & {a, b, c}


def test_an_empty_patch_changes_nothing(api):
    cid = api.create(unique("fz"), "toy-1", title="Kept")["conversationId"]
    before = api.conversation(cid)
    assert api.patch(f"/conversations/{cid}", {})[2] == before
    assert api.conversation(cid) == before


def test_a_delete_of_what_cannot_be_an_id_is_a_404(api):
    assert_error(api.call("DELETE", "/conversations/%C2%84"), 404, "conversation_not_found")
    missing = "01JD0000000000000000000000"
    assert api.ok("DELETE", f"/conversations/{missing}") == {"conversationId": missing, "deleted": True}
