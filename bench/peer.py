"""The peer design for the benchmarks: LangChain's DynamoDBChatMessageHistory.

It keeps a whole conversation in one DynamoDB item (hash key `SessionId`,
attribute `History`, the list of message dicts), and every `add_messages`
is a GetItem of that item followed by an UpdateItem `SET History = :h` with
the whole list: the item, and so each append's and each read's bytes, grow
with the conversation, concurrent writers lose each other's messages (last
writer wins), and appends fail once the item nears DynamoDB's 400 KB limit.

Runs against a DynamoDB endpoint (moto in the benchmarks), with the
`.venv-bench` venv (bench/requirements.txt). Subcommands:

  cost         one conversation grown through the given lengths; one JSONL
               line per logical operation (append, tail read) with its time
               and every DynamoDB request and response as sent on the wire.
  concurrency  writers appending to one conversation at once; counts what
               was stored against what was sent.

Message texts appear only in the JSONL (inside the captured wire bodies).
"""
import argparse
import itertools
import json
import sys
import threading
import time
import uuid

import boto3
from botocore.exceptions import ClientError
from langchain_community.chat_message_histories import DynamoDBChatMessageHistory
from langchain_core.messages import AIMessage, HumanMessage

REGION = "us-east-1"
TAIL = 20  # messages a tail read returns, as a chat UI's last page would


def boto_session():
    """A boto3 session with moto's dummy credentials (no profile lookup)."""
    return boto3.Session(
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name=REGION,
    )


