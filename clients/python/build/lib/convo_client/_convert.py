"""Helpers shared by the framework adapters."""

from __future__ import annotations

import json
from typing import Any

# Where an adapter keeps, in a message's metadata, what convo's own fields
# do not hold (a framework's message id, extra keyword arguments…), so that
# a message reads back exactly as it was written.
ADAPTER_KEY = "x-adapter"


def arguments_text(args: Any) -> str:
    """Tool-call arguments as the JSON string convo stores."""
    return args if isinstance(args, str) else json.dumps(args, ensure_ascii=False, separators=(",", ":"))


def arguments_value(text: str) -> Any:
    """Tool-call arguments as a value, when the stored string is JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def extra_of(stored: dict[str, Any], adapter: str) -> dict[str, Any]:
    metadata = stored.get("metadata") or {}
    extra = metadata.get(ADAPTER_KEY)
    if isinstance(extra, dict) and extra.get("adapter") == adapter and isinstance(extra.get("data"), dict):
        return extra["data"]
    return {}


def with_extra(message: dict[str, Any], adapter: str, data: dict[str, Any]) -> dict[str, Any]:
    if data:
        message["metadata"] = {ADAPTER_KEY: {"adapter": adapter, "data": data}}
    return message
