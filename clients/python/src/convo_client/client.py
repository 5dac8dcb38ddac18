"""Sync and async clients for convo's HTTP API.

Both clients describe each route once (a `_Call`: method, path, query, body,
whether a retry is safe) and differ only in how they send it. A client:

- retries network errors, 5xx and 429 answers with exponential backoff and
  jitter, honouring ``Retry-After``; an append or an end carries an
  ``Idempotency-Key`` (the same on every retry), so a retried write is
  stored once;
- raises the typed exceptions of `convo_client.errors`;
- reads its own writes: it remembers the ``commandId`` of its last write to
  each conversation and passes ``after=`` on the next read of it, so the
  read holds that write (convo stores writes a moment after the 202).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from .errors import ConvoUnavailable, from_response
from .models import (
    AppendResponse,
    ClearMessagesResponse,
    ContextResponse,
    UserContextResponse,
    Conversation,
    ConversationPage,
    EndResponse,
    Message,
    MessagePage,
    NewMessage,
    RemoveMessageResponse,
    UserStats,
)

DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 3

Json = dict[str, Any]


@dataclass
class _Call:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    # A retry may repeat the call (a read, a delete, a write carrying an
    # Idempotency-Key).
    retry: bool = True
    # ... also after a request whose answer was lost (sent, maybe applied).
    retry_lost: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    # The conversation whose writes this call makes (its commandId is kept)
    # or reads (after= is passed).
    writes: str | None = None
    reads: str | None = None


def _query(**params: Any) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return out


def _seg(value: str) -> str:
    """One path segment, percent-encoded (`+1415…`, ids with spaces)."""
    return quote(value, safe="")


class _Routes:
    """Every route of the API, as calls; `after` holds read-your-writes."""

    def __init__(self) -> None:
        self._after: dict[str, str] = {}

    # -- conversations -----------------------------------------------------
    def _create(self, user_id: str, agent_id: str, **fields: Any) -> _Call:
        names = {"user_name": "userName", "agent_name": "agentName", "reuse_active": "reuseActive",
                 "retention_days": "retentionDays", "redact_pii": "redactPii", "type": "type",
                 "channel": "channel", "metadata": "metadata", "title": "title"}
        body = {"userId": user_id, "agentId": agent_id}
        for key, value in fields.items():
            if key not in names:
                raise TypeError(f"unknown field {key!r}")
            if value is not None:
                body[names[key]] = value
        # Without reuseActive a repeated create makes a second conversation.
        return _Call("POST", "/conversations", body=body, retry=bool(body.get("reuseActive")))

    def _get(self, cid: str) -> _Call:
        return _Call("GET", f"/conversations/{_seg(cid)}", reads=cid)

    def _list(self, user_id: str | None, agent_id: str | None, status: str | None, flagged: bool | None,
              limit: int | None, cursor: str | None) -> _Call:
        return _Call("GET", "/conversations", params=_query(userId=user_id, agentId=agent_id, status=status,
                                                           flagged=flagged, limit=limit, cursor=cursor))

    def _patch(self, cid: str, title: str | None, metadata: Json | None, status: str | None) -> _Call:
        body = {k: v for k, v in {"title": title, "metadata": metadata, "status": status}.items() if v is not None}
        return _Call("PATCH", f"/conversations/{_seg(cid)}", body=body)

    def _delete(self, cid: str) -> _Call:
        return _Call("DELETE", f"/conversations/{_seg(cid)}")

    def _end(self, cid: str, reason: str | None) -> _Call:
        return _Call("POST", f"/conversations/{_seg(cid)}/end", body={"reason": reason} if reason else {},
                     headers={"Idempotency-Key": str(uuid.uuid4())}, writes=cid)

    # -- messages ------------------------------------------------------------
    def _append(self, cid: str, messages: list[Json]) -> _Call:
        return _Call("POST", f"/conversations/{_seg(cid)}/messages", body={"messages": list(messages)},
                     headers={"Idempotency-Key": str(uuid.uuid4())}, writes=cid)

    def _messages(self, cid: str, limit: int | None, cursor: str | None, order: str | None, since: str | None,
                  until: str | None, flagged: bool | None) -> _Call:
        return _Call("GET", f"/conversations/{_seg(cid)}/messages", reads=cid,
                     params=_query(limit=limit, cursor=cursor, order=order, since=since, until=until,
                                   flagged=flagged))

    def _context(self, cid: str, max_messages: int | None, max_age: str | None, max_tokens: int | None,
                 tokenizer: str | None) -> _Call:
        return _Call("GET", f"/conversations/{_seg(cid)}/context", reads=cid,
                     params=_query(maxMessages=max_messages, maxAge=max_age, maxTokens=max_tokens,
                                   tokenizer=tokenizer))

    def _user_context(self, user_id: str, agent_id: str | None, max_messages: int | None, max_age: str | None,
                      max_tokens: int | None, tokenizer: str | None, after: str | None) -> _Call:
        return _Call("GET", f"/users/{_seg(user_id)}/context",
                     params=_query(agentId=agent_id, maxMessages=max_messages, maxAge=max_age,
                                   maxTokens=max_tokens, tokenizer=tokenizer, after=after))

    def _remove(self, cid: str, message_id: str) -> _Call:
        # Reads (after= finds a message this client just appended) and writes.
        return _Call("DELETE", f"/conversations/{_seg(cid)}/messages/{_seg(message_id)}", reads=cid, writes=cid)

    def _clear(self, cid: str) -> _Call:
        # A clear sent again after its answer was lost would also remove
        # what others appended in between: only refused ones are retried.
        return _Call("DELETE", f"/conversations/{_seg(cid)}/messages", writes=cid, retry_lost=False)

    # -- moderation and users --------------------------------------------------
    def _review(self, cid: str, flag_status: str, note: str | None) -> _Call:
        body = {"flagStatus": flag_status, **({"note": note} if note is not None else {})}
        return _Call("POST", f"/conversations/{_seg(cid)}/review", body=body)

    def _reviews(self, status: str | None, limit: int | None, cursor: str | None) -> _Call:
        return _Call("GET", "/reviews", params=_query(status=status, limit=limit, cursor=cursor))

    def _stats(self, user_id: str) -> _Call:
        return _Call("GET", f"/users/{_seg(user_id)}/stats")

    def _delete_user(self, user_id: str) -> _Call:
        return _Call("DELETE", f"/users/{_seg(user_id)}")

    def _erasure(self, erasure_id: str) -> _Call:
        return _Call("GET", f"/erasures/{_seg(erasure_id)}")

    def _export_page(self, user_id: str, cursor: str | None) -> _Call:
        return _Call("GET", f"/users/{_seg(user_id)}/export", params=_query(cursor=cursor))

    def _health(self) -> _Call:
        return _Call("GET", "/health")

    def _deep_health(self) -> _Call:
        return _Call("GET", "/health/deep")

    # -- shared by both senders -------------------------------------------------
    def _prepare(self, call: _Call) -> dict[str, Any]:
        params = dict(call.params)
        if call.reads and call.reads in self._after:
            params["after"] = self._after[call.reads]
        req: dict[str, Any] = {"params": params, "headers": call.headers}
        if call.body is not None:
            req["json"] = call.body
        return req

    def _finish(self, call: _Call, body: Any, headers: httpx.Headers | None = None) -> Any:
        if call.reads and headers is not None and headers.get("x-convo-after") == "pending":
            # The wait ran out (the write is far behind, or the head no
            # longer remembers it): asking again on every read would only
            # make each one wait as long.
            self._after.pop(call.reads, None)
        if call.writes and isinstance(body, dict) and isinstance(body.get("commandId"), str):
            self._after[call.writes] = body["commandId"]
        return body


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("retry-after")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _decode(resp: httpx.Response) -> Any:
    if not resp.content:
        return None
    try:
        return resp.json()
    except ValueError:
        return None


class _Policy:
    def __init__(self, retries: int, backoff: float, max_backoff: float) -> None:
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))

    @staticmethod
    def retryable(status: int, body: Any = None) -> bool:
        if status == 429 or status >= 500:
            return True
        # A removal behind a write not stored yet.
        err = body.get("error") if isinstance(body, dict) else None
        return status == 409 and isinstance(err, dict) and err.get("code") == "request_in_progress"


class ConvoClient(_Routes):
    """A synchronous client: ``ConvoClient("http://127.0.0.1:3000", token)``."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, backoff: float = 0.2, max_backoff: float = 5.0,
                 transport: httpx.BaseTransport | None = None, http: httpx.Client | None = None) -> None:
        super().__init__()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = http or httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self._policy = _Policy(retries, backoff, max_backoff)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConvoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, call: _Call) -> Any:
        attempt = 0
        while True:
            try:
                resp = self._http.request(call.method, call.path, **self._prepare(call))
            except httpx.TransportError as e:
                lost = not isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout))
                if not call.retry or (lost and not call.retry_lost) or attempt >= self._policy.retries:
                    raise ConvoUnavailable(0, "unreachable", str(e)) from e
                time.sleep(self._policy.delay(attempt, None))
                attempt += 1
                continue
            body = _decode(resp)
            if resp.status_code < 400:
                return self._finish(call, body, resp.headers)
            if call.retry and self._policy.retryable(resp.status_code, body) and attempt < self._policy.retries:
                time.sleep(self._policy.delay(attempt, _retry_after(resp)))
                attempt += 1
                continue
            raise from_response(resp.status_code, body, _retry_after(resp))

    def create_conversation(self, user_id: str, agent_id: str, **fields: Any) -> Conversation:
        """Creates a conversation; ``reuse_active=True`` returns the pair's active one instead."""
        return self._run(self._create(user_id, agent_id, **fields))

    def find_or_create(self, user_id: str, agent_id: str, **fields: Any) -> Conversation:
        """The active conversation of the (agent, user) pair, created when there is none."""
        return self._run(self._create(user_id, agent_id, reuse_active=True, **fields))

    def get_conversation(self, conversation_id: str) -> Conversation:
        return self._run(self._get(conversation_id))

    def list_conversations(self, *, user_id: str | None = None, agent_id: str | None = None,
                           status: str | None = None, flagged: bool | None = None, limit: int | None = None,
                           cursor: str | None = None) -> ConversationPage:
        return self._run(self._list(user_id, agent_id, status, flagged, limit, cursor))

    def iter_conversations(self, **filters: Any) -> Iterator[Conversation]:
        """Every conversation a listing holds, following its cursors."""
        cursor = None
        while True:
            page = self.list_conversations(cursor=cursor, **filters)
            yield from page["conversations"]
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def update_conversation(self, conversation_id: str, *, title: str | None = None,
                            metadata: Json | None = None, status: str | None = None) -> Conversation:
        return self._run(self._patch(conversation_id, title, metadata, status))

    def delete_conversation(self, conversation_id: str) -> Json:
        return self._run(self._delete(conversation_id))

    def end(self, conversation_id: str, reason: str | None = None) -> EndResponse:
        return self._run(self._end(conversation_id, reason))

    def append(self, conversation_id: str, messages: list[NewMessage] | list[Json]) -> AppendResponse:
        """Appends messages in the API's shape (``{"role", "content", …}``); 202, stored a moment later."""
        return self._run(self._append(conversation_id, messages))

    def list_messages(self, conversation_id: str, *, limit: int | None = None, cursor: str | None = None,
                      order: str | None = None, since: str | None = None, until: str | None = None,
                      flagged: bool | None = None) -> MessagePage:
        return self._run(self._messages(conversation_id, limit, cursor, order, since, until, flagged))

    def iter_messages(self, conversation_id: str, **params: Any) -> Iterator[Message]:
        """Every message, page by page, in index order (``order="desc"`` for newest first)."""
        cursor = None
        while True:
            page = self.list_messages(conversation_id, cursor=cursor, **params)
            yield from page["messages"]
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def context(self, conversation_id: str, *, max_messages: int | None = None, max_age: str | None = None,
                max_tokens: int | None = None, tokenizer: str | None = None) -> ContextResponse:
        return self._run(self._context(conversation_id, max_messages, max_age, max_tokens, tokenizer))

    def user_context(self, user_id: str, *, agent_id: str | None = None, max_messages: int | None = None,
                     max_age: str | None = None, max_tokens: int | None = None, tokenizer: str | None = None,
                     after: str | None = None) -> UserContextResponse:
        """A user's most recent messages across their conversations (with
        ``agent_id`` only, when given), oldest first, each with its
        ``conversationId``. ``after`` (a write's ``commandId``) waits for that
        write in the user's newest conversation."""
        return self._run(self._user_context(user_id, agent_id, max_messages, max_age, max_tokens, tokenizer, after))

    def delete_message(self, conversation_id: str, message_id: str) -> RemoveMessageResponse:
        """Removes one message (after this client's earlier writes); answers with the message as it was."""
        return self._run(self._remove(conversation_id, message_id))

    def clear_messages(self, conversation_id: str) -> ClearMessagesResponse:
        """Removes every message accepted before this call; the conversation stays."""
        return self._run(self._clear(conversation_id))

    def review(self, conversation_id: str, flag_status: str, note: str | None = None) -> Conversation:
        return self._run(self._review(conversation_id, flag_status, note))

    def list_reviews(self, *, status: str | None = None, limit: int | None = None,
                     cursor: str | None = None) -> ConversationPage:
        return self._run(self._reviews(status, limit, cursor))

    def user_stats(self, user_id: str) -> UserStats:
        return self._run(self._stats(user_id))

    def delete_user(self, user_id: str, *, wait: bool = True, timeout: float = 120.0,
                    poll_interval: float = 0.5) -> Json:
        """Erases everything held about a user. The user's data key is gone
        when this returns; the items are deleted by a job. With ``wait`` (the
        default) the job is followed until it is ``done`` and its final
        report returned (``{"erasureId", "status": "done", "outcome":
        "erased" | "nothing_held", "conversationsDeleted",
        "messagesDeleted", …}``); without, the running report at once
        (follow it with :meth:`get_erasure`). Raises ``TimeoutError`` if the
        job is still running after ``timeout`` seconds (it goes on)."""
        report = self._run(self._delete_user(user_id))
        deadline = time.monotonic() + timeout
        while wait and report["status"] != "done":
            if time.monotonic() > deadline:
                raise TimeoutError(f"the erasure {report['erasureId']} is still running")
            time.sleep(poll_interval)
            report = self.get_erasure(report["erasureId"])
        return report

    def get_erasure(self, erasure_id: str) -> Json:
        """An erasure's report (``GET /erasures/{erasureId}``)."""
        return self._run(self._erasure(erasure_id))

    def export_user(self, user_id: str) -> Iterator[Json]:
        """Everything held about a user, opened, as JSON-lines records:
        ``{"type": "conversation", "conversation": {...}}`` before the
        ``{"type": "message", "message": {...}}`` records of that
        conversation, oldest first, following the export's cursors."""
        cursor = None
        while True:
            page = self._run(self._export_page(user_id, cursor))
            yield from _export_records(page)
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def health(self) -> Json:
        """Liveness: ``{"status": "healthy", "timestamp": …}`` (no token needed)."""
        return self._run(self._health())

    def deep_health(self) -> Json:
        """The store's and the queues' state (the token's owner must be one
        of the deployment's operators, ``CONVO_OPERATORS``; 403 otherwise)."""
        return self._run(self._deep_health())


