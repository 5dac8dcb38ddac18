"""A user's context across conversations (issue 25, part 1): the SMS flow of
seed 001, where the next text after the 30-minute idle end starts a new
conversation and the agent must still see the morning's; over HTTP and
through the Python client."""

from __future__ import annotations

import urllib.parse

import pytest

from conftest import make_jwt, unique

from convo_client import ConvoClient, InvalidRequest


def test_the_afternoon_sees_the_morning(api, bob):
    # The seed's SMS agent and a texter (ids of their own per run: the
    # shared server keeps state).
    user, agent = unique("texter"), unique("sms-agent")
    morning = api.create(user, agent)["conversationId"]
    api.append(morning, ("user", "my swimming lesson is at 4"), ("assistant", "Good luck!"))
    api.end(morning)
    api.wait_status(morning, "ended")
    afternoon = api.create(user, agent)["conversationId"]
    accepted = api.append(afternoon, ("user", "back home"))
    other = api.create(user, unique("other-agent"))["conversationId"]
    api.append(other, ("user", "unrelated"))
    api.wait_count(other, 1)

    q = urllib.parse.urlencode({"agentId": agent, "maxAge": "24h", "after": accepted["commandId"]})
    status, headers, ctx = api.get(f"/users/{urllib.parse.quote(user)}/context?{q}")
    assert status == 200, ctx
    assert headers.get("x-convo-after") == "applied"
    assert ctx["userId"] == user and ctx["agentId"] == agent
    assert [(m["conversationId"], m["role"], m["content"]) for m in ctx["messages"]] == [
        (morning, "user", "my swimming lesson is at 4"),
        (morning, "assistant", "Good luck!"),
        (afternoon, "user", "back home"),
    ]
    assert ctx["conversations"] == [morning, afternoon]

    # A token budget keeps the newest whole messages that fit.
    q = urllib.parse.urlencode({"agentId": agent, "maxTokens": 20})
    small = api.ok("GET", f"/users/{urllib.parse.quote(user)}/context?{q}")
    assert 0 < small["tokens"] <= 20
    assert small["messages"][-1]["content"] == "back home"
    assert len(small["messages"]) < 3

    # Bad bounds are refused with the documented error, naming the parameter.
    status, _, err = api.get(f"/users/{urllib.parse.quote(user)}/context?maxMessages=0")
    assert status == 400 and err["error"]["details"]["field"] == "maxMessages", err
    # Another owner sees nothing of this user.
    assert bob.ok("GET", f"/users/{urllib.parse.quote(user)}/context")["messages"] == []


def test_the_client_reads_a_users_context(server):
    owner = unique("owner")
    with ConvoClient(server.base_url, make_jwt(server.secret(), sub=owner), backoff=0.05) as convo:
        user, agent = unique("child"), unique("toy")
        first = convo.create_conversation(user, agent)["conversationId"]
        convo.append(first, [{"role": "user", "content": "I got a puppy called Biscuit"}])
        convo.end(first)
        second = convo.create_conversation(user, agent)["conversationId"]
        accepted = convo.append(second, [{"role": "user", "content": "Biscuit chewed my shoe"}])
        ctx = convo.user_context(user, agent_id=agent, after=accepted["commandId"])
        assert [m["content"] for m in ctx["messages"]] == [
            "I got a puppy called Biscuit", "Biscuit chewed my shoe"]
        assert [m["conversationId"] for m in ctx["messages"]] == [first, second]
        with pytest.raises(InvalidRequest) as refused:
            convo.user_context(user, max_age="forever")
        assert refused.value.field == "maxAge"
