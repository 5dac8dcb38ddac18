"""Read-your-writes over HTTP: an agent that appends and at once reads its
history with `after=<commandId>` sees every earlier turn, on both stores."""

from __future__ import annotations

from conftest import assert_error, unique


def test_back_to_back_turns_see_every_earlier_turn(api):
    cid = api.create(unique("ryw"), "toy-1")["conversationId"]
    said = []
    for turn in range(8):
        accepted = api.append(cid, ("user", f"question {turn}"), ("assistant", f"answer {turn}"))
        command = accepted["commandId"]
        status, headers, ctx = api.get(f"/conversations/{cid}/context?maxMessages=50&after={command}")
        assert status == 200, ctx
        assert headers.get("x-convo-after") == "applied", (turn, headers)
        assert ctx["after"] == "applied"
        said += [f"question {turn}", f"answer {turn}"]
        assert [m["content"] for m in ctx["messages"]] == said, f"turn {turn}"
        status, headers, page = api.get(f"/conversations/{cid}/messages?order=desc&limit=2&after={command}")
        assert (status, headers.get("x-convo-after")) == (200, "applied")
        assert [m["content"] for m in page["messages"]] == [f"answer {turn}", f"question {turn}"]
        status, headers, conv = api.get(f"/conversations/{cid}?after={command}")
        assert (status, headers.get("x-convo-after"), conv["messageCount"]) == (200, "applied", 2 * turn + 2)
        assert conv["lastMessagePreview"] == f"answer {turn}"


def test_after_without_a_command_is_a_plain_read_and_a_bad_one_is_refused(api):
    cid = api.create(unique("ryw"), "toy-1")["conversationId"]
    status, headers, _ = api.get(f"/conversations/{cid}/context")
    assert status == 200 and "x-convo-after" not in headers
    assert_error(api.get(f"/conversations/{cid}/context?after=not%20an%20id"), 400, "validation_failed", "after")
    assert_error(api.get(f"/conversations/{cid}?after=%00"), 400, "validation_failed", "after")
