"""The identity rule (issue 23): every spelling a user was created under
finds, lists, counts and erases them; two spellings of one E.164 number are
one user; bare digits are never a phone; NFC and NFD are one user; ids with
whitespace at their ends or control characters are refused."""

from __future__ import annotations

import unicodedata
import urllib.parse

from conftest import assert_error, unique

# One US number written the ways people write it: with + it is a phone.
SPELLINGS = [
    "+14155550101",
    "+1 415 555 0101",
    "+1 (415) 555-0101",
    "+1-415-555-0101",
    "+1.415.555.0101",
    "\uff0b14155550101",  # a fullwidth plus (NFKC makes it +)
    "\uff0b\uff11\uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff10\uff11",  # all fullwidth
]
# Without + the same digits are opaque ids, each its own user.
BARE = ["(415) 555-0101", "415-555-0101", "4155550101", "14155550101"]


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def listed(client, user_id: str) -> list[str]:
    return [c["conversationId"] for c in client.ok("GET", f"/conversations?userId={q(user_id)}")["conversations"]]


def ended(client, user_id, channel="web", agent="agent-1"):
    c = client.create(user_id, agent, channel=channel)
    client.append(c["conversationId"], ("user", "hello"))
    client.end(c["conversationId"])
    client.wait_status(c["conversationId"], "ended")
    return c


def test_every_spelling_of_a_phone_number_is_one_user(server):
    owner = server.client(unique("identity"))
    first = ended(owner, "+1 (415) 555-0101", channel="sms", agent="+1 415 555 0199")
    assert first["userId"] == "+14155550101"
    assert first["agentId"] == "+14155550199"
    # A web conversation created under another spelling is the same user.
    second = ended(owner, "\uff0b1 415 555 0101")
    assert second["userId"] == "+14155550101"
    both = sorted([first["conversationId"], second["conversationId"]])
    for spelling in SPELLINGS:
        assert sorted(listed(owner, spelling)) == both, spelling
        stats = owner.stats(spelling)
        assert stats["userId"] == "+14155550101", spelling
        assert stats["conversations"] == 2, spelling
    # The agent's number is found in any spelling too.
    by_agent = owner.ok("GET", f"/conversations?agentId={q('+1 (415) 555-0199')}")["conversations"]
    assert [c["conversationId"] for c in by_agent] == [first["conversationId"]]
    # Bare digits are other users, who have nothing.
    for bare in BARE:
        assert listed(owner, bare) == [], bare
    # Erased under a spelling it was never written in.
    erased = owner.erase_user("+1.415.555.0101", stored_as="+14155550101")
    assert erased["conversationsDeleted"] == 2
    for spelling in SPELLINGS:
        assert listed(owner, spelling) == [], spelling


def test_bare_digits_are_opaque_and_found_as_written(server):
    owner = server.client(unique("identity"))
    made = {bare: ended(owner, bare)["conversationId"] for bare in BARE}
    for bare, cid in made.items():
        assert owner.conversation(cid)["userId"] == bare
        assert listed(owner, bare) == [cid], bare
        assert owner.stats(bare)["conversations"] == 1
    # None of them is the phone number those digits would dial.
    assert listed(owner, "+14155550101") == []
    for bare in BARE:
        assert owner.erase_user(bare)["conversationsDeleted"] == 1, bare
        assert listed(owner, bare) == []


def test_nfc_and_nfd_are_one_user(server):
    owner = server.client(unique("identity"))
    nfd = unicodedata.normalize("NFD", "José-7")
    nfc = unicodedata.normalize("NFC", "José-7")
    assert nfd != nfc
    c = ended(owner, nfd)
    assert c["userId"] == nfc
    assert listed(owner, nfc) == [c["conversationId"]]
    assert listed(owner, nfd) == [c["conversationId"]]
    assert owner.stats(nfd)["conversations"] == 1
    assert owner.erase_user(nfd, stored_as=nfc)["conversationsDeleted"] == 1
    assert listed(owner, nfc) == []


def test_ids_that_break_the_rule_are_refused_and_change_nothing(server):
    owner = server.client(unique("identity"))
    for bad in [" child-1", "child-1 ", "child-1\u3000", "\tchild", "chi\u0007ld", "child-1\u200b", "\ufeffchild-1",
                "chi\u202eld"]:
        assert_error(owner.post("/conversations", {"userId": bad, "agentId": "a"}), 400, "validation_failed", "userId")
        assert_error(owner.get(f"/conversations?userId={q(bad)}"), 400, "validation_failed", "userId")
        assert_error(owner.get(f"/users/{q(bad)}/stats"), 400, "validation_failed", "userId")
        assert_error(owner.call("DELETE", f"/users/{q(bad)}"), 400, "validation_failed", "userId")
    for bad in ["+1 555", "+hello", "\uff0b12"]:
        assert_error(owner.post("/conversations", {"userId": bad, "agentId": "a"}), 400, "invalid_phone_number", "userId")
        assert_error(owner.get(f"/users/{q(bad)}/stats"), 400, "invalid_phone_number", "userId")
    assert_error(owner.post("/conversations", {"userId": "u", "agentId": "+1 12"}), 400, "invalid_phone_number", "agentId")
    # An SMS conversation needs international numbers: a national one says so.
    err = assert_error(
        owner.post("/conversations", {"userId": "(415) 555-0101", "agentId": "+14155550199", "channel": "sms"}),
        400, "invalid_phone_number", "userId",
    )
    assert "international" in err["message"]
    assert owner.ok("GET", "/conversations")["conversations"] == []