class AsyncConvoClient(_Routes):
    """The same client for asyncio: every method is a coroutine."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, backoff: float = 0.2, max_backoff: float = 5.0,
                 transport: httpx.AsyncBaseTransport | None = None, http: httpx.AsyncClient | None = None) -> None:
        super().__init__()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = http or httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout,
                                               transport=transport)
        self._policy = _Policy(retries, backoff, max_backoff)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncConvoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, call: _Call) -> Any:
        attempt = 0
        while True:
            try:
                resp = await self._http.request(call.method, call.path, **self._prepare(call))
            except httpx.TransportError as e:
                lost = not isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout))
                if not call.retry or (lost and not call.retry_lost) or attempt >= self._policy.retries:
                    raise ConvoUnavailable(0, "unreachable", str(e)) from e
                await asyncio.sleep(self._policy.delay(attempt, None))
                attempt += 1
                continue
            body = _decode(resp)
            if resp.status_code < 400:
                return self._finish(call, body, resp.headers)
            if call.retry and self._policy.retryable(resp.status_code, body) and attempt < self._policy.retries:
                await asyncio.sleep(self._policy.delay(attempt, _retry_after(resp)))
                attempt += 1
                continue
            raise from_response(resp.status_code, body, _retry_after(resp))

    async def create_conversation(self, user_id: str, agent_id: str, **fields: Any) -> Conversation:
        return await self._run(self._create(user_id, agent_id, **fields))

    async def find_or_create(self, user_id: str, agent_id: str, **fields: Any) -> Conversation:
        return await self._run(self._create(user_id, agent_id, reuse_active=True, **fields))

    async def get_conversation(self, conversation_id: str) -> Conversation:
        return await self._run(self._get(conversation_id))

    async def list_conversations(self, *, user_id: str | None = None, agent_id: str | None = None,
                                 status: str | None = None, flagged: bool | None = None,
                                 limit: int | None = None, cursor: str | None = None) -> ConversationPage:
        return await self._run(self._list(user_id, agent_id, status, flagged, limit, cursor))

    async def iter_conversations(self, **filters: Any) -> AsyncIterator[Conversation]:
        cursor = None
        while True:
            page = await self.list_conversations(cursor=cursor, **filters)
            for c in page["conversations"]:
                yield c
            cursor = page.get("nextCursor")
            if not cursor:
                return

    async def update_conversation(self, conversation_id: str, *, title: str | None = None,
                                  metadata: Json | None = None, status: str | None = None) -> Conversation:
        return await self._run(self._patch(conversation_id, title, metadata, status))

    async def delete_conversation(self, conversation_id: str) -> Json:
        return await self._run(self._delete(conversation_id))

    async def end(self, conversation_id: str, reason: str | None = None) -> EndResponse:
        return await self._run(self._end(conversation_id, reason))

    async def append(self, conversation_id: str, messages: list[NewMessage] | list[Json]) -> AppendResponse:
        return await self._run(self._append(conversation_id, messages))

    async def list_messages(self, conversation_id: str, *, limit: int | None = None, cursor: str | None = None,
                            order: str | None = None, since: str | None = None, until: str | None = None,
                            flagged: bool | None = None) -> MessagePage:
        return await self._run(self._messages(conversation_id, limit, cursor, order, since, until, flagged))

    async def iter_messages(self, conversation_id: str, **params: Any) -> AsyncIterator[Message]:
        cursor = None
        while True:
            page = await self.list_messages(conversation_id, cursor=cursor, **params)
            for m in page["messages"]:
                yield m
            cursor = page.get("nextCursor")
            if not cursor:
                return

    async def context(self, conversation_id: str, *, max_messages: int | None = None,
                      max_age: str | None = None, max_tokens: int | None = None,
                      tokenizer: str | None = None) -> ContextResponse:
        return await self._run(self._context(conversation_id, max_messages, max_age, max_tokens, tokenizer))

    async def user_context(self, user_id: str, *, agent_id: str | None = None, max_messages: int | None = None,
                           max_age: str | None = None, max_tokens: int | None = None,
                           tokenizer: str | None = None, after: str | None = None) -> UserContextResponse:
        """As :meth:`ConvoClient.user_context`."""
        return await self._run(
            self._user_context(user_id, agent_id, max_messages, max_age, max_tokens, tokenizer, after))

    async def delete_message(self, conversation_id: str, message_id: str) -> RemoveMessageResponse:
        return await self._run(self._remove(conversation_id, message_id))

    async def clear_messages(self, conversation_id: str) -> ClearMessagesResponse:
        return await self._run(self._clear(conversation_id))

    async def review(self, conversation_id: str, flag_status: str, note: str | None = None) -> Conversation:
        return await self._run(self._review(conversation_id, flag_status, note))

    async def list_reviews(self, *, status: str | None = None, limit: int | None = None,
                           cursor: str | None = None) -> ConversationPage:
        return await self._run(self._reviews(status, limit, cursor))

    async def user_stats(self, user_id: str) -> UserStats:
        return await self._run(self._stats(user_id))

    async def delete_user(self, user_id: str, *, wait: bool = True, timeout: float = 120.0,
                          poll_interval: float = 0.5) -> Json:
        """As :meth:`ConvoClient.delete_user`."""
        report = await self._run(self._delete_user(user_id))
        deadline = time.monotonic() + timeout
        while wait and report["status"] != "done":
            if time.monotonic() > deadline:
                raise TimeoutError(f"the erasure {report['erasureId']} is still running")
            await asyncio.sleep(poll_interval)
            report = await self.get_erasure(report["erasureId"])
        return report

    async def get_erasure(self, erasure_id: str) -> Json:
        return await self._run(self._erasure(erasure_id))

    async def export_user(self, user_id: str) -> AsyncIterator[Json]:
        """As :meth:`ConvoClient.export_user`."""
        cursor = None
        while True:
            page = await self._run(self._export_page(user_id, cursor))
            for record in _export_records(page):
                yield record
            cursor = page.get("nextCursor")
            if not cursor:
                return

    async def health(self) -> Json:
        """Liveness: ``{"status": "healthy", "timestamp": …}`` (no token needed)."""
        return await self._run(self._health())

    async def deep_health(self) -> Json:
        """The store's and the queues' state (an operator's token)."""
        return await self._run(self._deep_health())


def _export_records(page: Json) -> Iterator[Json]:
    """One export page as records: each conversation, then the page's
    messages (a conversation's messages may continue on the next pages)."""
    for c in page["conversations"]:
        yield {"type": "conversation", "conversation": c}
    for m in page["messages"]:
        yield {"type": "message", "message": m}
