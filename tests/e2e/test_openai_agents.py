"""`ConvoSession` (convo_client.openai_agents) against the real server: items
read back exactly, `get_items(limit)` is the latest N in order, and
`Runner.run` with the session over 10 turns (one calling a tool) hands its
model the whole history every turn."""

from __future__ import annotations

import asyncio

import pytest
from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from conftest import make_jwt, unique
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from convo_client import AsyncConvoClient
from convo_client.openai_agents import ConvoSession


# Traces would go to OpenAI: nothing leaves this machine.
set_tracing_disabled(True)


def run(server, body):
    async def go():
        async with AsyncConvoClient(server.base_url, make_jwt(server.secret(), sub=unique("owner"))) as client:
            return await body(client)

    return asyncio.run(go())


ITEMS = [
    {"role": "user", "content": "hello"},
    {"role": "developer", "content": "Answer briefly."},
    {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
     "content": [{"type": "output_text", "text": "Hi! How can I help?", "annotations": [], "logprobs": []}]},
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather in Paris?"}]},
    {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "weather",
     "arguments": '{"city":"Paris"}', "status": "completed"},
    {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
    {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "also sunny"}]},
    {"id": "rs_1", "type": "reasoning", "summary": []},
    {"role": "user", "content": [{"type": "input_text", "text": "one"}, {"type": "input_text", "text": "two"}]},
    {"role": "user", "content": "  "},
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": " "}]},
]


def test_items_read_back_exactly(server):
    async def body(client):
        session = ConvoSession(client=client, user_id=unique("child"), agent_id="teddy")
        await session.add_items(ITEMS)
        assert await session.get_items() == ITEMS
        assert await session.get_items(limit=3) == ITEMS[-3:]
        assert await session.get_items(limit=5) == ITEMS[-5:]
        assert await session.get_items(limit=0) == []
        cid = await session.conversation_id()
        stored = [m async for m in client.iter_messages(cid)]
        assert stored[4]["toolCalls"] == [{"id": "call_1", "name": "weather", "arguments": '{"city":"Paris"}'}]
        assert stored[5]["role"] == "tool" and stored[5]["toolCallId"] == "call_1" and stored[5]["content"] == "18C"
        assert stored[1]["role"] == "system"
        # pop_item: the latest item, right behind the append that added it.
        await session.add_items([{"role": "user", "content": "undo me"}])
        assert await session.pop_item() == {"role": "user", "content": "undo me"}
        assert await session.pop_item() == ITEMS[-1]
        assert await session.get_items() == ITEMS[:-1]
        # clear_session: behind the appends in flight; the conversation stays.
        await session.add_items([{"role": "user", "content": "in flight"}])
        await session.clear_session()
        await session.add_items([{"role": "user", "content": "after"}])
        assert await session.get_items() == [{"role": "user", "content": "after"}]
        assert await session.conversation_id() == cid
        await session.clear_session()
        assert await session.pop_item() is None

    run(server, body)


class FakeModel(Model):
    """Answers "reply N", calls the weather tool when asked about the
    weather, and records the input of every call."""

    def __init__(self):
        self.inputs = []

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs,
                           tracing, *, previous_response_id=None, conversation_id=None, prompt=None):
        items = [input] if isinstance(input, str) else list(input)
        self.inputs.append(items)
        last = items[-1]
        n = len(self.inputs)
        if last.get("role") == "user" and "weather" in str(last.get("content")):
            out = [ResponseFunctionToolCall(id=f"fc_{n}", call_id=f"call_{n}", name="weather",
                                            arguments='{"city":"Paris"}', type="function_call", status="completed")]
        else:
            out = [ResponseOutputMessage(id=f"msg_{n}", role="assistant", status="completed", type="message",
                                         content=[ResponseOutputText(text=f"reply {n}", type="output_text",
                                                                     annotations=[])])]
        return ModelResponse(output=out, usage=Usage(), response_id=None)

    def stream_response(self, *args, **kwargs):
        raise NotImplementedError


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"18C in {city}"


def test_runner_with_a_session_sees_every_turn(server):
    async def body(client):
        model = FakeModel()
        agent = Agent(name="teddy", instructions="You are Teddy.", model=model, tools=[weather])
        session = ConvoSession(client=client, user_id=unique("child"), agent_id="teddy")
        history = []
        for turn in range(10):
            question = "what's the weather?" if turn == 4 else f"question {turn}"
            calls_before = len(model.inputs)
            result = await Runner.run(agent, question, session=session)
            first_input = model.inputs[calls_before]
            # The model got every earlier turn (as the items the session
            # stored), then this turn's question.
            assert first_input[:-1] == history, turn
            assert first_input[-1]["content"] == question
            history = await session.get_items()
            assert result.final_output.startswith("reply")
        kinds = [i.get("type", "message") for i in history]
        assert kinds.count("function_call") == 1 and kinds.count("function_call_output") == 1
        return history

    items = run(server, body)
    assert len(items) == 22  # 10 questions, 10 answers, one call and its output


def test_a_session_needs_a_conversation_or_a_pair():
    with pytest.raises(ValueError):
        ConvoSession(client=AsyncConvoClient("http://127.0.0.1:9"))
