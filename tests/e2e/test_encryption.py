"""Field-level envelope encryption (issue 16), seen from outside: what a
person wrote or was told reads back exactly through the API, and nowhere
else.

A canary (``canary`` and twelve random letters: one word, which the title
generator takes as a topic, so a generated title holds it too) is said in
every field that is sealed: a message's content, a tool call's arguments,
a message's metadata and audio URL, the previews, and a conversation's
userName, metadata, title (a user's and a generated one) and review note.

- Embedded pass: no file of the data directory holds it (convo.redb with the
  queues and whatever old pages redb keeps, the key file `keys`, master-key, every
  file), while the server runs and after a clean stop.
- AWS pass: no item of the data table or of the key table (a full Scan;
  binary attributes as raw bytes), no message left on any of the stack's
  queues, and nothing at all that convo-local sent to AWS (every request,
  recorded at a proxy in front of moto) holds it; the writes queue's bodies
  are read while the worker is held back.
- The same walkthrough with ``--encryption off`` leaves the canary in each
  of those places: the scans can see it, so its absence means something.

Then erasure as crypto-shredding: a backup taken before a user's erasure
and restored after it (the AWS pass puts the items back, as a
point-in-time restore would; the embedded pass puts back a copy of
convo.redb) reads as erased, and the embedded key file keeps nothing that
unwraps an erased user's key.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import stat
import string
import struct
import urllib.parse
from pathlib import Path

import pytest

from conftest import STORE, aws_prefix, aws_stack, unique, wait_until

embedded_only = pytest.mark.skipif(STORE == "aws", reason="reads the embedded store's files")
aws_only = pytest.mark.skipif(STORE != "aws", reason="reads DynamoDB and SQS directly: AWS mode only")

ENCRYPTION = pytest.mark.parametrize("encryption", ["on", "off"], ids=["sealed", "control-encryption-off"])

# What a conversation seals (the list's items and GET's answer alike).
SEALED_CONVERSATION_FIELDS = ("userName", "title", "metadata", "reviewNote", "firstMessagePreview",
                              "lastMessagePreview")


# --------------------------------------------------------------------------
# the canary


def new_canary() -> str:
    """``canary`` and twelve random lower-case letters: no digit, no
    punctuation, at most 20 letters, so the title generator keeps it as a
    word (and capitalises it: searches ignore case)."""
    return "canary" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(12))


def holds(data: bytes | str, canary: str) -> bool:
    """Whether raw data holds the canary, in any case."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="replace")
    return canary.encode() in data.lower()


# --------------------------------------------------------------------------
# the walkthrough


def walkthrough(api, canary: str) -> dict:
    """One user's day, the canary in every sealed field of two conversations.

    The first: a userName, metadata and a title at creation; a user message
    with metadata and an audio URL, a tool call and its result (sent with an
    Idempotency-Key, so the stored command is sealed too); a flagged
    message and an answer (the last message: the last preview); a PATCHed
    title and metadata; a review note; the end. The second: a title the
    generator makes from the user's words. Returns what was said, to check
    the reads against."""
    user = unique("mia")
    first = {"role": "user", "content": f"Tell me about {canary} the dragon",
             "metadata": {"mood": canary, "deep": {"list": [canary, 1]}},
             "audioUrl": f"https://audio.example/{canary}.mp3"}
    call = {"role": "assistant",
            "toolCalls": [{"id": "call_1", "name": "lookup", "arguments": json.dumps({"query": canary})}]}
    result = {"role": "tool", "toolCallId": "call_1", "content": f"{canary} lives in a castle"}
    worry = {"role": "user", "content": "I want to kill myself"}  # flags the conversation (critical)
    answer = {"role": "assistant", "content": f"I'm here for you, and so is {canary}."}

    c1 = api.create(user, "teddy", userName=f"Mia {canary}", agentName="Teddy",
                    metadata={"nickname": canary, "likes": [canary, "owls"]},
                    title=f"Bedtime {canary}")["conversationId"]
    api.append(c1, first, call, result, headers={"Idempotency-Key": unique("sealed")})
    flagged = api.append(c1, worry, answer)
    assert flagged["messages"][0]["safety"]["action"] == "flagged", flagged
    api.ok("PATCH", f"/conversations/{c1}", {"title": f"The {canary} story", "metadata": {"patched": canary}})
    wait_until(lambda: (c := api.conversation(c1))["messageCount"] == 5 and c["flagged"] and c,
               what="the five messages and the flag")
    note = f"Called the parent about {canary}"
    api.ok("POST", f"/conversations/{c1}/review", {"flagStatus": "escalated", "note": note})
    api.end(c1)

    # The generator leaves the participants' names out of a title: this
    # userName does not hold the canary.
    c2 = api.create(user, "robot", userName="Mia")["conversationId"]
    asks = f"Can we play {canary} castles again?"
    api.append(c2, ("user", asks), ("assistant", "Yes!"))
    api.end(c2)

    api.wait_status(c1, "ended")
    wait_until(lambda: (c := api.conversation(c2))["titleSource"] == "generated" and c, 20,
               what="the generated title")
    api.wait_queues_idle()  # the end's title job (it refreshes c1's snapshot) is done too
    return {
        "user": user, "c1": c1, "c2": c2, "note": note, "asks": asks,
        "messages": [first, call, result, worry, answer],
        "metadata": {"nickname": canary, "likes": [canary, "owls"], "patched": canary},
    }


