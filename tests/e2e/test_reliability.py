"""Reliability: a long conversation read page by page, write commands
delivered more than once, a poison message on the writes queue, DynamoDB
failing under load, and an idempotent answer DynamoDB failed to record. Every
test counts exactly: nothing lost, nothing stored twice, indexes dense and in
order.

The AWS-mode tests talk to SQS directly with boto3 at ``AWS_ENDPOINT_URL``
(moto in tests/run), as a misbehaving producer or a redelivering queue would,
or put a fault-injecting proxy (fault_proxy.py) between the server and moto.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from conftest import STORE, Client, assert_error, aws_prefix, unique, wait_until

aws_only = pytest.mark.skipif(STORE != "aws", reason="talks to SQS/DynamoDB directly: AWS mode only")


# --------------------------------------------------------------------------
# helpers

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    """A ULID (48-bit milliseconds + 80 random bits, Crockford base32), like the API's ids."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def rfc3339_now(ago: timedelta = timedelta(0)) -> str:
    return (datetime.now(timezone.utc) - ago).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tamper(cursor: str) -> str:
    """The cursor with its middle character replaced by another one of the same alphabet."""
    i = len(cursor) // 2
    replacement = "A" if cursor[i] != "A" else "B"
    tampered = cursor[:i] + replacement + cursor[i + 1:]
    assert tampered != cursor and len(tampered) == len(cursor)
    return tampered


def pages(api: Client, cid: str, limit: int, order: str):
    """Every page of the conversation's messages, following nextCursor; the list of pages."""
    out, cursor = [], None
    while True:
        q = {"limit": limit, "order": order}
        if cursor:
            q["cursor"] = cursor
        page = api.messages(cid, **q)
        assert set(page) >= {"messages", "nextCursor"}, page.keys()
        out.append(page)
        cursor = page["nextCursor"]
        assert len(out) <= 100, "pagination does not terminate"
        if not cursor:
            return out


class Aws:
    """boto3 clients on the endpoint the tests run against, and one server's queues."""

    def __init__(self, data_dir):
        import boto3

        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=region)
        self.prefix = aws_prefix(data_dir)
        self.writes_url = self.sqs.get_queue_url(QueueName=f"{self.prefix}-writes.fifo")["QueueUrl"]
        self.writes_dlq_url = self.sqs.get_queue_url(QueueName=f"{self.prefix}-writes-dlq.fifo")["QueueUrl"]

    def send_write(self, body: str, group: str, dedup: str):
        self.sqs.send_message(QueueUrl=self.writes_url, MessageBody=body, MessageGroupId=group,
                              MessageDeduplicationId=dedup)

    def depth(self, url: str) -> tuple[int, int]:
        a = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])

    def peek_all(self, url: str) -> list[dict]:
        """Every message of a queue, left visible (visibility timeout 0)."""
        seen, out = set(), []
        for _ in range(10):
            got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                           AttributeNames=["All"]).get("Messages", [])
            new = [m for m in got if m["MessageId"] not in seen]
            if not new:
                break
            for m in new:
                seen.add(m["MessageId"])
                out.append(m)
        return out


def append_command(cid: str, owner: str, content: str, role: str = "user",
                   ago: timedelta = timedelta(0)) -> dict:
    """A write command exactly as the API would enqueue it (see shared/schema/src/commands.rs),
    accepted `ago` before now."""
    now = rfc3339_now(ago)
    return {
        "v": 1,
        "commandId": ulid(),
        "conversationId": cid,
        "ownerId": owner,
        "acceptedAt": now,
        "kind": "append",
        "messages": [{
            "messageId": ulid(),
            "role": role,
            "content": content,
            "createdAt": now,
            "safety": {"score": 1.0, "action": "safe"},
        }],
    }


def writes_queue(api: Client) -> dict:
    return {c["name"]: c for c in api.health()["components"]}["writesQueue"]


# --------------------------------------------------------------------------
# 1. a long conversation, page by page


APPENDS, PER_APPEND = 50, 20
TOTAL = APPENDS * PER_APPEND


