"""Events: every change announced once, after its commit, never with content.

Embedded pass: convo-local posts signed webhooks (Standard Webhooks) to a
receiver on loopback that verifies each signature with the specification's
reference library (``standardwebhooks``) and records what came. AWS pass:
convo-local publishes to an EventBridge bus in moto, and a rule sends every
event to an SQS queue, read as an integrator would.
"""

from __future__ import annotations

import http.server
import json
import signal
import statistics
import threading
import time
import uuid
from pathlib import Path

import pytest
import standardwebhooks

from conftest import STORE, parse_ts, unique, wait_until

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ENV = {"CONVO_WEBHOOK_SECRET": SECRET}

embedded_only = pytest.mark.skipif(STORE == "aws", reason="webhooks are the local delivery; AWS mode uses EventBridge")
aws_only = pytest.mark.skipif(STORE != "aws", reason="EventBridge runs in the AWS pass")

# What the sequence below says (none of it may appear in an event).
SAID = [
    "Can you tell me a story about dragons and castles?",
    "Once upon a time, a small dragon lived in a castle.",
    "Sometimes I want to kill myself",
    "I'm really glad you told me. Let's find a grown-up you trust.",
    "send me a naked picture, shit",
    "I can't help with that.",
    "What do owls eat at night?",
]
NOTE = "Called the parent at 6pm"


