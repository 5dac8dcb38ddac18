"""Durability across restarts of convo-local on the same data directory."""

from __future__ import annotations

import signal

import pytest

from conftest import STORE, Client, assert_error, make_jwt, unique, wait_until


def test_everything_survives_a_restart(make_server):
    srv = make_server()  # on disk, not --in-memory
    assert "JWT secret: generated" in srv.stdout()
    token = srv.token("alice")
    api = Client(srv.base_url, token)
    user = unique("kid")

    cid = api.create(user, "agent-r", metadata={"k": "v"})["conversationId"]
    exchanges = [("user", "Tell me about volcanoes and lava"), ("assistant", "Volcanoes erupt lava."),
                 ("user", "Do volcanoes sleep?"), ("assistant", "Some are dormant.")]
    for i in range(0, len(exchanges), 2):
        api.append(cid, exchanges[i], exchanges[i + 1])
    api.append(cid, {"role": "user", "content": "an sms", "externalId": "SM-9"})
    api.wait_count(cid, 5)
    api.end(cid)
    ended = api.wait_status(cid, "ended")
    titled = wait_until(lambda: (c := api.conversation(cid))["titleSource"] == "generated" and c,
                        what="a generated title")
    api.wait_queues_idle()
    other = api.create(user, "agent-r2", reuseActive=True)["conversationId"]  # left active

    before = {
        "conv": api.conversation(cid),
        "messages": api.all_messages(cid),
        "stats": api.stats(user),
        "list": api.ok("GET", f"/conversations?userId={user}"),
        "other": api.conversation(other),
    }
    assert before["conv"]["title"] == titled["title"] and ended["endTime"] == before["conv"]["endTime"]
    secret_before = srv.secret()

    # --- stop (SIGTERM) and start again on the same data dir --------------
    assert srv.stop() == 0, f"convo-local did not exit cleanly on SIGTERM\n{srv.logs()}"
    srv.start()
    assert "JWT secret: data directory" in srv.stdout()
    assert srv.secret() == secret_before

    # the very same token still works: the secret persisted
    assert api.conversation(cid) == before["conv"]
    assert api.all_messages(cid) == before["messages"]
    assert api.stats(user) == before["stats"]
    assert api.ok("GET", f"/conversations?userId={user}") == before["list"]
    assert api.conversation(other) == before["other"]
    conv = before["conv"]
    assert conv["status"] == "ended" and conv["titleSource"] == "generated" and conv["messageCount"] == 5
    assert before["stats"]["conversations"] == 1 and before["stats"]["messages"] == 5

    # a token minted after the restart works too, another owner's does not see alice's data
    assert Client(srv.base_url, srv.token("alice")).conversation(cid) == before["conv"]
    assert_error(Client(srv.base_url, srv.token("bob")).get(f"/conversations/{cid}"), 404,
                 "conversation_not_found")

    # state that lives in indexes survived as well
    assert api.create(user, "agent-r2", reuseActive=True, expect=200)["conversationId"] == other
    assert_error(api.post(f"/conversations/{cid}/messages", {"messages": [{"role": "user", "content": "x"}]}),
                 409, "conversation_ended")
    # an externalId stored before the restart is still recognised
    api.append(other, {"role": "user", "content": "first", "externalId": "SM-1"})
    api.wait_count(other, 1)
    srv.stop()
    srv.start()
    api.append(other, {"role": "user", "content": "first", "externalId": "SM-1"})
    assert [m["externalId"] for m in api.flush(other)] == ["SM-1", None]
    api.end(other)
    api.wait_status(other, "ended")

    # and the restarted server keeps working
    new = api.create(user, "agent-r3")["conversationId"]
    api.append(new, ("user", "after the restart"))
    assert api.wait_count(new, 1)["lastMessagePreview"] == "after the restart"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_accepted_writes_survive_an_immediate_stop(make_server, sig):
    """A 202 means the write is durable: stopping right after it (gracefully
    or not) loses nothing, and the restarted server applies it exactly once."""
    srv = make_server()
    api = Client(srv.base_url, srv.token("alice"))
    user = unique("kid")
    cid = api.create(user, "agent-q")["conversationId"]

    # many accepted writes, then stop at once
    expected = []
    for i in range(15):
        ex = [("user", f"question {i} about sharks"), ("assistant", f"answer {i}")]
        api.append(cid, *ex)
        expected += ex
    api.end(cid)
    srv.stop(sig)

    srv.start()
    if STORE == "aws" and sig == signal.SIGKILL:
        # Records the killed server held come back after their visibility
        # timeout, and moto hands a FIFO group's last record out first then
        # (SQS keeps the order), so here only "nothing lost, nothing
        # doubled" can be asserted, not the order against the end.
        conv = wait_until(lambda: (c := api.conversation(cid))["messageCount"] == 30 and c["status"] == "ended"
                          and c, timeout=20, what="all 30 messages and the end")
        stored = api.all_messages(cid)
        assert sorted((m["role"], m["content"]) for m in stored) == sorted(expected)
    else:
        conv = api.wait_status(cid, "ended", timeout=15)
        assert conv["messageCount"] == 30
        stored = api.all_messages(cid)
        assert [(m["role"], m["content"]) for m in stored] == expected
    assert [m["messageIndex"] for m in stored] == list(range(30))
    assert len({m["messageId"] for m in stored}) == 30
    stats = wait_until(lambda: (s := api.stats(user))["conversations"] == 1 and s, what="stats")
    assert stats["messages"] == 30
    assert stats["totalSeconds"] == conv["durationSeconds"]
    api.wait_queues_idle()
    comps = {c["name"]: c for c in api.health()["components"]}
    assert comps["writesQueue"]["deadLetters"] == 0