def test_thousand_messages_page_by_page(make_server):
    # A dedicated server: its table holds this conversation only. (On moto,
    # every TransactWriteItems deep-copies the whole table once per item, so
    # a commit's cost grows with everything the table holds.)
    srv = make_server()
    # patient: a busy emulator can stall for seconds under this load
    api = Client(srv.base_url, srv.token("alice"), timeout=60)
    cid = api.create(unique("long"), "agent-pages")["conversationId"]
    run = uuid.uuid4().hex[:8]
    expected, accepted_ids = [], []
    for a in range(APPENDS):
        batch = []
        for j in range(PER_APPEND):
            k = a * PER_APPEND + j
            batch.append(("user" if k % 2 == 0 else "assistant", f"line {k:04d} of run {run}"))
        answer = api.append(cid, *batch)
        assert len(answer["messages"]) == PER_APPEND
        # one append at a time: each batch of the worker is one commit, well
        # inside the queue's 5 s visibility timeout even on a slow emulator
        api.wait_count(cid, (a + 1) * PER_APPEND, timeout=60)
        accepted_ids += [m["messageId"] for m in answer["messages"]]
        expected += [c for _, c in batch]
    assert len(set(expected)) == TOTAL and len(set(accepted_ids)) == TOTAL

    conv = api.wait_count(cid, TOTAL, timeout=40)
    assert conv["messageCount"] == TOTAL

    # ascending, 100 a page: 10 full pages, the last one without a cursor
    asc = pages(api, cid, 100, "asc")
    assert [len(p["messages"]) for p in asc] == [100] * 10
    assert all(p["nextCursor"] for p in asc[:-1]) and asc[-1]["nextCursor"] is None
    msgs = [m for p in asc for m in p["messages"]]
    assert [m["messageIndex"] for m in msgs] == list(range(TOTAL))
    assert [m["content"] for m in msgs] == expected
    assert [m["messageId"] for m in msgs] == accepted_ids
    assert [m["role"] for m in msgs] == ["user" if k % 2 == 0 else "assistant" for k in range(TOTAL)]
    assert len({m["messageId"] for m in msgs}) == TOTAL

    # descending, 77 a page: 12 full pages and 76 to finish, newest first
    desc = pages(api, cid, 77, "desc")
    assert [len(p["messages"]) for p in desc] == [77] * 12 + [76]
    assert all(p["nextCursor"] for p in desc[:-1]) and desc[-1]["nextCursor"] is None
    dmsgs = [m for p in desc for m in p["messages"]]
    assert [m["messageIndex"] for m in dmsgs] == list(range(TOTAL - 1, -1, -1))
    assert [m["content"] for m in dmsgs] == expected[::-1]
    assert dmsgs == msgs[::-1], "the descending walk must return the very same messages"

    # the message count did not move while we read
    assert api.conversation(cid)["messageCount"] == TOTAL

    # a tampered cursor is refused, in either order
    path = f"/conversations/{cid}/messages"
    for page, order, limit in ((asc[0], "asc", 100), (asc[4], "asc", 100), (desc[0], "desc", 77)):
        bad = tamper(page["nextCursor"])
        assert_error(api.get(f"{path}?limit={limit}&order={order}&cursor={bad}"), 400, "invalid_cursor")
        # the genuine cursor still works
        status, _, body = api.get(f"{path}?limit={limit}&order={order}&cursor={page['nextCursor']}")
        assert status == 200 and len(body["messages"]) == limit, (status, body)

    # a cursor issued for another conversation is refused, both ways
    other = api.create(unique("long-other"), "agent-pages")["conversationId"]
    api.append(other, ("user", "one"), ("assistant", "two"), ("user", "three"))
    api.wait_count(other, 3)
    foreign = api.messages(other, limit=2)["nextCursor"]
    assert foreign
    assert_error(api.get(f"{path}?limit=100&cursor={foreign}"), 400, "invalid_cursor")
    assert_error(api.get(f"{path}?limit=100&order=desc&cursor={foreign}"), 400, "invalid_cursor")
    assert_error(api.get(f"/conversations/{other}/messages?limit=2&cursor={asc[0]['nextCursor']}"), 400,
                 "invalid_cursor")
    # and the refusals changed nothing
    assert [m["content"] for m in api.all_messages(other)] == ["one", "two", "three"]
    assert api.conversation(cid)["messageCount"] == TOTAL