def check_reads(api, w: dict, canary: str):
    """Every sealed value reads back exactly: the conversation, the owner's
    list, the review list, the messages and the context."""
    first, call, result, worry, answer = w["messages"]
    c1 = api.conversation(w["c1"])
    assert c1["status"] == "ended" and c1["messageCount"] == 5, c1
    assert c1["userName"] == f"Mia {canary}", c1
    assert (c1["title"], c1["titleSource"]) == (f"The {canary} story", "user"), c1
    assert c1["metadata"] == w["metadata"], c1
    assert (c1["flagStatus"], c1["reviewNote"]) == ("escalated", w["note"]), c1
    assert c1["firstMessagePreview"] == first["content"], c1
    assert c1["lastMessagePreview"] == answer["content"], c1

    c2 = api.conversation(w["c2"])
    assert c2["titleSource"] == "generated" and canary.capitalize() in c2["title"].split(), c2
    assert (c2["userName"], c2["firstMessagePreview"], c2["lastMessagePreview"]) == ("Mia", w["asks"], "Yes!"), c2

    listed = {c["conversationId"]: c for c in api.ok("GET", f"/conversations?userId={w['user']}")["conversations"]}
    assert set(listed) == {w["c1"], w["c2"]}, listed
    for got in (c1, c2):
        shown = {f: listed[got["conversationId"]][f] for f in SEALED_CONVERSATION_FIELDS}
        assert shown == {f: got[f] for f in SEALED_CONVERSATION_FIELDS}, (shown, got)
    escalated = {c["conversationId"]: c for c in api.ok("GET", "/reviews?status=escalated&limit=200")["conversations"]}
    assert escalated[w["c1"]]["reviewNote"] == w["note"], escalated.get(w["c1"])

    stored = api.all_messages(w["c1"])
    said = [(m["role"], m.get("content", ""), m.get("toolCalls", []), m.get("toolCallId"), m.get("metadata", {}),
             m.get("audioUrl")) for m in w["messages"]]
    read = [(m["role"], m["content"], m.get("toolCalls", []), m.get("toolCallId"), m["metadata"], m["audioUrl"])
            for m in stored]
    assert read == said

    context = api.ok("GET", f"/conversations/{w['c1']}/context?maxMessages=200")["messages"]
    assert context == [
        {"role": "user", "content": first["content"]},
        {"role": "assistant", "content": "", "toolCalls": call["toolCalls"]},
        {"role": "tool", "content": result["content"], "toolCallId": "call_1"},
        {"role": "user", "content": worry["content"]},
        {"role": "assistant", "content": answer["content"]},
    ]


# --------------------------------------------------------------------------
# where the canary is looked for


