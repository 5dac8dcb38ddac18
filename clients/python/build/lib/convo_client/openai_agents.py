"""An OpenAI Agents SDK session on convo: the SDK's `Session` protocol.

```python
from agents import Agent, Runner
from convo_client import AsyncConvoClient
from convo_client.openai_agents import ConvoSession

client = AsyncConvoClient("http://127.0.0.1:3000", token)
session = ConvoSession(client=client, user_id="child-42", agent_id="teddy-7")
result = await Runner.run(agent, "Tell me a story", session=session)
```

Each input item is one convo message: a `message` item under its role
(`developer` as `system`), a `function_call` as an assistant message with
one tool call, a `function_call_output` as a tool message answering it;
any other item type (reasoning, hosted tool calls) as an assistant message
whose content names the type. Every item reads back exactly as it was
added: the parts convo's fields do not hold ride in the message's
metadata. Blocked messages are not read back: a model must not answer
them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ._convert import extra_of, with_extra
from .client import AsyncConvoClient
from .errors import NotFound

ADAPTER = "openai-agents"
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def to_convo(item: dict[str, Any]) -> dict[str, Any]:
    """One input item as convo's append takes it."""
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message" and item.get("role") in _ROLES:
        content = item.get("content")
        shape = copy.deepcopy(item)
        if isinstance(content, str):
            text, slot = content, "content"
            shape["content"] = None
        else:
            texts = [i for i, part in enumerate(content or []) if isinstance(part, dict)
                     and isinstance(part.get("text"), str)]
            if len(texts) == 1:
                slot = texts[0]
                text = content[slot]["text"]
                shape["content"][slot]["text"] = None
            else:
                slot = None
                text = "\n".join(content[i]["text"] for i in texts)
        message = {"role": _ROLES[item["role"]], "content": text if text.strip() else f"[{kind}]"}
        extra: dict[str, Any] = {"item": shape, "slot": slot}
        if not text.strip() and slot is not None:
            # convo takes no blank content: the text rides along as it was.
            extra.update(slot="blank", text=text, at=slot)
        return with_extra(message, ADAPTER, extra)
    if kind == "function_call":
        shape = {k: v for k, v in item.items() if k not in ("call_id", "name", "arguments")}
        message = {"role": "assistant", "content": "",
                   "toolCalls": [{"id": item["call_id"], "name": item["name"], "arguments": item["arguments"]}]}
        return with_extra(message, ADAPTER, {"item": shape, "slot": "call"})
    if kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
        shape = {k: v for k, v in item.items() if k not in ("call_id", "output")}
        message = {"role": "tool", "toolCallId": item["call_id"], "content": text if text.strip() else "[empty]"}
        slot = "output" if isinstance(output, str) and text.strip() else None
        if slot is None:
            shape["output"] = output
        shape["call_id"] = None
        return with_extra(message, ADAPTER, {"item": shape, "slot": slot})
    # Any other item: kept whole; its content names its type.
    return with_extra({"role": "assistant", "content": f"[{kind}]"}, ADAPTER, {"item": item, "slot": None})


def from_convo(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the input item it was added as."""
    extra = extra_of(stored, ADAPTER)
    shape = extra.get("item")
    if not isinstance(shape, dict):
        # A message written by something else: an easy input message.
        return {"role": stored["role"], "content": stored.get("content", "")}
    item = copy.deepcopy(shape)
    slot = extra.get("slot")
    text = stored.get("content", "")
    if slot == "content":
        item["content"] = text
    elif slot == "blank":
        if extra.get("at") == "content":
            item["content"] = extra.get("text", "")
        else:
            item["content"][extra["at"]]["text"] = extra.get("text", "")
    elif isinstance(slot, int):
        item["content"][slot]["text"] = text
    elif slot == "call":
        call = stored["toolCalls"][0]
        item.update({"call_id": call["id"], "name": call["name"], "arguments": call["arguments"]})
    elif slot == "output":
        item["output"] = text
    if item.get("type") == "function_call_output":
        item["call_id"] = stored.get("toolCallId")
    return item


class ConvoSession:
    """A session kept by convo: one conversation per session.

    Give ``conversation_id``, or ``user_id`` and ``agent_id`` for the pair's
    active conversation (created on first use; ``create_fields`` go to the
    creation). ``session_id`` is the conversation id once known.
    """

    def __init__(self, conversation_id: str | None = None, client: AsyncConvoClient | None = None, *,
                 user_id: str | None = None, agent_id: str | None = None, **create_fields: Any) -> None:
        if client is None:
            raise ValueError("give an AsyncConvoClient (client=)")
        if conversation_id is None and (user_id is None or agent_id is None):
            raise ValueError("give conversation_id, or user_id and agent_id")
        self.client = client
        self._conversation_id = conversation_id
        self._pair = (user_id, agent_id)
        self._create_fields = create_fields
        self.session_settings = None

    @property
    def session_id(self) -> str:
        return self._conversation_id or f"pending:{self._pair[1]}:{self._pair[0]}"

    async def conversation_id(self) -> str:
        if self._conversation_id is None:
            user_id, agent_id = self._pair
            created = await self.client.find_or_create(user_id, agent_id, **self._create_fields)
            self._conversation_id = created["conversationId"]
        return self._conversation_id

    async def get_items(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The items in chronological order; with ``limit``, the latest that many."""
        cid = await self.conversation_id()
        if limit is None:
            return [from_convo(m) async for m in self.client.iter_messages(cid, limit=200)
                    if not m.get("blocked")]
        if limit <= 0:
            return []
        newest = []
        async for m in self.client.iter_messages(cid, order="desc", limit=min(limit, 200)):
            if not m.get("blocked"):
                newest.append(from_convo(m))
            if len(newest) == limit:
                break
        newest.reverse()
        return newest

    async def add_items(self, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        wire = [to_convo(dict(i)) for i in items]
        cid = await self.conversation_id()
        for start in range(0, len(wire), 20):
            await self.client.append(cid, wire[start:start + 20])

    async def pop_item(self) -> dict[str, Any] | None:
        """Removes the most recent item and returns it (None when there is none)."""
        cid = await self.conversation_id()
        async for m in self.client.iter_messages(cid, order="desc", limit=20):
            if m.get("blocked"):
                continue
            try:
                removed = (await self.client.delete_message(cid, m["messageId"]))["message"]
            except NotFound:
                # A retry whose first try was applied: it is gone already.
                removed = m
            return from_convo(removed)
        return None

    async def clear_session(self) -> None:
        """Removes every item; the conversation stays."""
        await self.client.clear_messages(await self.conversation_id())