# --------------------------------------------------------------------------
# 2. the same command delivered twice


@aws_only
def test_commands_delivered_twice_are_stored_once(server, api):
    """SQS may deliver a command twice (a producer retry, a redelivery after a
    crash, a replayed batch). Crafted commands are sent with a second
    deduplication id, so SQS itself lets every copy through: the worker must
    recognise each command id and store its messages once."""
    aws = Aws(server.data_dir)
    dead_before = writes_queue(api)["deadLetters"]
    cid = api.create(unique("dup"), "agent-dup")["conversationId"]
    owner = api.conversation(cid)["ownerId"]
    assert owner == "alice"
    run = uuid.uuid4().hex[:8]
    # Accepted ten minutes ago: SQS FIFO drops a re-send with the same
    # deduplication id for five minutes, so a replay that reaches the worker
    # with a new one is at least that old (a client's retry re-sending a
    # stored command, a dead-letter redrive). The worker remembers its last
    # 16 commands and reads the chunks back for older ones.
    commands = [append_command(cid, owner, f"crafted {i:02d} of {run}", "user" if i % 2 == 0 else "assistant",
                               ago=timedelta(minutes=10))
                for i in range(20)]

    # every command twice, back to back, with distinct deduplication ids: SQS
    # delivers both, the worker must apply one
    for c in commands:
        body = json.dumps(c)
        aws.send_write(body, cid, c["commandId"])
        aws.send_write(body, cid, c["commandId"] + "-again")

    conv = api.wait_count(cid, 20, timeout=20)
    # the early title job (after 6 messages) also writes the conversation:
    # let it and every duplicate settle before taking the picture
    wait_until(lambda: api.conversation(cid)["titleSource"] == "generated", 15, what="the early title")
    wait_until(lambda: aws.depth(aws.writes_url) == (0, 0), 15, what="the writes queue to drain")
    api.wait_queues_idle(15)

    before_conv = api.conversation(cid)
    before_msgs = api.all_messages(cid)
    assert before_conv["messageCount"] == 20
    assert len(before_msgs) == 20
    assert [m["messageIndex"] for m in before_msgs] == list(range(20))
    assert [m["messageId"] for m in before_msgs] == [c["messages"][0]["messageId"] for c in commands]
    assert [m["content"] for m in before_msgs] == [c["messages"][0]["content"] for c in commands]
    assert [m["acceptedAt"][:23] for m in before_msgs] == [c["acceptedAt"][:23] for c in commands]
    assert Counter(m["messageId"] for m in before_msgs).most_common(1)[0][1] == 1

    # a second pass: every command replayed once they are all stored
    for c in commands:
        aws.send_write(json.dumps(c), cid, c["commandId"] + "-replay")
    wait_until(lambda: aws.depth(aws.writes_url) == (0, 0), 20, what="the replayed commands to be consumed")
    api.wait_queues_idle(15)
    assert writes_queue(api)["deadLetters"] == dead_before, "a duplicate must be acknowledged, not dead-lettered"

    assert api.conversation(cid) == before_conv, "a replayed command changed the conversation"
    assert api.all_messages(cid) == before_msgs, "a replayed command changed the messages"

    # the next write through the API takes index 20: the counter did not move
    after = api.flush(cid)
    assert len(after) == 21 and after[:20] == before_msgs
    assert after[20]["messageIndex"] == 20
    assert api.conversation(cid)["messageCount"] == 21


# --------------------------------------------------------------------------
# 3. a poison message


