"""schemathesis hooks for tests/api/run: the rules of convo's API that a
schema cannot state. Each hook changes only the generated *valid* requests
(negative ones are left as drawn), and each is listed with its reason in
schemathesis.toml."""

import unicodedata
import urllib.parse
from datetime import datetime, timedelta, timezone

import schemathesis


def _positive(case) -> bool:
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


@schemathesis.hook
def map_case(context, case):
    if not _positive(case):
        return case
    # A cursor is an opaque token the API signed for one list: only a
    # nextCursor it returned is valid (any other is a 400 invalid_cursor,
    # which tests/e2e checks). A drawn string is never one, so valid
    # requests are sent without it.
    if isinstance(case.query, dict):
        case.query.pop("cursor", None)
    # A message's createdAt may lie at most 5 minutes ahead of the server's
    # clock, a rule about the present: drawn times after now are moved into
    # the past by as much as they were ahead.
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        now = datetime.now(timezone.utc)
        for message in body["messages"]:
            if not isinstance(message, dict) or not isinstance(message.get("createdAt"), str):
                continue
            try:
                at = datetime.fromisoformat(message["createdAt"].replace("z", "Z"))
            except ValueError:
                continue
            if at.tzinfo is None:
                continue
            if at > now:
                try:
                    message["createdAt"] = (now - min(at - now, timedelta(days=3650))).isoformat()
                except OverflowError:
                    message["createdAt"] = now.isoformat()
    # The identity rule: a user or agent id that starts with + (after
    # NFKC) is a phone number and must be a valid one (a 400
    # invalid_phone_number otherwise, which tests/e2e/test_identity.py
    # checks); an SMS conversation's ids must be phone numbers. A pattern
    # cannot say which digits make a valid number, so valid requests carry
    # a real one there.
    for container in (case.query, case.path_parameters, body):
        if not isinstance(container, dict):
            continue
        for key in ("userId", "agentId"):
            value = container.get(key)
            # Path parameters arrive percent-encoded ("%2B…").
            if container is case.path_parameters and isinstance(value, str):
                value = urllib.parse.unquote(value)
            if isinstance(value, str) and unicodedata.normalize("NFKC", value).startswith("+"):
                container[key] = PHONE[key]
    if isinstance(body, dict) and isinstance(body.get("channel"), str) and body["channel"].lower() == "sms":
        body["userId"], body["agentId"] = PHONE["userId"], PHONE["agentId"]
    return case


PHONE = {"userId": "+14155550101", "agentId": "+14155550199"}