def test_idempotency_keys_survive_a_restart(make_server):
    srv = make_server()
    api = Client(srv.base_url, srv.token("alice"))
    cid = api.create()["conversationId"]
    body = {"messages": [{"role": "user", "content": "remember me"}]}
    key = {"Idempotency-Key": "restart-key"}
    s1, _, first = api.post(f"/conversations/{cid}/messages", body, headers=key)
    assert s1 == 202
    api.wait_count(cid, 1)
    srv.stop()
    srv.start()
    s2, _, replay = api.post(f"/conversations/{cid}/messages", body, headers=key)
    assert (s2, replay) == (202, first)
    assert_error(api.post(f"/conversations/{cid}/messages", {"messages": [{"role": "user", "content": "other"}]},
                          headers=key), 409, "idempotency_key_reused")
    msgs = api.flush(cid)
    assert [m["content"] for m in msgs[:-1]] == ["remember me"]


def test_in_memory_server_forgets_but_keeps_the_secret(make_server, tmp_path):
    """--in-memory keeps no conversations, but its JWT secret lives in the data dir."""
    if STORE == "aws":
        pytest.skip("--in-memory concerns the embedded store only")
    data = tmp_path / "mem"
    srv = make_server(data_dir=data, in_memory=True)
    api = Client(srv.base_url, srv.token("alice"))
    cid = api.create()["conversationId"]
    assert not (data / "convo.redb").exists()
    srv.stop()
    srv.start()
    assert_error(api.get(f"/conversations/{cid}"), 404, "conversation_not_found")


def test_jwt_secret_from_the_environment(make_server):
    """CONVO_JWT_SECRET overrides the stored secret: tokens signed with it
    (by the CLI or by anyone holding it) work, others do not."""
    secret = "e2e-secret-from-env"
    srv = make_server(env={"CONVO_JWT_SECRET": secret})
    assert "JWT secret: CONVO_JWT_SECRET" in srv.stdout()
    assert not (srv.data_dir / "jwt-secret").exists()
    ours = Client(srv.base_url, make_jwt(secret, "carol"))
    conv = ours.create()
    assert conv["ownerId"] == "carol"
    cli = Client(srv.base_url, srv.token("carol"))  # the CLI reads the same variable
    assert cli.conversation(conv["conversationId"]) == conv
    assert_error(Client(srv.base_url, make_jwt(secret, "carol", exp_offset=-120)).get("/conversations?userId=x"),
                 401, "unauthorized")
    assert_error(Client(srv.base_url, make_jwt("another-secret", "carol")).get("/conversations?userId=x"),
                 401, "unauthorized")