def files_holding(root: Path, canary: str) -> list[str]:
    """Every file under ``root`` whose bytes hold the canary (with the count)."""
    found = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes().lower()
            if canary.encode() in data:
                found.append(f"{p.relative_to(root)} ({data.count(canary.encode())}x)")
    return found


def value_holds(value, canary: str) -> bool:
    """A DynamoDB attribute value (boto3's client form) holding the canary:
    strings, numbers, binary as raw bytes, sets, maps and lists within."""
    if isinstance(value, dict):
        return any(value_holds(v, canary) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return any(value_holds(v, canary) for v in value)
    if isinstance(value, (bytes, bytearray, str)):
        return holds(bytes(value) if not isinstance(value, str) else value, canary)
    return False


def items_holding(items: list[dict], canary: str) -> list[str]:
    """(pk, sk, attribute) of every attribute holding the canary, and any
    item whose repr does."""
    found = []
    for item in items:
        where = f"{item['pk'].get('S')} {item.get('sk', {}).get('S', '')}".strip()
        found += [f"{where} .{name}" for name, v in item.items() if value_holds(v, canary)]
        if holds(repr(item), canary) and not any(f.startswith(where + " .") for f in found):
            found.append(f"{where} (repr)")
    return found


def scan(table: str) -> list[dict]:
    """Every item of a table (a paginated Scan, strongly consistent)."""
    import boto3

    ddb = boto3.client("dynamodb")
    items, kw = [], {}
    while True:
        page = ddb.scan(TableName=table, ConsistentRead=True, **kw)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]


QUEUE_VARS = ("CONVO_WRITES_QUEUE_URL", "CONVO_WRITES_DLQ_URL", "CONVO_TITLES_QUEUE_URL", "CONVO_TITLES_DLQ_URL",
              "CONVO_EVENTS_QUEUE_URL", "CONVO_EVENTS_DLQ_URL")


def drain(url: str) -> list[dict]:
    """Every message left on a queue (received, hidden for a minute: only
    for a stack whose server is stopped)."""
    import boto3

    sqs = boto3.client("sqs")
    out = []
    for _ in range(100):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                  AttributeNames=["All"]).get("Messages", [])
        if not got:
            return out
        out += got
    return out


def peek(url: str) -> list[dict]:
    """The messages on a queue, left on it (visibility timeout 0)."""
    import boto3

    sqs = boto3.client("sqs")
    seen, out = set(), []
    for _ in range(10):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                  AttributeNames=["All"]).get("Messages", [])
        new = [m for m in got if m["MessageId"] not in seen]
        if not new:
            break
        seen.update(m["MessageId"] for m in new)
        out += new
    return out


def stack_of(srv) -> dict:
    """The table, key table and queues of an AWS-mode server (idempotent)."""
    return aws_stack(aws_prefix(srv.data_dir))


class RecordingProxy:
    """The fault proxy (fault_proxy.py), injecting nothing, that keeps every
    request it forwards: (X-Amz-Target or method and path, body)."""

    def __init__(self, upstream: str):
        from fault_proxy import FaultProxy

        recorded = self.requests = []

        class Recording(FaultProxy):
            def _forward(self, method, path, headers, body):
                target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), "")
                with self._lock:
                    recorded.append((target or f"{method} {path}", body))
                return super()._forward(method, path, headers, body)

        self.proxy = Recording(upstream)

    @property
    def url(self):
        return self.proxy.url

    def __enter__(self):
        self.proxy.start()
        return self

    def __exit__(self, *exc):
        self.proxy.stop()

    def holding(self, canary: str) -> list[str]:
        """The requests holding the canary: in the raw body, URL-decoded
        (the query protocol), or in a binary value (DynamoDB's JSON carries
        them as base64)."""
        found = []
        for target, body in list(self.requests):
            texts = [body, urllib.parse.unquote_plus(body.decode("utf-8", errors="replace")).encode()]
            try:
                texts += list(binary_values(json.loads(body)))
            except ValueError:
                pass
            if any(holds(t, canary) for t in texts):
                found.append(target)
        return found