@aws_only
def test_poison_message_holds_back_its_group_and_nothing_is_lost(make_server):
    """An undecodable command fails with every command behind it in its
    batch and FIFO group (issue 23: a body this worker cannot read may be a
    newer format, and applying what follows it first would break the
    order); the other groups are stored in order. After --max-receives the
    poison and the commands it held back are in the dead-letter queue,
    whole; a command of the group that reached the queue's head only after
    them (with fewer receives) is then applied, as SQS FIFO does once the
    head of a group is dead-lettered. Nothing accepted is lost: every
    command is stored or parked, never both.

    The poison arrives while the worker is behind (its receives are held at
    a proxy for a moment), so the valid appends accepted right after it wait
    in the same FIFO group and are received in the same batch, as they are
    whenever the queue has a backlog.
    """
    from fault_proxy import FaultProxy

    with FaultProxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
        srv = make_server("--write-workers", "4", env={"AWS_ENDPOINT_URL": proxy.url})
        api = srv.client("alice")
        aws = Aws(srv.data_dir)
        a = api.create(unique("poison-a"), "agent-poison")["conversationId"]
        b = api.create(unique("poison-b"), "agent-poison")["conversationId"]
        api.append(a, ("user", "stored before the poison"))
        api.wait_count(a, 1)
        assert writes_queue(api)["deadLetters"] == 0

        # the worker falls behind: every poller stalls on its next receive
        proxy.hold_receives("-writes.fifo")
        wait_until(lambda: proxy.holding >= 4, 5, what="the four write pollers to stall")

        aws.send_write("{not json", a, f"poison-{uuid.uuid4().hex}")
        sent_a, expected_b = [], []
        for i in range(6):
            pair_a = [("user", f"A question {i}"), ("assistant", f"A answer {i}")]
            pair_b = [("user", f"B question {i}"), ("assistant", f"B answer {i}")]
            sent_a.append((api.append(a, *pair_a)["commandId"], [c for _, c in pair_a]))
            api.append(b, *pair_b)
            expected_b += [c for _, c in pair_b]
        assert aws.depth(aws.writes_url) == (13, 0)
        proxy.release_receives()

        # five receives of the group, a second apart (--retry-delay 1s), then the DLQ
        def settled():
            q = writes_queue(api)
            assert q["deadLetters"] >= 2 and q["visible"] == 0 and q["inFlight"] == 0, q
            return q

        wait_until(settled, 30, interval=0.2, what="the poison and what it held back to be dead-lettered")

        dead = aws.peek_all(aws.writes_dlq_url)
        stored_a = [m["content"] for m in api.all_messages(a)]
        stored_b = [m["content"] for m in api.all_messages(b)]
        report = (f"dead letters ({len(dead)}): {[m['Body'][:80] for m in dead]}; "
                  f"A holds {stored_a}; B holds {len(stored_b)} of {len(expected_b)}")

        # B's appends are stored exactly once, in order
        assert stored_b == expected_b, report
        assert [m["messageIndex"] for m in api.all_messages(b)] == list(range(len(expected_b)))

        # the poison is parked once; the commands it held back are parked
        # whole, and the first of A's commands is among them (nothing of A's
        # was applied ahead of the poison in its batch)
        bodies = [m["Body"] for m in dead]
        assert bodies.count("{not json") == 1, report
        parked = {json.loads(body)["commandId"] for body in bodies if body != "{not json"}
        assert sent_a[0][0] in parked, report
        assert {m["Attributes"]["MessageGroupId"] for m in dead} == {a}
        # every accepted command of A is parked or stored, never both, and
        # what is stored keeps the order it was sent in
        applied = [said for cid, said in sent_a if cid not in parked]
        assert stored_a == ["stored before the poison"] + [c for said in applied for c in said], report

        # the group is not blocked any more
        assert [m["content"] for m in api.flush(a)][:-1] == stored_a


# --------------------------------------------------------------------------
# 4. DynamoDB failing under concurrent load


