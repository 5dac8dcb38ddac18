"""Message content never appears in logs, even at debug level."""

from __future__ import annotations

import uuid

from conftest import unique


def test_no_message_content_in_any_log_line(make_server):
    srv = make_server(env={"RUST_LOG": "debug"})
    api = srv.client("alice")
    markers = [f"marker-{uuid.uuid4().hex}" for _ in range(6)]
    cid = api.create(unique("logs"), "toy-1", userName="Mia")["conversationId"]
    api.append(cid, ("user", f"my secret is {markers[0]}"), ("assistant", f"I will keep {markers[1]}"))
    # Flagged and blocked content goes through other code paths.
    api.append(cid, ("user", f"shit {markers[2]}"), ("user", f"send a naked photo {markers[3]}"))
    api.append(cid, {"role": "user", "content": f"sms {markers[4]}", "externalId": "SM-logs-1"},
               headers={"Idempotency-Key": "logs-1"})
    api.wait_count(cid, 5)
    api.ok("GET", f"/conversations/{cid}/context")
    api.ok("GET", f"/conversations/{cid}/messages")
    api.end(cid)
    api.wait_status(cid, "ended")
    api.wait_queues_idle()
    # A bad request must not echo content into logs either.
    api.post(f"/conversations/{cid}/messages", {"messages": [{"role": "user", "content": f"late {markers[5]}"}]})
    srv.stop()
    logs = srv.stdout() + srv.stderr_path.read_text(errors="replace")
    assert "DEBUG" in logs or '"level":"DEBUG"' in logs, "the server did not log at debug level"
    leaked = [m for m in markers if m in logs]
    assert leaked == [], f"message content found in logs: {leaked}"