def binary_values(node):
    """The decoded bytes of every ``{"B": …}`` and ``{"BS": […]}`` in a
    DynamoDB JSON request."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "B" and isinstance(v, str):
                yield base64.b64decode(v)
            elif k == "BS" and isinstance(v, list):
                yield from (base64.b64decode(x) for x in v if isinstance(x, str))
            else:
                yield from binary_values(v)
    elif isinstance(node, list):
        for v in node:
            yield from binary_values(v)


# --------------------------------------------------------------------------
# 1. the canary: readable through the API, nowhere else


@ENCRYPTION
def test_what_is_said_reads_back_and_is_nowhere_in_the_data(make_server, encryption):
    """Every sealed field reads back exactly through the API; with
    encryption on, the canary is in no file of the data directory (embedded)
    or in no item of either table, no message left on a queue and no request
    sent to AWS (AWS mode); with it off, each scan finds it."""
    canary = new_canary()
    if STORE == "aws":
        with RecordingProxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
            srv = make_server("--encryption", encryption, env={"AWS_ENDPOINT_URL": proxy.url})
            api = srv.client("alice")
            w = walkthrough(api, canary)
            check_reads(api, w, canary)
            assert srv.stop() == 0, srv.logs()
        stack = stack_of(srv)
        found = {
            "data table": items_holding(scan(stack["CONVO_TABLE"]), canary),
            "key table": items_holding(scan(stack["CONVO_KEYS_TABLE"]), canary),
            "queues": [f"{var}: {m['Body'][:200]}" for var in QUEUE_VARS for m in drain(stack[var])
                       if holds(m["Body"], canary)],
            "sent to AWS": proxy.holding(canary),
        }
        assert any(t.startswith("DynamoDB_20120810.") for t, _ in proxy.requests), "nothing went through the proxy"
        if encryption == "on":
            assert found == {"data table": [], "key table": [], "queues": [], "sent to AWS": []}, found
        else:
            # The scans see it: in the conversation items and chunks, and
            # in the writes queue's bodies as they were sent.
            assert any(" META ." in f for f in found["data table"]), found
            assert any(" M#" in f for f in found["data table"]), found
            assert "AmazonSQS.SendMessage" in found["sent to AWS"], found
    else:
        srv = make_server("--encryption", encryption)
        api = srv.client("alice")
        w = walkthrough(api, canary)
        check_reads(api, w, canary)
        running = files_holding(srv.data_dir, canary)
        assert srv.stop() == 0, srv.logs()
        stopped = files_holding(srv.data_dir, canary)
        if encryption == "on":
            assert (srv.data_dir / "keys").is_file()
            master = srv.data_dir / "master-key"
            assert stat.S_IMODE(master.stat().st_mode) == 0o600, oct(master.stat().st_mode)
            assert (running, stopped) == ([], []), (running, stopped)
        else:
            assert any(f.startswith("convo.redb ") for f in running), running
            assert any(f.startswith("convo.redb ") for f in stopped), stopped


def test_the_logs_say_nothing_that_was_said(make_server):
    """What the store seals stays out of the server's logs too (stdout and
    stderr here; CloudWatch Logs on Lambda, which the data key does not
    guard and an erasure does not reach): after the walkthrough, no log
    line holds the canary."""
    canary = new_canary()
    srv = make_server()
    walkthrough(srv.client("alice"), canary)
    assert srv.stop() == 0, srv.logs()
    lines = [line for log in sorted(srv.stdout_path.parent.iterdir())
             for line in log.read_text(errors="replace").splitlines()]
    assert lines, "no logs"
    assert [line for line in lines if holds(line, canary)] == []


# --------------------------------------------------------------------------
# 2. the writes queue's bodies


@aws_only
@ENCRYPTION
def test_the_writes_queue_carries_only_sealed_commands(make_server, encryption):
    """The writes queue's body, read on SQS while every worker's receive is
    held at a proxy: the append is there (its conversation, command and
    message ids), and with encryption on nothing said is (content, tool
    arguments, metadata, audio URL); with it off the canary is there. Once
    released, the worker stores it and it reads back exactly.

    (One command on the queue: moto hands the records of a FIFO group out of
    order after a receive of several at visibility 0.)"""
    from fault_proxy import FaultProxy

    canary = new_canary()
    with FaultProxy(os.environ["AWS_ENDPOINT_URL"]) as proxy:
        srv = make_server("--encryption", encryption, "--write-workers", "2", env={"AWS_ENDPOINT_URL": proxy.url})
        api = srv.client("alice")
        writes = stack_of(srv)["CONVO_WRITES_QUEUE_URL"]
        cid = api.create(unique("mia"), "teddy", userName=f"Mia {canary}")["conversationId"]
        said = [
            {"role": "user", "content": f"My secret is {canary}", "metadata": {"m": canary},
             "audioUrl": f"s3://audio/{canary}.ogg"},
            {"role": "assistant", "toolCalls": [{"id": "c1", "name": "remember", "arguments": json.dumps([canary])}]},
        ]
        proxy.hold_receives(writes.rsplit("/", 1)[-1])
        try:
            # both pollers waiting at the proxy: none is at moto to take the record
            wait_until(lambda: proxy.holding >= 2, what="the writes pollers to be held")
            accepted = api.append(cid, *said)
            bodies = wait_until(lambda: [m["Body"] for m in peek(writes)], what="the command on the writes queue")
        finally:
            proxy.release_receives()
        assert len(bodies) == 1, bodies
        command = json.loads(bodies[0])
        assert (command["conversationId"], command["commandId"]) == (cid, accepted["commandId"]), command
        assert all(m["messageId"] in bodies[0] for m in accepted["messages"]), command
        assert holds(bodies[0], canary) == (encryption == "off"), command

        api.end(cid)
        api.wait_status(cid, "ended")
        stored = api.all_messages(cid)
        read = [(m["role"], m["content"], m.get("toolCalls", []), m["metadata"], m["audioUrl"]) for m in stored]
        assert read == [(m["role"], m.get("content", ""), m.get("toolCalls", []), m.get("metadata", {}),
                         m.get("audioUrl")) for m in said]


# --------------------------------------------------------------------------
# 3. a backup restored after an erasure


def _erase_and_restore(srv, api, canary: str) -> dict:
    """User A (an ended conversation and an active one, the canary in what
    they said, their name and a title) and user B (one ended conversation);
    a backup of A's data; A's erasure; the backup put back. AWS mode: every
    item naming A's conversations or A, from a Scan, put back with every
    attribute as it was. Embedded: a copy of convo.redb taken while the
    server was stopped, put back while it is stopped again."""
    a, b = unique("mia"), unique("leo")
    a1 = api.create(a, "teddy", userName=f"Mia {canary}", title=f"Bedtime {canary}")["conversationId"]
    api.append(a1, ("user", f"My secret is {canary}"), ("assistant", f"I keep {canary} safe."))
    a2 = api.create(a, "robot", userName=f"Mia {canary}", metadata={"k": canary})["conversationId"]
    api.append(a2, ("user", f"Still talking about {canary}"))
    b1 = api.create(b, "teddy", userName="Leo", title="Owls at night")["conversationId"]
    api.append(b1, ("user", "What do owls eat at night?"), ("assistant", "Mice, mostly."))
    for c in (a1, a2, b1):
        api.flush(c)
    api.end(a1)
    api.end(b1)
    api.wait_status(a1, "ended")
    api.wait_status(b1, "ended")
    api.wait_queues_idle()
    before_b = {"conversation": api.conversation(b1), "messages": api.all_messages(b1),
                "context": api.ok("GET", f"/conversations/{b1}/context")}
    assert api.conversation(a1)["title"] == f"Bedtime {canary}"  # A's reads work before the erasure

    ctx = {"a": a, "b": b, "a1": a1, "a2": a2, "b1": b1, "before_b": before_b}
    if STORE == "aws":
        import boto3

        stack = stack_of(srv)
        ctx["stack"] = stack
        names_a = (a, a1, a2)
        saved = [i for i in scan(stack["CONVO_TABLE"]) if any(n in repr(i) for n in names_a)]

        def keys_of() -> set[str]:
            return {i["pk"]["S"] for i in scan(stack["CONVO_KEYS_TABLE"])}

        key_a, key_b = f"K#alice\u001f{a}", f"K#alice\u001f{b}"
        assert {key_a, key_b} <= keys_of()
        where = {(i["pk"]["S"], i["sk"]["S"]) for i in saved}
        # the backup is complete: both conversations, their chunks, the active pair, A's totals
        assert {(f"C#{a1}", "META"), (f"C#{a2}", "META"), (f"P#alice#robot#{a}", "ACTIVE"),
                (f"U#alice#{a}", "STATS")} <= where, where
        assert any(pk == f"C#{a1}" and sk.startswith("M#") for pk, sk in where), where
        # what a backup holds of A is ciphertext only
        assert items_holding(saved, canary) == [], items_holding(saved, canary)
        ctx["saved"] = saved

        assert api.erase_user(a)["conversationsDeleted"] == 2
        keys_now = keys_of()
        assert key_a not in keys_now and key_b in keys_now, keys_now
        assert not [i for i in scan(stack["CONVO_TABLE"]) if any(n in repr(i) for n in names_a)]
        ddb = boto3.client("dynamodb")
        for item in saved:
            ddb.put_item(TableName=stack["CONVO_TABLE"], Item=item)
    else:
        assert srv.stop() == 0, srv.logs()
        backup = srv.data_dir.parent / f"{srv.data_dir.name}-backup.redb"
        shutil.copyfile(srv.data_dir / "convo.redb", backup)
        assert holds(backup.read_bytes(), a)  # the copy holds A's conversations (ids and keys are in clear)
        assert not holds(backup.read_bytes(), canary)
        srv.start()
        assert api.erase_user(a)["conversationsDeleted"] == 2
        api.wait_queues_idle()
        assert srv.stop() == 0, srv.logs()
        shutil.copyfile(backup, srv.data_dir / "convo.redb")
        srv.start()
    return ctx


def test_a_backup_restored_after_an_erasure_reads_as_erased(make_server):
    """Crypto-shredding: A's key is destroyed first, so A's items put back
    from a backup taken before the erasure are ciphertext nobody can open.
    Through the API they read as missing (the conversation, its messages,
    its context) and are left out of every list; no answer holds the canary;
    B reads exactly as before; a repeated erasure removes what came back."""
    srv = make_server()
    api = srv.client("alice")
    canary = new_canary()
    ctx = _erase_and_restore(srv, api, canary)
    a, a1, a2, b1 = ctx["a"], ctx["a1"], ctx["a2"], ctx["b1"]

    answers = []
    for cid in (a1, a2):
        for path in (f"/conversations/{cid}", f"/conversations/{cid}/messages", f"/conversations/{cid}/context"):
            status, _, body = api.get(path)
            answers.append(body)
            assert status == 404 and body["error"]["code"] == "conversation_not_found", (path, status, body)
    lists = [api.ok("GET", q) for q in (f"/conversations?userId={a}", "/conversations?limit=200",
                                        "/conversations?agentId=teddy&limit=200", "/conversations?status=ended",
                                        "/conversations?status=active", "/reviews?limit=200")]
    answers += lists
    assert lists[0] == {"conversations": [], "nextCursor": None}, lists[0]
    for page in lists:
        assert not {c["conversationId"] for c in page["conversations"]} & {a1, a2}, page
    assert b1 in {c["conversationId"] for c in lists[1]["conversations"]}
    assert all(not holds(json.dumps(x), canary) for x in answers), answers

    # B: exactly as before
    assert api.conversation(b1) == ctx["before_b"]["conversation"]
    assert api.all_messages(b1) == ctx["before_b"]["messages"]
    assert api.ok("GET", f"/conversations/{b1}/context") == ctx["before_b"]["context"]

    # A repeated erasure finishes the job: nothing of A is left.
    api.erase_user(a)
    assert api.ok("GET", f"/conversations?userId={a}")["conversations"] == []
    assert api.stats(a)["conversations"] == 0, api.stats(a)
    if STORE == "aws":
        left = [i for i in scan(ctx["stack"]["CONVO_TABLE"]) if any(n in repr(i) for n in (a, a1, a2))]
        assert left == [], [(i["pk"], i["sk"]) for i in left]
    assert api.conversation(b1) == ctx["before_b"]["conversation"]


def test_a_restored_active_conversation_is_not_handed_out_again(make_server):
    """After the restore, A's active conversation with the robot is back in
    the backup, with the (agent, user) pair that points at it. A returning
    user who asks for their active conversation (``reuseActive``) gets a new
    one (201) they can write to, not the erased one (which reads as missing)."""
    srv = make_server()
    api = srv.client("alice")
    canary = new_canary()
    ctx = _erase_and_restore(srv, api, canary)
    a, a1, a2 = ctx["a"], ctx["a1"], ctx["a2"]

    status, _, body = api.post("/conversations", {"userId": a, "agentId": "robot", "reuseActive": True})
    assert not holds(json.dumps(body), canary), body
    fresh = body.get("conversationId")
    assert (status, fresh not in (a1, a2)) == (201, True), (
        f"the erased conversation {a2} was handed out again: {status} {body}; "
        f"GET /conversations/{fresh} answers {api.get(f'/conversations/{fresh}')[0]}")
    api.append(fresh, ("user", "hello again"))
    assert [m["content"] for m in api.flush(fresh)][:-1] == ["hello again"]
    assert api.conversation(fresh)["messageCount"] == 2


# --------------------------------------------------------------------------
# 4. the embedded key file after an erasure


def _aad(owner: str, conversation: str, item: str, field: str) -> bytes:
    """The associated data of a sealed value (shared/domain/src/crypto.rs):
    ``convo/v1`` and each part length-prefixed (u32, big-endian)."""
    out = b"convo/v1"
    for part in (owner, conversation, item, field):
        raw = part.encode()
        out += struct.pack(">I", len(raw)) + raw
    return out


def unwrappable_keys(key_file: bytes, master_b64: str, owner: str, user: str) -> set[int]:
    """The ids of every data key of (owner, user) that some bytes of the
    key file unwrap under the master key. A stored key is its id (8 bytes,
    big-endian) and the key sealed for (owner, id, user, "data-key"):
    ``0x01 ‖ nonce (12) ‖ 32 bytes ‖ tag (16)`` (adapters/embedded/src/keys.rs);
    every offset is tried, whatever the file's layout."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    master = AESGCM(base64.b64decode(master_b64.strip()))
    found = set()
    i = key_file.find(b"\x01", 8)
    while i != -1 and i + 1 + 12 + 48 <= len(key_file):
        kid = int.from_bytes(key_file[i - 8:i], "big")
        try:
            master.decrypt(key_file[i + 1:i + 13], key_file[i + 13:i + 61], _aad(owner, str(kid), user, "data-key"))
            found.add(kid)
        except InvalidTag:
            pass
        i = key_file.find(b"\x01", i + 1)
    return found


