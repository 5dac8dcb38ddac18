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
