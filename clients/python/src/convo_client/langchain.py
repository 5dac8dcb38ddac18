"""LangChain chat history on convo: a drop-in `BaseChatMessageHistory`.

```python
from convo_client import ConvoClient
from convo_client.langchain import ConvoChatMessageHistory

client = ConvoClient("http://127.0.0.1:3000", token)
history = ConvoChatMessageHistory(client=client, user_id="child-42", agent_id="teddy-7")
```

Human, AI (with `tool_calls`), System and Tool messages read back as they
were written: what convo's own fields do not hold (a message's `id`,
`name`, `additional_kwargs`, `response_metadata`, usage, non-text content
blocks) rides in the message's metadata. Blocked messages (the moderator's
verdict) are not read back: a model must not answer them. `clear()` removes
every message and keeps the conversation.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from ._convert import arguments_text, arguments_value, extra_of, with_extra
from .client import AsyncConvoClient, ConvoClient

ADAPTER = "langchain"
_ROLE = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
_TYPE = {v: k for k, v in _ROLE.items()}
# Fields convo holds itself, or that a message rebuilds by default.
_OWN = {"content", "type", "tool_calls", "tool_call_id"}
_DEFAULTS: dict[str, Any] = {"additional_kwargs": {}, "response_metadata": {}, "name": None, "id": None,
                             "invalid_tool_calls": [], "usage_metadata": None, "artifact": None,
                             "status": "success"}


def to_convo(message: BaseMessage) -> dict[str, Any]:
    """One LangChain message as convo's append takes it."""
    wire = message_to_dict(message)
    data = wire["data"]
    # A streamed message (`AIMessageChunk`, …) is stored as the message it
    # adds up to.
    kind = wire["type"].removesuffix("Chunk").lower().replace("message", "") or wire["type"]
    kind = {"": "ai"}.get(kind, kind)
    role = _ROLE.get(kind)
    if role is None and kind == "chat" and data.get("role") in _TYPE:
        role = data["role"]
    if role is None:
        raise ValueError(f"convo stores human, ai, system and tool messages, not {kind!r}")
    content = data.get("content")
    extra = {k: v for k, v in data.items() if k not in _OWN and _DEFAULTS.get(k, object()) != v}
    out: dict[str, Any] = {"role": role, "content": content if isinstance(content, str) else ""}
    if not isinstance(content, str):
        # Content blocks: their text is the content convo screens and
        # returns in a context; the blocks themselves ride along.
        extra["content"] = content
        texts = [b.get("text") if isinstance(b, dict) else b for b in content or []]
        out["content"] = "\n".join(t for t in texts if isinstance(t, str)) or "[non-text content]"
    calls = []
    unnamed = []
    for i, call in enumerate(data.get("tool_calls") or []):
        call_id = call.get("id")
        if not call_id:
            call_id = f"lc-{uuid.uuid4()}"
            unnamed.append(i)
        calls.append({"id": call_id, "name": call["name"], "arguments": arguments_text(call.get("args", {}))})
    if unnamed:
        extra["unnamedToolCalls"] = unnamed
    if calls:
        out["toolCalls"] = calls
    if data.get("tool_call_id"):
        out["toolCallId"] = data["tool_call_id"]
    if not out["content"].strip() and not calls:
        # convo takes no blank content: the text rides along as it was.
        extra["blankContent"] = out["content"]
        out["content"] = "[empty]"
    return with_extra(out, ADAPTER, extra)


def from_convo(stored: dict[str, Any]) -> BaseMessage:
    """A stored message (from `/messages`) as the LangChain message it was."""
    extra = dict(extra_of(stored, ADAPTER))
    unnamed = set(extra.pop("unnamedToolCalls", []))
    content = extra.pop("blankContent", stored.get("content", ""))
    data: dict[str, Any] = {"content": content, **extra}
    calls = stored.get("toolCalls") or []
    if calls:
        data["tool_calls"] = [
            {"name": c["name"], "args": arguments_value(c["arguments"]), "id": None if i in unnamed else c["id"],
             "type": "tool_call"}
            for i, c in enumerate(calls)
        ]
    if stored.get("toolCallId"):
        data["tool_call_id"] = stored["toolCallId"]
    kind = _TYPE[stored["role"]]
    return messages_from_dict([{"type": kind, "data": data}])[0]


class ConvoChatMessageHistory(BaseChatMessageHistory):
    """A LangChain chat history kept by convo: one conversation per history.

    Give ``conversation_id`` for an existing conversation, or ``user_id`` and
    ``agent_id`` to use the pair's active conversation, created on first use
    (``create_fields`` go to that creation: names, channel, metadata…).
    ``async_client`` serves the ``a*`` methods without a thread.
    """

    def __init__(self, conversation_id: str | None = None, client: ConvoClient | None = None, *,
                 user_id: str | None = None, agent_id: str | None = None,
                 async_client: AsyncConvoClient | None = None, **create_fields: Any) -> None:
        if client is None and async_client is None:
            raise ValueError("give a ConvoClient (client=) or an AsyncConvoClient (async_client=)")
        if conversation_id is None and (user_id is None or agent_id is None):
            raise ValueError("give conversation_id, or user_id and agent_id")
        self.client = client
        self.async_client = async_client
        self._conversation_id = conversation_id
        self._pair = (user_id, agent_id)
        self._create_fields = create_fields

    @property
    def conversation_id(self) -> str:
        if self._conversation_id is None:
            if self.client is None:
                raise RuntimeError("no conversation yet: use the a* methods with an async client")
            user_id, agent_id = self._pair
            self._conversation_id = self.client.find_or_create(user_id, agent_id, **self._create_fields)[
                "conversationId"]
        return self._conversation_id

    async def _aconversation_id(self) -> str:
        if self._conversation_id is None:
            if self.async_client is None:
                return self.conversation_id
            user_id, agent_id = self._pair
            created = await self.async_client.find_or_create(user_id, agent_id, **self._create_fields)
            self._conversation_id = created["conversationId"]
        return self._conversation_id

    def _sync(self) -> ConvoClient:
        if self.client is None:
            raise RuntimeError("this history has only an async client: use the a* methods")
        return self.client

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        cid = self.conversation_id
        return [from_convo(m) for m in self._sync().iter_messages(cid, limit=200) if not m.get("blocked")]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        wire = [to_convo(m) for m in messages]
        cid = self.conversation_id
        # convo takes up to 20 messages per append, in order.
        for start in range(0, len(wire), 20):
            self._sync().append(cid, wire[start:start + 20])

    def clear(self) -> None:
        """Removes every message; the conversation stays."""
        self._sync().clear_messages(self.conversation_id)

    async def aget_messages(self) -> list[BaseMessage]:
        if self.async_client is None:
            return await super().aget_messages()
        cid = await self._aconversation_id()
        return [from_convo(m) async for m in self.async_client.iter_messages(cid, limit=200) if not m.get("blocked")]

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        if self.async_client is None:
            return await super().aadd_messages(messages)
        wire = [to_convo(m) for m in messages]
        cid = await self._aconversation_id()
        for start in range(0, len(wire), 20):
            await self.async_client.append(cid, wire[start:start + 20])

    async def aclear(self) -> None:
        if self.async_client is None:
            return await super().aclear()
        await self.async_client.clear_messages(await self._aconversation_id())