@embedded_only
def test_an_erased_users_key_is_gone_from_the_key_file(make_server):
    """Crypto-shredding on the embedded store: once a user is erased, no
    byte of the key file unwraps their data key (with master-key beside it,
    such a copy would open every backup of convo.redb; the file is rewritten
    whole on every change, so no old copy of an entry survives in it). Eight users, each with a key, then
    three erased; after a clean stop every live user's key is found by the
    same search (it can see keys) and no erased user's is."""
    srv = make_server()
    api = srv.client("alice")
    users = [unique(f"kid{i}") for i in range(8)]
    for u in users:
        cid = api.create(u, "teddy")["conversationId"]
        api.append(cid, ("user", "hello"))
        api.flush(cid)
    erased = [users[i] for i in (0, 3, 6)]
    for u in erased:
        assert api.erase_user(u)["conversationsDeleted"] == 1
    assert srv.stop() == 0, srv.logs()

    keys = (srv.data_dir / "keys").read_bytes()
    master = (srv.data_dir / "master-key").read_text()
    live = {u: unwrappable_keys(keys, master, "alice", u) for u in users if u not in erased}
    assert all(len(ids) == 1 for ids in live.values()), live
    left = {u: ids for u in erased if (ids := unwrappable_keys(keys, master, "alice", u))}
    assert left == {}, f"the key file still unwraps the data keys of erased users {sorted(left)} (key ids {left})"
