"""A browser app on another origin calls the local API (issue 26, the first
hour): its preflight is answered, and the answers say which origin may read
them; origins not allowed get a 403 preflight and no CORS headers."""

from __future__ import annotations


def preflight(client, path, origin, method="POST"):
    return client.call("OPTIONS", path, token=None, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type"})


def test_a_page_on_this_machine_may_call_the_api(api):
    status, headers, _ = preflight(api, "/conversations", "http://localhost:5173")
    assert status == 204
    assert headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "POST" in headers["access-control-allow-methods"]
    assert "authorization" in headers["access-control-allow-headers"]
    assert "idempotency-key" in headers["access-control-allow-headers"]
    # The answer itself names the origin and exposes read-your-writes.
    created = api.call("POST", "/conversations", {"userId": "cors-kid", "agentId": "toy"},
                       headers={"Origin": "http://127.0.0.1:8080"})
    assert created[0] == 201
    assert created[1]["access-control-allow-origin"] == "http://127.0.0.1:8080"
    assert "x-convo-after" in created[1]["access-control-expose-headers"]
    # A preflight for a path no route serves is a 404, as the route is.
    assert preflight(api, "/nowhere", "http://localhost:5173")[0] == 404


def test_other_origins_only_when_allowed(api, make_server):
    status, headers, body = preflight(api, "/conversations", "https://app.example")
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert "access-control-allow-origin" not in headers
    _, headers, _ = api.call("GET", "/conversations", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in headers
    server = make_server("--cors-origin", "https://app.example")
    client = server.client("alice")
    status, headers, _ = preflight(client, "/conversations/abc/messages", "https://app.example")
    assert status == 204 and headers["access-control-allow-origin"] == "https://app.example"
    assert preflight(client, "/conversations", "https://other.example")[0] == 403
