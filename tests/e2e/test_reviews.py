"""The review workflow over HTTP: flagged conversations listed, reviewed, and gone from the unreviewed list."""

from __future__ import annotations

from conftest import assert_error, unique


def test_review_workflow(api, bob):
    user = unique("rev")
    flagged = api.create(user, "toy-1")["conversationId"]
    clean = api.create(user, "toy-2")["conversationId"]
    api.append(flagged, ("user", "hello"), ("user", "I want to kill myself"), ("assistant", "I'm here for you."))
    api.append(clean, ("user", "hello"))
    api.flush(flagged)
    api.flush(clean)

    listed = api.ok("GET", "/reviews?status=unreviewed&limit=200")["conversations"]
    assert flagged in [c["conversationId"] for c in listed]
    assert clean not in [c["conversationId"] for c in listed]
    only = api.ok("GET", f"/conversations/{flagged}/messages?flagged=true")["messages"]
    assert [(m["messageIndex"], m["safety"]["severity"]) for m in only] == [(1, "critical")]

    # Another owner neither sees nor reviews it.
    assert flagged not in [c["conversationId"] for c in bob.ok("GET", "/reviews")["conversations"]]
    assert_error(bob.post(f"/conversations/{flagged}/review", {"flagStatus": "reviewed"}), 404, "conversation_not_found")
    assert_error(api.post(f"/conversations/{clean}/review", {"flagStatus": "reviewed"}), 409, "conversation_not_flagged")
    assert_error(api.post(f"/conversations/{flagged}/review", {"flagStatus": "bogus"}), 400, "validation_failed")

    done = api.ok("POST", f"/conversations/{flagged}/review", {"flagStatus": "escalated", "note": "called parent"})
    assert (done["flagStatus"], done["reviewedBy"], done["reviewNote"]) == ("escalated", "alice", "called parent")
    listed = api.ok("GET", "/reviews?limit=200")["conversations"]
    assert flagged not in [c["conversationId"] for c in listed]
    escalated = api.ok("GET", "/reviews?status=escalated&limit=200")["conversations"]
    assert flagged in [c["conversationId"] for c in escalated]
