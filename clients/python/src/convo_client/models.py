"""The API's bodies as typed dictionaries (`typing.TypedDict`): what the
client's methods return and take, field for field as the OpenAPI document
(`GET /openapi.json`) names them. They are plain dicts at run time."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

Role = Literal["user", "assistant", "system", "tool"]


class ToolCall(TypedDict):
    id: str
    name: str
    arguments: str


class _NewMessageRequired(TypedDict):
    role: Role


class NewMessage(_NewMessageRequired, total=False):
    """A message to append: `content`, or `toolCalls` on an assistant message."""

    content: str
    createdAt: str
    externalId: str
    direction: Literal["inbound", "outbound"]
    audioUrl: str
    metadata: dict[str, Any]
    toolCalls: list[ToolCall]
    toolCallId: str


class SafetyFinding(TypedDict, total=False):
    """One category a screening stage found in a message."""

    category: str
    stage: Literal["wordlist", "detector", "learned", "conversation"]
    severity: Literal["low", "medium", "high", "critical"]
    probability: float


class SafetyVerdict(TypedDict, total=False):
    score: float
    action: Literal["safe", "flagged", "blocked"]
    categories: list[str]
    severity: Literal["low", "medium", "high", "critical"]
    reason: str
    findings: list[SafetyFinding]
    model: str


class Message(TypedDict, total=False):
    messageId: str
    conversationId: str
    messageIndex: int
    role: Role
    content: str
    createdAt: str
    acceptedAt: str
    externalId: str | None
    direction: str | None
    audioUrl: str | None
    flagged: bool
    blocked: bool
    flagReason: str | None
    safety: SafetyVerdict
    metadata: dict[str, Any]
    toolCalls: list[ToolCall]
    toolCallId: str


class Conversation(TypedDict, total=False):
    conversationId: str
    ownerId: str
    status: Literal["active", "ended", "archived"]
    type: str
    channel: str
    userId: str
    userName: str | None
    agentId: str
    agentName: str | None
    createdAt: str
    startTime: str
    lastActivityAt: str
    endTime: str | None
    durationSeconds: int | None
    durationMinutes: int | None
    title: str | None
    titleSource: str | None
    titleGeneratedAt: str | None
    messageCount: int
    firstMessagePreview: str | None
    lastMessagePreview: str | None
    flagged: bool
    flagType: str | None
    flagReason: str | None
    severity: str | None
    flagStatus: str | None
    flaggedAt: str | None
    reviewedBy: str | None
    reviewedAt: str | None
    reviewNote: str | None
    metadata: dict[str, Any]
    archivedAt: str | None
    redactPii: bool
    expiresAt: str | None


class ConversationPage(TypedDict):
    conversations: list[Conversation]
    nextCursor: str | None


class MessagePage(TypedDict, total=False):
    conversationId: str
    messages: list[Message]
    nextCursor: str | None
    after: Literal["applied", "pending"]


class AcceptedMessage(TypedDict, total=False):
    messageId: str
    role: Role
    externalId: str
    safety: SafetyVerdict


class AppendResponse(TypedDict):
    conversationId: str
    commandId: str
    acceptedAt: str
    messages: list[AcceptedMessage]
    blocked: bool


class EndResponse(TypedDict):
    conversationId: str
    commandId: str
    acceptedAt: str
    status: str


class ContextMessage(TypedDict, total=False):
    role: Role
    content: str
    toolCalls: list[ToolCall]
    toolCallId: str


class ContextResponse(TypedDict, total=False):
    conversationId: str
    messages: list[ContextMessage]
    tokens: int
    after: Literal["applied", "pending"]


class UserContextMessage(ContextMessage, total=False):
    conversationId: str


class UserContextResponse(TypedDict, total=False):
    userId: str
    agentId: str
    messages: list[UserContextMessage]
    conversations: list[str]
    tokens: int
    after: Literal["applied", "pending"]


class RemoveMessageResponse(TypedDict):
    conversationId: str
    commandId: str
    acceptedAt: str
    message: Message


class ClearMessagesResponse(TypedDict):
    conversationId: str
    commandId: str
    acceptedAt: str


class UserExportPage(TypedDict):
    userId: str
    conversations: list[Conversation]
    messages: list[Message]
    nextCursor: str | None


class UserStats(TypedDict, total=False):
    userId: str
    conversations: int
    messages: int
    totalSeconds: int
    lastConversationAt: str | None