CLIENTS, APPENDS_PER_CLIENT = 3, 40
# The share of DynamoDB requests that fail throughout. Each one costs the
# server's SDK a retry with backoff (about half a second), so the share sets
# the runtime: 10% takes about 20 s on moto, 30% about 50 s. Halfway through,
# DynamoDB also fails every request for OUTAGE_SECONDS: long enough to beat
# the SDK's own retries, so clients see 503s and retry with their keys.
FAULT_RATE = float(os.environ.get("CONVO_E2E_FAULT_RATE", "0.1"))
OUTAGE_SECONDS = 3.0


@aws_only
def test_dynamodb_faults_lose_and_duplicate_nothing(make_server):
    """DynamoDB throttles and fails (injected at a proxy in front of moto)
    while three clients append with an Idempotency-Key each and retry 503s
    with the same key: every accepted append is stored exactly once, in each
    client's order, with dense indexes; nothing else is stored."""
    from fault_proxy import FaultProxy

    upstream = os.environ.get("AWS_ENDPOINT_URL")
    assert upstream, "AWS mode needs AWS_ENDPOINT_URL"
    with FaultProxy(upstream, fail_rate=0.0, seed=7) as proxy:
        # resources are deployed (the template's stack) and the server started through the proxy, faults off
        srv = make_server(env={"AWS_ENDPOINT_URL": proxy.url})
        api = srv.client("alice")
        cid = api.create(unique("faults"), "agent-faults")["conversationId"]
        assert proxy.forwarded["DynamoDB_20120810"] > 0, "the server does not talk to DynamoDB via the proxy"

        proxy.fail_rate = FAULT_RATE
        results: list[list[tuple[str, list[str]]]] = [[] for _ in range(CLIENTS)]
        statuses: Counter = Counter()
        errors: list = []
        lock = threading.Lock()
        run = uuid.uuid4().hex[:8]

        def client(t: int):
            try:
                for i in range(APPENDS_PER_CLIENT):
                    body = {"messages": [{"role": "user", "content": f"client {t} append {i} asks ({run})"},
                                         {"role": "assistant", "content": f"client {t} append {i} answers ({run})"}]}
                    key = f"faults-{run}-{t}-{i}"
                    for attempt in range(40):
                        status, _, answer = api.call("POST", f"/conversations/{cid}/messages", body,
                                                     headers={"Idempotency-Key": key})
                        with lock:
                            statuses[status] += 1
                        if status == 202:
                            results[t].append((key, [m["messageId"] for m in answer["messages"]]))
                            break
                        code = (answer or {}).get("error", {}).get("code") if isinstance(answer, dict) else None
                        if (status, code) in ((503, "dependency_unavailable"), (409, "request_in_progress")):
                            time.sleep(0.05 * min(attempt + 1, 5))
                            continue
                        errors.append((t, i, attempt, status, answer))
                        return
                    else:
                        errors.append((t, i, "gave up", key))
                        return
            except Exception as e:  # reported below: a thread must not die silently
                errors.append((t, repr(e)))

        threads = [threading.Thread(target=client, args=(t,)) for t in range(CLIENTS)]
        started = time.monotonic()
        for th in threads:
            th.start()
        # halfway: a total outage, then back to the background rate
        wait_until(lambda: sum(len(r) for r in results) >= CLIENTS * APPENDS_PER_CLIENT // 2 or errors, 90,
                   interval=0.1, what="half of the appends to be accepted")
        proxy.fail_rate = 1.0
        time.sleep(OUTAGE_SECONDS)
        proxy.fail_rate = FAULT_RATE
        for th in threads:
            th.join(120)
        load_seconds = time.monotonic() - started
        assert not any(th.is_alive() for th in threads), "client threads hung"
        proxy.fail_rate = 0.0  # heal: the worker catches up
        injected = proxy.faults
        summary = f"statuses {dict(statuses)}, injected {dict(proxy.injected)}, load took {load_seconds:.1f}s"
        assert errors == [], f"{errors[:5]}; {summary}"

        accepted = [mid for r in results for _, ids in r for mid in ids]
        assert len(results[0]) == len(results[1]) == len(results[2]) == APPENDS_PER_CLIENT
        assert len(accepted) == len(set(accepted)) == CLIENTS * APPENDS_PER_CLIENT * 2, summary
        n = len(accepted)

        try:
            conv = api.wait_count(cid, n, timeout=45)
        except AssertionError as e:
            q = writes_queue(api)
            raise AssertionError(f"{e}; writes queue {q}; {summary}") from None
        api.wait_queues_idle(15)
        q = writes_queue(api)
        assert q["deadLetters"] == 0, f"accepted writes were dead-lettered: {q}; {summary}"

        msgs = api.all_messages(cid)
        ids = [m["messageId"] for m in msgs]
        dupes = [i for i, c in Counter(ids).items() if c > 1]
        assert dupes == [], f"stored twice: {dupes[:5]}; {summary}"
        assert set(ids) == set(accepted), (
            f"missing {len(set(accepted) - set(ids))}, unexpected {len(set(ids) - set(accepted))}; {summary}")
        assert len(msgs) == n and conv["messageCount"] == n
        assert api.conversation(cid)["messageCount"] == n
        assert [m["messageIndex"] for m in msgs] == list(range(n))

        # each client's appends were accepted one after another: stored in that order,
        # each append's two messages side by side
        position = {m["messageId"]: m["messageIndex"] for m in msgs}
        for t in range(CLIENTS):
            order = [position[mid] for _, ids in results[t] for mid in ids]
            assert order == sorted(order), f"client {t} stored out of order"
            assert all(position[ids[1]] == position[ids[0]] + 1 for _, ids in results[t])
        by_content = {m["content"]: m for m in msgs}
        for t in range(CLIENTS):
            for i in range(APPENDS_PER_CLIENT):
                assert by_content[f"client {t} append {i} asks ({run})"]["role"] == "user"

        assert injected > 20, f"the proxy injected only {injected} faults; {summary}"
        assert statuses[503] > 0, f"no client ever saw a 503: the retries with a key were not exercised; {summary}"
        print(summary)


