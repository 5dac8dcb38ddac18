"""The Python client (clients/python, `convo-client`) against the real server:
every route, typed errors, pages past 1,000 messages, a retry after a lost
answer that stores once, read-your-writes, tool calls, and token budgets
checked against tiktoken's own count."""

from __future__ import annotations

import asyncio
import glob
import hashlib
import http.client
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest
from conftest import make_jwt, unique

from convo_client import AsyncConvoClient, ConvoClient, InvalidRequest, NotFound


@pytest.fixture
def convo(server):
    client = ConvoClient(server.base_url, make_jwt(server.secret(), sub=unique("owner")), backoff=0.05)
    yield client
    client.close()


def test_every_route_through_the_client(server, convo):
    user = unique("child")
    created = convo.create_conversation(user, "toy-1", user_name="Mia", metadata={"lang": "en"})
    cid = created["conversationId"]
    assert convo.find_or_create(user, "toy-1")["conversationId"] == cid
    accepted = convo.append(cid, [{"role": "user", "content": "hi there"},
                                  {"role": "assistant", "content": "Hello!"}])
    assert accepted["commandId"] and len(accepted["messages"]) == 2
    # Read your writes: the client passes after= on its next read.
    assert convo.get_conversation(cid)["messageCount"] == 2
    assert [m["content"] for m in convo.list_messages(cid)["messages"]] == ["hi there", "Hello!"]
    assert [m["content"] for m in convo.context(cid, max_messages=1)["messages"]] == ["Hello!"]
    assert convo.update_conversation(cid, title="Greetings")["title"] == "Greetings"
    convo.append(cid, [{"role": "user", "content": "this is shit"}])
    convo.end(cid)
    assert convo.get_conversation(cid)["status"] == "ended"
    assert [c["conversationId"] for c in convo.iter_conversations(user_id=user)] == [cid]
    assert [c["conversationId"] for c in convo.iter_conversations(status="ended", limit=1)] == [cid]
    reviews = convo.list_reviews()["conversations"]
    assert [c["conversationId"] for c in reviews] == [cid]
    assert convo.review(cid, "dismissed", "a joke")["flagStatus"] == "dismissed"
    assert convo.user_stats(user)["conversations"] == 1
    assert convo.health()["status"] == "healthy"
    assert convo.delete_conversation(cid) == {"conversationId": cid, "deleted": True}
    with pytest.raises(NotFound) as missing:
        convo.get_conversation(cid)
    assert missing.value.code == "conversation_not_found" and missing.value.trace_id
    erased = convo.delete_user(user)
    assert (erased["status"], erased["outcome"], erased["conversationsDeleted"]) == ("done", "nothing_held", 0)
    assert convo.get_erasure(erased["erasureId"]) == erased
    running = convo.delete_user(user, wait=False)
    assert running["status"] == "running" and running["userId"] == user
    with pytest.raises(NotFound) as no_erasure:
        convo.get_erasure("01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert no_erasure.value.code == "erasure_not_found"
    with pytest.raises(InvalidRequest) as bad:
        convo.context(cid, max_age="forever")
    assert (bad.value.status, bad.value.code, bad.value.field) == (400, "validation_failed", "maxAge")


def test_pages_past_a_thousand_messages(convo):
    cid = convo.create_conversation(unique("child"), "toy-1")["conversationId"]
    total = 1010
    for start in range(0, total, 20):
        convo.append(cid, [{"role": "user", "content": f"m{i}"} for i in range(start, min(start + 20, total))])
    got = [m["content"] for m in convo.iter_messages(cid, limit=200)]
    assert got == [f"m{i}" for i in range(total)]
    newest = [m["messageIndex"] for m in convo.iter_messages(cid, order="desc", limit=150)]
    assert newest == list(range(total - 1, -1, -1))


class _DropFirstAnswer:
    """An HTTP proxy in front of the server that forwards every request and
    loses the answer of the first append: the write is made, the client
    never hears of it."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.dropped = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                conn = http.client.HTTPConnection(host, int(port), timeout=15)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if self.command == "POST" and self.path.endswith("/messages") and proxy.dropped == 0:
                    proxy.dropped += 1
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _any

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_a_retry_after_a_lost_answer_is_stored_once(server):
    proxy = _DropFirstAnswer(server.base_url)
    try:
        token = make_jwt(server.secret(), sub=unique("owner"))
        with ConvoClient(proxy.url, token, backoff=0.05) as convo:
            cid = convo.create_conversation(unique("child"), "toy-1")["conversationId"]
            answer = convo.append(cid, [{"role": "user", "content": "only once"}])
            assert proxy.dropped == 1
            stored = list(convo.iter_messages(cid))
            assert [m["content"] for m in stored] == ["only once"]
            assert stored[0]["messageId"] == answer["messages"][0]["messageId"]
    finally:
        proxy.close()


def test_messages_are_removed_behind_the_writes_before_them(convo):
    cid = convo.create_conversation(unique("child"), "toy-1")["conversationId"]
    first = convo.append(cid, [{"role": "user", "content": "keep"}, {"role": "assistant", "content": "drop me"}])
    # Right behind the append: the client's after= lets the server find it.
    removed = convo.delete_message(cid, first["messages"][1]["messageId"])
    assert removed["message"]["content"] == "drop me"
    assert [m["content"] for m in convo.iter_messages(cid)] == ["keep"]
    with pytest.raises(NotFound) as gone:
        convo.delete_message(cid, first["messages"][1]["messageId"])
    assert gone.value.code == "message_not_found"
    convo.append(cid, [{"role": "user", "content": "in flight"}])
    convo.clear_messages(cid)
    convo.append(cid, [{"role": "user", "content": "after the clear"}])
    assert [m["content"] for m in convo.iter_messages(cid)] == ["after the clear"]
    assert convo.get_conversation(cid)["status"] == "active"


def test_back_to_back_turns_see_every_earlier_turn(convo):
    cid = convo.create_conversation(unique("child"), "toy-1")["conversationId"]
    for turn in range(8):
        convo.append(cid, [{"role": "user", "content": f"q{turn}"}, {"role": "assistant", "content": f"a{turn}"}])
        seen = [m["content"] for m in convo.context(cid, max_messages=200)["messages"]]
        assert seen == [x for t in range(turn + 1) for x in (f"q{t}", f"a{t}")]


def test_the_async_client_reads_its_writes(server):
    async def run():
        async with AsyncConvoClient(server.base_url, make_jwt(server.secret(), sub=unique("owner"))) as convo:
            cid = (await convo.create_conversation(unique("child"), "toy-1"))["conversationId"]
            for i in range(3):
                await convo.append(cid, [{"role": "user", "content": f"m{i}"}])
                ctx = await convo.context(cid)
                assert [m["content"] for m in ctx["messages"]] == [f"m{j}" for j in range(i + 1)]
            return [m["content"] async for m in convo.iter_messages(cid, limit=2)]

    assert asyncio.run(run()) == ["m0", "m1", "m2"]


def test_tool_calls_round_trip(convo):
    cid = convo.create_conversation(unique("child"), "toy-1")["conversationId"]
    calls = [{"id": "call_1", "name": "weather", "arguments": '{"city": "Paris"}'}]
    convo.append(cid, [{"role": "user", "content": "weather?"}, {"role": "assistant", "toolCalls": calls},
                       {"role": "tool", "toolCallId": "call_1", "content": "18C"}])
    stored = convo.list_messages(cid)["messages"]
    assert stored[1]["toolCalls"] == calls and stored[1]["content"] == ""
    assert stored[2]["toolCallId"] == "call_1"
    ctx = convo.context(cid)["messages"]
    assert ctx == [{"role": "user", "content": "weather?"},
                   {"role": "assistant", "content": "", "toolCalls": calls},
                   {"role": "tool", "content": "18C", "toolCallId": "call_1"}]
    # The result without its call is never sent.
    assert convo.context(cid, max_messages=1)["messages"] == []


def _tiktoken(name: str):
    """tiktoken (Python) loading the BPE file that tiktoken-rs bundles (the
    same bytes, checked by hash), through tiktoken's cache directory: it
    cannot download here."""
    import tiktoken
    import tiktoken_ext.openai_public  # noqa: F401  (registers the encodings)

    cache = Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"convo-tiktoken-{os.getpid()}"
    cache.mkdir(exist_ok=True)
    url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    target = cache / hashlib.sha1(url.encode()).hexdigest()
    if not target.exists():
        cargo = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
        found = sorted(glob.glob(str(cargo / "registry" / "src" / "*" / "tiktoken-rs-*" / "assets" / f"{name}.tiktoken")))
        if not found:
            pytest.fail("tiktoken-rs's BPE files are not in the cargo registry (cargo build fetches them)")
        shutil.copy(found[-1], target)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    return tiktoken.get_encoding(name)


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_token_budgets_match_tiktokens_count(convo, name):
    enc = _tiktoken(name)

    def cost(m):
        n = 3 + len(enc.encode_ordinary(m["role"])) + len(enc.encode_ordinary(m["content"]))
        for call in m.get("toolCalls", []):
            n += len(enc.encode_ordinary(call["name"])) + len(enc.encode_ordinary(call["arguments"])) + 1
        if m.get("toolCallId"):
            n += len(enc.encode_ordinary(m["toolCallId"]))
        return n

    cid = convo.create_conversation(unique("child"), "toy-1")["conversationId"]
    texts = ["Bonjour! Ça va? 🌋", "Tell me about volcanoes, please.", "日本の火山はいくつありますか", "<|endoftext|> is just text",
             "Magma rises through cracks in the crust and erupts as lava. " * 6, "ok"]
    convo.append(cid, [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)])
    full = convo.context(cid, max_messages=200)["messages"]
    costs = [cost(m) for m in full]
    total = 3 + sum(costs)
    for budget in [3, 3 + costs[-1], total - 1, total, total + 100, total // 2]:
        used, keep = 3, 0
        for c in reversed(costs):
            if used + c > budget:
                break
            used, keep = used + c, keep + 1
        got = convo.context(cid, max_tokens=budget, tokenizer=name)
        assert got["messages"] == full[len(full) - keep:], budget
        assert got["tokens"] == used, budget


def test_the_examples_run(server):
    import importlib.util
    import sys

    root = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples"

    def load(name):
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    token = make_jwt(server.secret(), sub=unique("demo"))
    answers = load("langchain_history").main(server.base_url, token, unique("child"))
    assert answers == ["Answer 1", "Answer 2", "Answer 3"]
    answers = asyncio.run(load("openai_agents_session").main(server.base_url, token, unique("child")))
    assert answers == ["I remember 0 earlier items.", "I remember 2 earlier items.", "I remember 4 earlier items."]