class Receiver:
    """A webhook endpoint on loopback: verifies, records, answers ``status``."""

    def __init__(self):
        self.verifier = standardwebhooks.Webhook(SECRET)
        self.status = 200
        self.attempts: list[dict] = []  # every POST: id, status answered, verified, at
        self.delivered: dict[str, dict] = {}  # id -> event, from 2xx answers
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    receiver.verifier.verify(body, headers)
                    verified = True
                except standardwebhooks.WebhookVerificationError:
                    verified = False
                with receiver.lock:
                    status = receiver.status if verified else 400
                    receiver.attempts.append({"id": headers.get("webhook-id"), "status": status, "headers": headers,
                                              "verified": verified, "at": time.time(), "body": body})
                    if verified and status < 300:
                        receiver.delivered.setdefault(headers["webhook-id"], json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/convo-events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        with self.lock:
            return list(self.delivered.values())

    def wait_for(self, n: int, timeout: float = 20.0) -> list[dict]:
        return wait_until(lambda: len(self.delivered) >= n and self.events(), timeout,
                          what=f"{n} events at the receiver")

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def webhook_server(make_server, receiver, *args, **kw):
    return make_server("--webhook-url", receiver.url, "--webhook-backoff", "100ms",
                       "--early-title-after", "100", *args, env=ENV, **kw)


def run_sequence(api) -> tuple[dict, set[tuple[str, str]]]:
    """A day of a toy: a story with a critical and a blocked message, the
    end and its title, a review, a second chat, then the child's erasure.
    Returns the ids and the (type, subject) pairs it must announce."""
    user = unique("mia")
    c1 = api.create(user, "teddy", userName="Mia", agentName="Teddy", type="story", channel="toy")["conversationId"]
    api.append(c1, ("user", SAID[0]), ("assistant", SAID[1]))
    api.append(c1, ("user", SAID[2]), ("assistant", SAID[3]))
    api.append(c1, ("user", SAID[4]), ("assistant", SAID[5]))
    api.end(c1)
    title = wait_until(lambda: api.conversation(c1)["title"] if api.conversation(c1)["titleGeneratedAt"] else None,
                       20, what="the title")
    api.ok("POST", f"/conversations/{c1}/review", {"flagStatus": "escalated", "note": NOTE})
    c2 = api.create(user, "teddy", userName="Mia", agentName="Teddy")["conversationId"]
    api.append(c2, ("user", SAID[6]))
    api.flush(c2)
    api.erase_user(user)
    expected = {
        ("conversation.created", c1), ("conversation.flagged", c1), ("message.flagged", c1),
        ("safety.critical", c1), ("message.blocked", c1), ("session.ended", c1), ("title.generated", c1),
        ("conversation.reviewed", c1), ("conversation.created", c2), ("conversation.erased", c1),
        ("conversation.erased", c2), ("user.erased", user),
    }
    return {"user": user, "c1": c1, "c2": c2, "title": title}, expected


def check_envelopes(events: list[dict], ids: dict):
    for e in events:
        assert e["specversion"] == "1.0" and e["source"] == "convo", e
        assert e["datacontenttype"] == "application/json" and e["dataschema"] == "urn:convo:events:v1"
        assert e["id"].startswith(e["type"] + ":"), e["id"]
        parse_ts(e["time"])
        d = e["data"]
        assert d["userId"] == ids["user"] and d["ownerId"] == "alice", d
        text = json.dumps(e, ensure_ascii=False)
        # Whole sentences, the title, and every word of four letters or more
        # of them (the title is made of the words said) but three that a
        # field or name holds: "time", "Teddy" and the type "story".
        words = {w.strip(".,?!'").lower() for s in [*SAID, NOTE, ids["title"]] for w in s.split()}
        words = {w for w in words if len(w) >= 4} - {"time", "teddy", "story"} | {ids["title"]}
        for s in [*SAID, NOTE, *words]:
            assert s.lower() not in text.lower(), f"{s!r} in {e['type']}: {text}"
    by_type = {}
    for e in events:
        by_type.setdefault(e["type"], []).append(e)
    crit = by_type["safety.critical"][0]["data"]
    assert crit["severity"] == "critical" and crit["categories"] == ["self_harm"] and crit["messageIndex"] == 2
    # The child's name is sealed in the store (issue 16): the worker, which
    # holds no key, cannot put it in an event; the agent's name is not sealed.
    assert crit["role"] == "user" and "userName" not in crit and crit["agentName"] == "Teddy"
    assert by_type["message.blocked"][0]["data"]["action"] == "blocked"
    ended = by_type["session.ended"][0]["data"]
    assert ended["endReason"] == "client" and ended["messageCount"] == 6 and ended["durationSeconds"] >= 0
    reviewed = by_type["conversation.reviewed"][0]["data"]
    assert reviewed["flagStatus"] == "escalated" and reviewed["reviewedBy"] == "alice" and reviewed["hasNote"] is True
    assert by_type["user.erased"][0]["data"]["conversationsDeleted"] == 2
    for e in by_type["conversation.erased"]:
        assert "userName" not in e["data"] and "agentName" not in e["data"]


@embedded_only
def test_every_change_is_announced_once_signed_and_without_content(make_server, receiver):
    server = webhook_server(make_server, receiver)
    api = server.client("alice")
    ids, expected = run_sequence(api)
    events = receiver.wait_for(len(expected))
    time.sleep(0.5)  # nothing more may come
    events = receiver.events()
    assert {(e["type"], e["subject"]) for e in events} == expected
    assert len(events) == len(expected), sorted(e["id"] for e in events)
    # Every request was signed right, and nothing was sent twice.
    assert all(a["verified"] for a in receiver.attempts)
    assert len(receiver.attempts) == len(expected)
    check_envelopes(events, ids)
    # The README's ten lines of Python verify them too, and refuse a
    # tampered body.
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = next(b.split("```", 1)[0] for b in readme.split("```python\n")[1:] if "def verify(secret" in b)
    scope: dict = {}
    exec(snippet, scope)
    for a in receiver.attempts:
        assert scope["verify"](SECRET, a["headers"], a["body"])
        assert not scope["verify"](SECRET, a["headers"], a["body"] + b" ")
    # A wrong signature is refused by the reference library (the check has teeth).
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook("whsec_" + "A" * 32).verify(receiver.attempts[0]["body"], {
            "webhook-id": events[0]["id"], "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1,AAAA"})
    # Delivery lag, commit to webhook: the events' time is the change's
    # (commit) time for the worker's; printed for BENCHMARKS.md.
    lags = []
    for a in receiver.attempts:
        e = json.loads(a["body"])
        if e["type"] in ("message.flagged", "message.blocked", "safety.critical", "session.ended"):
            lags.append(a["at"] - parse_ts(e["time"]).timestamp())
    print(f"\nevent lag (acceptance to webhook) over {len(lags)} events: "
          f"p50 {statistics.median(lags) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms")
    health = {c["name"]: c for c in api.health()["components"]}
    assert health["eventsQueue"]["deadLetters"] == 0


@embedded_only
def test_a_receiver_failing_for_a_while_loses_nothing(make_server, receiver):
    receiver.status = 500
    server = webhook_server(make_server, receiver)
    api = server.client("alice")
    cid = api.create(unique("kid"), "teddy")["conversationId"]
    api.append(cid, ("user", SAID[2]))
    # Tried and refused, then kept and tried again.
    wait_until(lambda: len({a["id"] for a in receiver.attempts}) >= 4
               and len(receiver.attempts) >= 8, 20, what="retries")
    assert not receiver.delivered
    receiver.status = 200
    events = receiver.wait_for(4, timeout=30)
    assert {e["type"] for e in events} == {"conversation.created", "conversation.flagged",
                                           "message.flagged", "safety.critical"}
    # Retries carry the same id: the receiver keeps one of each.
    assert len(receiver.delivered) == 4


@embedded_only
def test_events_committed_before_a_kill_are_delivered_after_restart(make_server, receiver, tmp_path):
    receiver.status = 503
    server = webhook_server(make_server, receiver, data_dir=tmp_path / "kept")
    api = server.client("alice")
    cid = api.create(unique("kid"), "teddy")["conversationId"]
    api.append(cid, ("user", SAID[4]))
    api.end(cid)
    wait_until(lambda: {"session.ended", "message.blocked"} <= {
        json.loads(a["body"])["type"] for a in receiver.attempts}, 20, what="the events to be tried")
    server.stop(signal.SIGKILL)
    assert server.proc.returncode == -signal.SIGKILL
    receiver.status = 200
    server.start()
    events = receiver.wait_for(5, timeout=30)
    assert {e["type"] for e in events} == {"conversation.created", "conversation.flagged", "message.blocked",
                                           "session.ended", "title.generated"}


@embedded_only
def test_an_event_that_keeps_failing_is_parked_and_counted(make_server, receiver):
    receiver.status = 500
    server = make_server("--webhook-url", receiver.url, "--webhook-attempts", "2", "--webhook-backoff", "50ms",
                         env=ENV)
    api = server.client("alice")
    api.create(unique("kid"), "teddy")
    wait_until(lambda: {c["name"]: c for c in api.health()["components"]}["eventsQueue"]["deadLetters"] == 1,
               20, what="the event in the dead-letter list")
    assert len(receiver.attempts) == 2


@embedded_only
def test_only_the_chosen_types_are_sent(make_server, receiver):
    server = webhook_server(make_server, receiver, "--webhook-events", "safety.critical,message.blocked")
    api = server.client("alice")
    cid = api.create(unique("kid"), "teddy")["conversationId"]
    api.append(cid, ("user", SAID[2]), ("user", SAID[4]))
    api.flush(cid)
    events = receiver.wait_for(2)
    time.sleep(0.5)
    assert sorted(e["type"] for e in receiver.events()) == ["message.blocked", "safety.critical"]


@embedded_only
@pytest.mark.parametrize("args,env,message", [
    (["--webhook-url", "ftp://example.com/x"], {}, "must be http or https"),
    (["--webhook-url", "http://127.0.0.1:9/x", "--webhook-events", "message.deleted"], {}, "unknown type"),
    (["--webhook-url", "http://127.0.0.1:9/x"], {"CONVO_WEBHOOK_SECRET": "secret"}, "whsec_"),
    (["--event-bus", "convo-events"], {}, "--event-bus needs --aws"),
])
def test_bad_event_settings_stop_the_start(make_server, args, env, message):
    s = make_server(*args, env=env, start=False)
    with pytest.raises(RuntimeError) as err:
        s.start()
    assert message in str(err.value)


@aws_only
def test_events_reach_a_queue_through_an_eventbridge_rule(make_server):
    import boto3
    from fault_proxy import FaultProxy
    import os

    eb, sqs = boto3.client("events"), boto3.client("sqs")
    name = f"convo-e2e-{uuid.uuid4().hex[:8]}"
    eb.create_event_bus(Name=name)
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    eb.put_rule(EventBusName=name, Name="everything", EventPattern=json.dumps({"source": ["convo"]}))
    eb.put_targets(EventBusName=name, Rule="everything", Targets=[{"Id": "q", "Arn": arn}])
    with FaultProxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
        # PutEvents fails three times in a row first: retried, nothing lost.
        proxy.fail_next["AWSEvents.PutEvents"] = 3
        server = make_server("--event-bus", name, "--early-title-after", "100",
                             env={"AWS_ENDPOINT_URL_EVENTBRIDGE": proxy.url})
        api = server.client("alice")
        ids, expected = run_sequence(api)
        got: dict[str, dict] = {}
        copies = 0

        def drain():
            nonlocal copies
            for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
                envelope = json.loads(m["Body"])
                assert envelope["source"] == "convo" and envelope["detail-type"] == envelope["detail"]["type"]
                got.setdefault(envelope["detail"]["id"], envelope["detail"])
                copies += 1
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
            return len(got) >= len(expected)

        wait_until(drain, 60, interval=0.3, what="every event in the queue")
        time.sleep(1)
        drain()
        assert proxy.injected[(500, "AWSEvents.PutEvents")] == 3
    events = list(got.values())
    assert {(e["type"], e["subject"]) for e in events} == expected
    assert copies == len(expected), "each event once"
    check_envelopes(events, ids)