def ensure_table(session, endpoint, table):
    """Creates the peer's on-demand table (hash key SessionId) if missing."""
    client = session.client("dynamodb", endpoint_url=endpoint)
    try:
        client.create_table(
            TableName=table,
            AttributeDefinitions=[{"AttributeName": "SessionId", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "SessionId", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceInUseException":
            raise
    client.get_waiter("table_exists").wait(
        TableName=table, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )


def history(session, endpoint, table, session_id):
    return DynamoDBChatMessageHistory(
        table_name=table,
        session_id=session_id,
        endpoint_url=endpoint,
        boto3_session=session,
    )


def error_text(exc):
    return f"{type(exc).__name__}: {exc}"


class Capture:
    """Records every DynamoDB request a client makes, with botocore's event
    hooks: `before-call` carries the serialised request (its `body` is the
    JSON sent on the wire) and `after-call` the HTTP response (also emitted
    for error responses, before botocore raises). Raw bytes are kept and
    parsed only in `take`, outside the timed section. One entry per API
    call: botocore's retries of a call, if any, happen inside it."""

    def __init__(self, client):
        self._calls = []
        events = client.meta.events
        events.register("before-call.dynamodb", self._before)
        events.register("after-call.dynamodb", self._after)

    def _before(self, model, params, **_):
        self._calls.append({"op": model.name, "request": params.get("body", b""), "response": None})

    def _after(self, http_response, **_):
        self._calls[-1]["response"] = http_response.content

    def take(self):
        """The requests recorded since the last `take`, parsed."""
        calls, self._calls = self._calls, []
        return [
            {
                "op": c["op"],
                "request": _parse(c["request"]),
                "response": _parse(c["response"]),
                "response_bytes": len(c["response"]) if c["response"] is not None else 0,
            }
            for c in calls
        ]


def _parse(body):
    # A missing response (the call failed before one arrived) is null.
    if body is None or body == b"":
        return None
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8")
    return json.loads(body)


def timed(fn):
    """Runs fn; returns (result, ms, error text or None)."""
    start = time.perf_counter()
    try:
        result, error = fn(), None
    except Exception as e:  # recorded in the JSONL, not raised
        result, error = None, error_text(e)
    return result, (time.perf_counter() - start) * 1000.0, error


def cmd_cost(args):
    lengths = sorted({int(n) for n in args.lengths.split(",") if n.strip()})
    if not lengths or lengths[0] <= 0:
        sys.exit("--lengths: positive message counts, comma-separated")
    with open(args.exchanges, encoding="utf-8") as f:
        exchanges = json.load(f)
    if not exchanges:
        sys.exit("--exchanges: the file holds no exchange")

    session = boto_session()
    ensure_table(session, args.endpoint, args.table)
    # A fresh conversation per run, so reruns on one table do not collide.
    hist = history(session, args.endpoint, args.table, f"cost-{uuid.uuid4()}")
    capture = Capture(hist.table.meta.client)

    target = lengths[-1]
    pending = list(lengths)  # lengths not yet reached
    stored = 0
    appends = tails = 0
    failure = None
    started = time.perf_counter()

    with open(args.out, "w", encoding="utf-8") as out:

        def emit(record):
            out.write(json.dumps(record, separators=(",", ":")) + "\n")

        # Exchanges are reused in order if the file has fewer than needed.
        for user, assistant in itertools.cycle(exchanges):
            if stored >= target:
                break
            pair = [HumanMessage(content=user), AIMessage(content=assistant)]
            _, ms, err = timed(lambda: hist.add_messages(pair))
            emit({
                "system": "peer",
                "kind": "append",
                "messages_before": stored,
                "messages": len(pair),
                "ms": ms,
                "requests": capture.take(),
                "error": err,
            })
            appends += 1
            if err is not None:
                failure = err
                break
            stored += len(pair)

            # Every length reached (or stepped over by this append) gets its
            # tail reads now.
            while pending and stored >= pending[0]:
                pending.pop(0)
                for _ in range(args.tail_reads):
                    tail, ms, err = timed(lambda: hist.messages[-TAIL:])
                    emit({
                        "system": "peer",
                        "kind": "tail",
                        "messages_before": stored,
                        "returned": len(tail) if tail is not None else 0,
                        "ms": ms,
                        "requests": capture.take(),
                        "error": err,
                    })
                    tails += 1

        # What the table really holds (a failed UpdateItem must have left the
        # item as it was); this read is not a measured operation.
        final = len(hist.messages)
        capture.take()
        emit({"system": "peer", "kind": "end", "stored": final, "unreached": pending})

    print(
        f"peer cost: {appends} appends, {tails} tail reads, {final} messages stored, "
        f"unreached {pending}, {time.perf_counter() - started:.1f} s"
        + (f"; append failed at {stored} messages: {failure}" if failure else ""),
        file=sys.stderr,
    )


def cmd_concurrency(args):
    setup = boto_session()
    ensure_table(setup, args.endpoint, args.table)
    session_id = f"concurrency-{uuid.uuid4()}"
    barrier = threading.Barrier(args.writers)
    errors = [0] * args.writers

    def writer(w):
        # Each writer is its own process as far as DynamoDB can tell: its own
        # boto3 session, client and connection pool.
        hist = history(boto_session(), args.endpoint, args.table, session_id)
        barrier.wait()
        for i in range(args.appends):
            try:
                hist.add_message(HumanMessage(content=f"writer {w} message {i}"))
            except Exception:
                errors[w] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(args.writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started

    stored = len(history(setup, args.endpoint, args.table, session_id).messages)
    sent = args.writers * args.appends
    result = {
        "system": "peer",
        "writers": args.writers,
        "appends_per_writer": args.appends,
        "sent": sent,
        "stored": stored,
        "errors": sum(errors),
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, separators=(",", ":"))
        f.write("\n")
    print(
        f"peer concurrency: {sent} sent, {stored} stored ({sent - stored} lost), "
        f"{sum(errors)} errors, {elapsed:.1f} s",
        file=sys.stderr,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--endpoint", required=True, help="DynamoDB endpoint, e.g. http://127.0.0.1:5000")
        p.add_argument("--table", default="peer-history", help="table name (created on demand if missing)")
        p.add_argument("--out", required=True, help="output file")

    cost = sub.add_parser("cost", help="append and tail-read cost by conversation length (JSONL)")
    common(cost)
    cost.add_argument("--exchanges", required=True, help="JSON list of [user_text, assistant_text]")
    cost.add_argument("--lengths", default="10,100,1000,10000", help="message counts, comma-separated")
    cost.add_argument("--tail-reads", type=int, default=10, help="tail reads at each length")
    cost.set_defaults(run=cmd_cost)

    conc = sub.add_parser("concurrency", help="concurrent writers on one conversation (JSON)")
    common(conc)
    conc.add_argument("--writers", type=int, default=8)
    conc.add_argument("--appends", type=int, default=50, help="appends per writer")
    conc.set_defaults(run=cmd_concurrency)

    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
