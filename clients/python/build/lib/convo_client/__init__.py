"""convo-client: the Python client for convo, the conversation store behind
AI agents. `ConvoClient` and `AsyncConvoClient` speak its HTTP API; the
framework adapters live in `convo_client.langchain` (extra `langchain`) and
`convo_client.openai_agents` (extra `openai-agents`); `convo_client.models`
types the bodies (TypedDicts)."""

from . import models
from .client import AsyncConvoClient, ConvoClient
from .errors import (
    Conflict,
    ConvoError,
    ConvoUnavailable,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)

__all__ = [
    "AsyncConvoClient",
    "Conflict",
    "ConvoClient",
    "ConvoError",
    "ConvoUnavailable",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Unauthorized",
    "models",
]
