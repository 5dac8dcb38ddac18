"""`ConvoChatMessageHistory` (convo_client.langchain) against the real
server: every message type reads back exactly, sync and async, and a
`RunnableWithMessageHistory` over 10 turns hands its model the whole
history every turn."""

from __future__ import annotations

import asyncio

import pytest
from conftest import make_jwt, unique
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from convo_client import AsyncConvoClient, ConvoClient
from convo_client.langchain import ConvoChatMessageHistory


@pytest.fixture
def convo(server):
    client = ConvoClient(server.base_url, make_jwt(server.secret(), sub=unique("owner")))
    yield client
    client.close()


def every_kind():
    return [
        SystemMessage(content="You are Teddy, a friendly bear."),
        HumanMessage(content="What's the weather in Paris?"),
        AIMessage(content="", tool_calls=[{"name": "weather", "args": {"city": "Paris", "days": 2}, "id": "call_1"}]),
        ToolMessage(content="18C and sunny", tool_call_id="call_1"),
        AIMessage(content="It is 18C and sunny in Paris.", id="run-42", name="teddy",
                  additional_kwargs={"refusal": None}, response_metadata={"model_name": "fake"}),
        HumanMessage(content=[{"type": "text", "text": "and tomorrow?"}]),
        AIMessage(content="Also sunny.", tool_calls=[{"name": "weather", "args": {}, "id": None}]),
        AIMessage(content="", additional_kwargs={"function_call": {"name": "f", "arguments": "{}"}}),
        HumanMessage(content="  "),
    ]


def test_every_message_type_reads_back_exactly(convo):
    history = ConvoChatMessageHistory(client=convo, user_id=unique("child"), agent_id="teddy")
    assert isinstance(history, BaseChatMessageHistory)
    written = every_kind()
    history.add_messages(written)
    assert history.messages == written
    # Another history of the same pair reads the same conversation.
    again = ConvoChatMessageHistory(client=convo, user_id=history._pair[0], agent_id="teddy")
    assert again.conversation_id == history.conversation_id and again.messages == written
    # convo holds the tool calls as its own fields.
    stored = convo.list_messages(history.conversation_id)["messages"]
    assert stored[2]["toolCalls"] == [{"id": "call_1", "name": "weather", "arguments": '{"city":"Paris","days":2}'}]
    assert stored[3]["toolCallId"] == "call_1"


def test_a_streamed_answer_is_stored_as_the_message_it_adds_up_to(convo):
    history = ConvoChatMessageHistory(client=convo, user_id=unique("child"), agent_id="teddy")
    history.add_messages([HumanMessage(content="hi"), AIMessageChunk(content="Hel") + AIMessageChunk(content="lo!")])
    got = history.messages
    assert [(type(m), m.content) for m in got] == [(HumanMessage, "hi"), (AIMessage, "Hello!")]


def test_more_than_one_append_and_clear(convo):
    history = ConvoChatMessageHistory(client=convo, user_id=unique("child"), agent_id="teddy")
    many = [HumanMessage(content=f"m{i}") if i % 2 == 0 else AIMessage(content=f"m{i}") for i in range(45)]
    history.add_messages(many)
    assert history.messages == many
    cid = history.conversation_id
    # Cleared behind the appends in flight, and only those: the conversation stays.
    history.add_user_message("still on the queue")
    history.clear()
    history.add_user_message("fresh start")
    assert history.messages == [HumanMessage(content="fresh start")]
    assert history.conversation_id == cid
    assert convo.get_conversation(cid)["status"] == "active"


def test_the_async_methods(server):
    async def run():
        async with AsyncConvoClient(server.base_url, make_jwt(server.secret(), sub=unique("owner"))) as client:
            history = ConvoChatMessageHistory(async_client=client, user_id=unique("child"), agent_id="teddy")
            written = every_kind()
            await history.aadd_messages(written)
            assert await history.aget_messages() == written
            await history.aclear()
            return await history.aget_messages()

    assert asyncio.run(run()) == []


class RecordingModel(BaseChatModel):
    """A fake chat model: answers "reply N" and records what it was given."""

    seen: list = []

    @property
    def _llm_type(self) -> str:
        return "recording"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=f"reply {len(self.seen)}"))])


def test_runnable_with_message_history_sees_every_turn(convo):
    model = RecordingModel(seen=[])
    prompt = ChatPromptTemplate.from_messages([
        ("system", "You are Teddy."),
        MessagesPlaceholder("history"),
        ("human", "{question}"),
    ])
    user = unique("child")
    chain = RunnableWithMessageHistory(
        prompt | model,
        lambda session_id: ConvoChatMessageHistory(client=convo, user_id=session_id, agent_id="teddy"),
        input_messages_key="question",
        history_messages_key="history",
    )
    for turn in range(10):
        out = chain.invoke({"question": f"question {turn}"}, config={"configurable": {"session_id": user}})
        assert out.content == f"reply {turn + 1}"
        given = model.seen[-1]
        expected_history = [m for t in range(turn) for m in (HumanMessage(content=f"question {t}"),
                                                                AIMessage(content=f"reply {t + 1}"))]
        assert [(type(m), m.content) for m in given[1:-1]] == [(type(m), m.content) for m in expected_history]
        assert given[-1].content == f"question {turn}"