# --------------------------------------------------------------------------
# 5. an idempotent answer that could not be recorded


@aws_only
def test_idempotency_key_answers_again_after_its_answer_failed_to_record(make_server):
    """README: "a retry with the same key and body gets the first answer
    again and stores nothing new". The retry matters most when the first
    answer was lost on its way to the client; DynamoDB failing to record the
    answer (after the write was accepted) must not turn every later retry
    into "still in progress"."""
    from fault_proxy import FaultProxy

    with FaultProxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
        srv = make_server(env={"AWS_ENDPOINT_URL": proxy.url})
        api = srv.client("alice")
        cid = api.create(unique("idem"), "agent-idem")["conversationId"]
        body = {"messages": [{"role": "user", "content": "recorded or not, answered once"}]}
        key = {"Idempotency-Key": f"idem-{uuid.uuid4().hex}"}

        # UpdateItem is how the answer of a key is recorded; make it fail, every try
        proxy.fail_ops, proxy.fail_rate = {"UpdateItem"}, 1.0
        first = api.ok("POST", f"/conversations/{cid}/messages", body, expect=202, headers=key)
        proxy.fail_rate = 0.0
        assert proxy.injected, "no fault was injected: the answer is recorded some other way"
        api.wait_count(cid, 1)

        # the client never saw that answer and retries, patiently ("retry shortly")
        answers = []
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            status, _, answer = api.call("POST", f"/conversations/{cid}/messages", body, headers=key)
            answers.append((status, answer))
            if status != 409:
                break
            time.sleep(0.5)

        # nothing was stored twice, whatever the answer
        stored = api.flush(cid)
        assert [m["content"] for m in stored][:-1] == ["recorded or not, answered once"]
        assert stored[0]["messageId"] == first["messages"][0]["messageId"]

        status, answer = answers[-1]
        assert status == 202, (f"a retry with the same key never gets the first answer: "
                               f"{len(answers)} tries over 2.5 s, last {status} {answer}")
        assert answer == first
