"""The learned safety stage end to end (issue 22): verdicts name the stage
that found each category and the model's version, a paraphrased self-harm
message reaches the review queue at critical, grooming built over turns that
are each safe alone flags the conversation, and owners' tuning files are
validated at start."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import BIN, unique


def finding(verdict, category):
    return next((f for f in verdict.get("findings", []) if f["category"] == category), None)


def test_the_answer_names_the_stage_and_the_model(api):
    cid = api.create(unique("kid"), "toy-1")["conversationId"]
    answer = api.append(
        cid,
        ("user", "I want to kill myself"),
        ("user", "nobody would even notice if i was gone for good"),
        ("user", "Can you tell me a story about a dragon who loves to bake cookies?"),
    )
    listed, paraphrase, story = (m["safety"] for m in answer["messages"])
    # The word list knows the first; the learned stage finds the paraphrase.
    assert finding(listed, "self_harm")["stage"] == "wordlist", listed
    assert listed["severity"] == "critical" and listed["action"] == "flagged"
    f = finding(paraphrase, "self_harm")
    assert f is not None and f["stage"] == "learned", paraphrase
    assert 0.0 < f["probability"] <= 1.0
    assert paraphrase["model"] == "convo-safety-3"
    # Self-harm is flagged at critical, never blocked: the agent must answer.
    assert (paraphrase["action"], paraphrase["severity"]) == ("flagged", "critical")
    assert story == {"score": 1.0, "action": "safe"}, story


def test_paraphrased_self_harm_reaches_the_review_queue_at_critical(api):
    cid = api.create(unique("kid"), "toy-1")["conversationId"]
    api.append(
        cid,
        ("user", "nobody would even notice if i was gone for good"),
        ("assistant", "I'm really glad you told me. You matter, and a grown-up you trust can help right now."),
    )
    api.flush(cid)
    c = api.conversation(cid)
    assert (c["flagged"], c["flagType"], c["severity"], c["flagStatus"]) == (True, "self_harm", "critical", "unreviewed")
    queue = api.ok("GET", "/reviews?status=unreviewed&limit=200")["conversations"]
    assert cid in [q["conversationId"] for q in queue]
    flagged = api.ok("GET", f"/conversations/{cid}/messages?flagged=true")["messages"]
    assert [m["messageIndex"] for m in flagged] == [0]
    assert finding(flagged[0]["safety"], "self_harm")["stage"] == "learned"


def test_a_conversation_is_summarised_by_its_most_severe_category(api):
    cid = api.create(unique("kid"), "toy-1")["conversationId"]
    api.append(cid, ("user", "you are so stupid and ugly, loser"))
    api.append(cid, ("user", "I want to kill myself"))
    api.flush(cid)
    c = api.conversation(cid)
    # Not "bullying · critical": the critical message's category leads.
    assert (c["flagType"], c["severity"]) == ("self_harm", "critical"), c


GROOMING = [
    ("user", "you seem really mature for your age, not like other kids"),
    ("assistant", "Thanks! Do you want to hear a story?"),
    ("user", "this is just between us ok, you don't need to tell your parents we talk"),
    ("assistant", "Let's talk about dinosaurs!"),
    ("user", "do your mom and dad check your tablet at night?"),
    ("assistant", "What is your favourite dinosaur?"),
    ("user", "what do you look like? you could show me sometime"),
    ("assistant", "I like the T. rex best."),
    ("user", "we could talk on snapchat instead, it's more private there"),
    ("assistant", "Stegosaurus had plates on its back."),
    ("user", "what school do you go to? maybe i could come and see you"),
]


def test_grooming_built_over_turns_each_safe_alone_flags_the_conversation(make_server, tmp_path):
    # Each of these turns is flagged alone by default. An owner's
    # safety.json turns the message-level findings of the grooming-related
    # categories off (threshold 1), so that every turn is safe alone and
    # only the conversation stage can catch the whole.
    rules = tmp_path / "moderation"
    rules.mkdir()
    (rules / "safety.json").write_text(json.dumps({
        "thresholds": {"grooming": 1, "sexual_minors": 1, "personal_data": 1, "sexual": 1},
    }))
    server = make_server("--moderation-dir", str(rules))
    api = server.client("alice")
    cid = api.create(unique("kid"), "toy-1")["conversationId"]
    for turn in GROOMING:
        verdict = api.append(cid, turn)["messages"][0]["safety"]
        assert verdict["action"] == "safe", (turn, verdict)
    api.flush(cid)
    c = api.conversation(cid)
    assert (c["flagged"], c["flagType"], c["severity"]) == (True, "grooming", "high"), c
    assert "conversation" in c["flagReason"]
    flagged = api.ok("GET", f"/conversations/{cid}/messages?flagged=true")["messages"]
    assert len(flagged) == 1, flagged
    tipping = finding(flagged[0]["safety"], "grooming")
    assert tipping["stage"] == "conversation" and tipping["probability"] >= 1.5
    queue = api.ok("GET", "/reviews?limit=200")["conversations"]
    assert cid in [q["conversationId"] for q in queue]

    # A harmless chat of as many turns on the same server stays unflagged.
    calm = api.create(unique("kid"), "toy-2")["conversationId"]
    for i in range(len(GROOMING)):
        api.append(calm, ("user" if i % 2 == 0 else "assistant", f"Tell me about planet number {i}, please!"))
    api.flush(calm)
    assert api.conversation(calm)["flagged"] is False


@pytest.mark.parametrize("files, expected", [
    ({"safety.json": '{"thresholds": {"groming": 0.5}}'}, 'no category named "groming"'),
    ({"safety.json": '{"thresholds": {"hate": 2}}'}, "must be above 0 and at most 1"),
    ({"exemplars/violance.txt": "x\n"}, 'no category named "violance"'),
])
def test_a_bad_tuning_file_stops_the_start_with_a_clear_error(tmp_path, files, expected):
    rules = tmp_path / "moderation"
    for name, body in files.items():
        (rules / name).parent.mkdir(parents=True, exist_ok=True)
        (rules / name).write_text(body)
    out = subprocess.run(
        [BIN, "serve", "--addr", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"), "--moderation-dir", str(rules)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert out.returncode != 0
    assert expected in out.stderr, out.stderr
