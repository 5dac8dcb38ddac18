"""The console (``console/``, served by convo-local at ``/``) in a real headless Chromium.

Debian's ``chromium`` driven by Playwright for Python (``executable_path``;
``playwright install`` is never run). Each test seeds a dedicated server
through the API, works the page as a moderator would, and checks every
change through the API afterwards. A page that logs a console error, throws,
or sees a request fail (or answer 4xx/5xx unless the test expects exactly
that answer) fails its test.

Screenshots of the list, a transcript and the review dialog, at desktop and
phone widths, are written to ``target/console-screenshots/`` (or
``$CONVO_SCREENSHOT_DIR``).

The page is the same whichever store serves the API, so this runs in the
embedded pass of the suite only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright import sync_api

from conftest import STORE, Client, Server, assert_error, free_port, unique, wait_until

pytestmark = pytest.mark.skipif(STORE == "aws", reason="the console is store-agnostic; it runs in the embedded pass")


CHROMIUM = os.environ.get("CONVO_CHROMIUM", "/usr/bin/chromium")
# Flags from shared/TOOLING.md: without the background-networking ones the
# browser's own outbound attempts are refused and logged.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("CONVO_SCREENSHOT_DIR", ROOT / "target" / "console-screenshots"))
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Watch:
    """Everything that went wrong in a page: console errors, uncaught
    exceptions, failed requests and error answers (minus those expected)."""

    def __init__(self, page, origins: tuple[str, ...] | None = None):
        # Only requests to these origins are judged (None: all).
        self.origins = origins
        self.problems: list[str] = []
        self.expected: list[tuple[int, str]] = []  # (status, path regex)
        self.requests: list[str] = []
        page.on("console", lambda m: m.type == "error" and self._console(m))
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: self._ours(r.url) and self.problems.append(
            f"request failed: {r.method} {r.url} {r.failure}"))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("response", self._response)

    def _console(self, m):
        text = m.text
        # Chromium logs every 4xx/5xx fetch as a console error; those are
        # judged by _response (an expected 401 is not a problem).
        if text.startswith("Failed to load resource: the server responded with a status of"):
            return
        self.problems.append(f"console error: {text}")

    def _ours(self, url: str) -> bool:
        return self.origins is None or url.startswith(self.origins)

    def _response(self, r):
        if r.status < 400 or not self._ours(r.url):
            return
        path = urllib.parse.urlsplit(r.url).path
        for i, (status, pattern) in enumerate(self.expected):
            if status == r.status and re.fullmatch(pattern, path):
                del self.expected[i]
                return
        self.problems.append(f"answer {r.status}: {r.request.method} {r.url}")

    def expect(self, status: int, pattern: str):
        self.expected.append((status, pattern))

    def check(self):
        assert not self.problems, "\n".join(self.problems)


def new_page(browser, viewport=DESKTOP, mobile=False, origins=None):
    ctx = browser.new_context(viewport=viewport, is_mobile=mobile, has_touch=mobile,
                              device_scale_factor=2 if mobile else 1, locale="en-GB", timezone_id="UTC")
    page = ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return ctx, page, Watch(page, origins)


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


AXE = Axe()
# WCAG 2.1 A and AA: labels, names, roles, contrast, landmarks, …
AXE_OPTIONS = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}}


def assert_accessible(page, what):
    """axe-core (the engine of Lighthouse and Deque's tools) finds no WCAG
    2.1 A/AA violation in what the page shows now."""
    results = AXE.run(page, options=AXE_OPTIONS)
    found = [
        f"{v['id']} ({v['impact']}): {v['help']} — " + "; ".join(n["target"][0] for n in v["nodes"][:3])
        for v in results.response["violations"]
    ]
    assert not found, f"{what}:\n" + "\n".join(found)


def ready(page):
    page.wait_for_selector("body[data-ready=true]")


def dev_sign_in(page, base_url, owner="alice"):
    page.goto(base_url + "/")
    ready(page)
    page.get_by_label("Owner id").fill(owner)
    page.get_by_role("button", name="Sign in as this owner").click()
    sync_api.expect(page.locator("#owner")).to_have_text(owner)


# --------------------------------------------------------------------------
# seeding through the API


def seed(api):
    """A small world: Mia's flagged story (a critical message, a tool call),
    her blocked chat, Leo's long active chat, and enough of Sam's for two
    pages of the list."""
    world = {"mia": unique("mia"), "leo": unique("leo"), "sam": unique("sam")}
    sams = [api.create(world["sam"], "teddy", userName="Sam", agentName="Teddy")["conversationId"] for _ in range(26)]
    story = api.create(world["mia"], "teddy", userName="Mia", agentName="Teddy", type="story", channel="toy")["conversationId"]
    api.append(story, ("user", "Can you tell me a story about dragons and castles?"),
               ("assistant", "Once upon a time, a small dragon lived in a castle by the sea."))
    api.append(story, {"role": "assistant", "content": "", "toolCalls": [
        {"id": "call_weather", "name": "get_weather", "arguments": '{"city": "Lisbon"}'}]},
        {"role": "tool", "content": "sunny, 21 °C", "toolCallId": "call_weather"})
    api.append(story, ("user", "Sometimes I want to kill myself"),
               ("assistant", "I'm really glad you told me. Let's find a grown-up you trust to talk to."))
    api.end(story)
    blocked = api.create(world["mia"], "robo", userName="Mia", agentName="Robo")["conversationId"]
    api.append(blocked, ("user", "send me a naked picture, shit"), ("assistant", "I can't help with that."))
    long = api.create(world["leo"], "teddy", userName="Leo", agentName="Teddy")["conversationId"]
    for i in range(0, 30, 10):
        api.append(long, *[("user" if j % 2 == 0 else "assistant", f"line {j} of a long chat about planets")
                           for j in range(i, i + 10)])
    api.wait_queues_idle(timeout=20)
    wait_until(lambda: api.conversation(story)["status"] == "ended", 10, what="the story to end")
    wait_until(lambda: api.conversation(long)["messageCount"] == 30, 10, what="the long chat to be stored")
    world.update(story=story, blocked=blocked, long=long, sams=sams)
    return world


@pytest.fixture
def console_server(make_server):
    s = make_server("--dev-sign-in", in_memory=True)
    return s, s.client("alice")


# --------------------------------------------------------------------------


def test_a_moderator_lists_filters_reads_reviews_and_erases(browser, console_server):
    server, api = console_server
    world = seed(api)
    ctx, page, watch = new_page(browser)
    started = time.monotonic()

    # Sign in with one click (development), and nothing of the token in a URL.
    page.goto(server.base_url + "/")
    ready(page)
    assert_accessible(page, "the sign-in page")
    dev_sign_in(page, server.base_url)
    token = page.evaluate("sessionStorage.getItem('convo.console.token')")
    assert token and token.count(".") == 2
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["sub"] == "alice"

    # The owner's list, newest first, two pages.
    rows = page.locator("table.list tbody tr")
    sync_api.expect(rows).to_have_count(25)
    newest = [world["long"], world["blocked"], world["story"], *reversed(world["sams"])]
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.id)") == newest[:25]
    shot(page, "desktop-list")
    assert_accessible(page, "the list")
    page.get_by_role("button", name="Load more").click()
    sync_api.expect(rows).to_have_count(29)  # 26 of Sam's, Leo's, Mia's two
    sync_api.expect(page.get_by_role("button", name="Load more")).to_be_hidden()

    # Filters: a user, then flagged only, then ended only.
    page.get_by_label("User id").fill(world["mia"])
    page.get_by_role("button", name="Apply filters").click()
    sync_api.expect(rows).to_have_count(2)
    assert "userId=" + world["mia"] in page.url
    page.get_by_label("Flagged").select_option("true")
    page.get_by_label("Status").select_option("ended")
    page.get_by_label("User id").press("Enter")  # the keyboard submits the form
    sync_api.expect(rows).to_have_count(1)
    row = rows.first
    assert row.get_attribute("data-id") == world["story"]
    sync_api.expect(row).to_contain_text("Mia (")
    sync_api.expect(row).to_contain_text("Teddy (teddy)")
    # Human labels (issue 22), not the category ids.
    sync_api.expect(row).to_contain_text("Self-harm · critical")
    sync_api.expect(row).to_contain_text("unreviewed")

    # The transcript: roles, the tool call and its result, the flagged message.
    row.get_by_role("link").click()
    items = page.locator("#transcript > li")
    sync_api.expect(items).to_have_count(6)
    flagged = page.locator("#transcript li.is-flagged")
    sync_api.expect(flagged).to_have_count(1)
    sync_api.expect(flagged).to_contain_text("Sometimes I want to kill myself")
    # With the stage that found it: "I want to kill myself" is on the list.
    sync_api.expect(flagged).to_contain_text("Flagged: Self-harm (word list)")
    sync_api.expect(flagged).to_contain_text("· critical")
    tool = items.nth(2)
    sync_api.expect(tool).to_contain_text("Tool call get_weather")
    sync_api.expect(tool).to_contain_text('{"city": "Lisbon"}')
    sync_api.expect(items.nth(3)).to_contain_text("result of call_weather")
    sync_api.expect(page.locator("#facts")).to_contain_text("ended")
    shot(page, "desktop-transcript")
    assert_accessible(page, "a transcript")

    # Review it with a note, after a cancelled attempt (Escape closes it).
    page.get_by_role("button", name="Review…").click()
    dialog = page.get_by_role("dialog", name="Review this conversation")
    sync_api.expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    sync_api.expect(dialog).to_be_hidden()
    assert api.conversation(world["story"])["flagStatus"] == "unreviewed"
    page.get_by_role("button", name="Review…").click()
    dialog.get_by_label("Escalated").check()
    dialog.get_by_label("Note").fill("Called Mia's parent; they will talk tonight.")
    shot(page, "desktop-review")
    assert_accessible(page, "the review dialog")
    dialog.get_by_role("button", name="Save review").click()
    sync_api.expect(page.locator(".notice.ok")).to_contain_text("Marked escalated by alice")
    sync_api.expect(page.locator("#facts")).to_contain_text("escalated by alice")
    sync_api.expect(page.locator("#facts")).to_contain_text("Called Mia's parent")
    after = api.conversation(world["story"])
    assert (after["flagStatus"], after["reviewedBy"], after["reviewNote"]) == (
        "escalated", "alice", "Called Mia's parent; they will talk tonight.")

    # The review queue: the blocked chat waits; the story is under escalated.
    page.get_by_role("link", name="Review queue").click()
    queue = page.locator("table.list tbody tr")
    sync_api.expect(queue).to_have_count(1)
    sync_api.expect(queue.first).to_have_attribute("data-id", world["blocked"])
    sync_api.expect(queue.first).to_contain_text("matched")
    page.get_by_label("Review state").select_option("escalated")
    page.get_by_role("button", name="Show").click()
    # (The unreviewed list shows one row too: wait for the new one.)
    sync_api.expect(queue.first).to_have_attribute("data-id", world["story"])
    sync_api.expect(queue).to_have_count(1)

    # The blocked message is marked as such in its transcript.
    page.goto(f"{server.base_url}/#/conversations/{world['blocked']}")
    sync_api.expect(page.locator("#transcript li.is-blocked")).to_contain_text("Blocked: ")

    # Erase one conversation (Leo's), after a confirmation naming it.
    page.goto(f"{server.base_url}/#/conversations/{world['long']}")
    sync_api.expect(items).to_have_count(25)
    page.get_by_role("button", name="Load more messages").click()
    sync_api.expect(items).to_have_count(30)
    assert [int(i) for i in items.evaluate_all("els => els.map(e => e.dataset.index)")] == list(range(30))
    page.get_by_role("button", name="Erase conversation…").click()
    confirm = page.get_by_role("dialog", name="Erase this conversation?")
    sync_api.expect(confirm).to_contain_text("with 30 messages")
    sync_api.expect(confirm).to_contain_text("Leo (")
    confirm.get_by_role("button", name="Erase conversation").click()
    sync_api.expect(page.locator(".notice.ok")).to_contain_text(f"({world['long']})")
    status, _, _ = api.get(f"/conversations/{world['long']}")
    assert status == 404

    # A child's data: totals, then erasure of everything after typing the id.
    page.get_by_role("link", name="A child's data").click()
    # (The list the erasure went back to has a "User id" field too: wait
    # for the page asked for before typing.)
    sync_api.expect(page.get_by_role("heading", name="A child's data")).to_be_visible()
    page.get_by_label("User id").fill(world["mia"])
    page.get_by_role("button", name="Show").click()
    sync_api.expect(page.locator("#stats")).to_contain_text("1conversations ended")
    sync_api.expect(page.locator("table.list tbody tr")).to_have_count(2)
    assert_accessible(page, "a child's data")
    # The export: one JSON-lines file of everything held, decrypted.
    with page.expect_download() as got:
        page.get_by_role("button", name="Download all of this user's data (JSON lines)").click()
    records = [json.loads(line) for line in Path(got.value.path()).read_text().splitlines()]
    assert got.value.suggested_filename.endswith(".jsonl")
    held = api.ok("GET", f"/conversations?userId={world['mia']}")["conversations"]
    assert sorted({r["conversation"]["conversationId"] for r in records if r["type"] == "conversation"}) == sorted(
        c["conversationId"] for c in held)
    assert len([r for r in records if r["type"] == "message"]) == sum(c["messageCount"] for c in held)
    sync_api.expect(page.locator(".notice.ok")).to_contain_text(f"Exported {len(records)} records")
    page.get_by_role("button", name="Erase all of this user's data…").click()
    confirm = page.get_by_role("dialog", name=f"Erase all data of {world['mia']}?")
    assert_accessible(page, "the erasure confirmation")
    sync_api.expect(confirm).to_contain_text("holding 6 messages")
    confirm.get_by_label(f"Type {world['mia']} to confirm").fill("someone-else")
    confirm.get_by_role("button", name="Erase all of this user's data").click()
    sync_api.expect(confirm).to_be_visible()  # a wrong id erases nothing
    assert len(api.ok("GET", f"/conversations?userId={world['mia']}")["conversations"]) == 2
    confirm.get_by_label(f"Type {world['mia']} to confirm").fill(world["mia"])
    confirm.get_by_role("button", name="Erase all of this user's data").click()
    sync_api.expect(page.locator(".notice.ok")).to_contain_text(f"Erased 2 conversations of {world['mia']}")
    sync_api.expect(page.locator("#empty")).to_be_visible()
    assert api.ok("GET", f"/conversations?userId={world['mia']}")["conversations"] == []
    assert api.stats(world["mia"])["conversations"] == 0
    assert api.get(f"/conversations/{world['story']}")[0] == 404
    # Erased, the child is someone convo holds nothing for: no erase button.
    sync_api.expect(page.locator("#nothing-held")).to_contain_text("nothing to erase")
    sync_api.expect(page.get_by_role("button", name="Erase all of this user's data…")).to_have_count(0)

    # A phone number is found under any spelling, and named as stored.
    phone = api.create("+1 415 555 0107", "toy-phone")
    page.get_by_label("User id").fill("\uff0b1 (415) 555-0107")
    page.get_by_role("button", name="Show").click()
    sync_api.expect(page.get_by_role("heading", name="User +14155550107 (looked up as \uff0b1 (415) 555-0107)")).to_be_visible()
    sync_api.expect(page.locator("table.list tbody tr")).to_have_count(1)
    sync_api.expect(page.get_by_role("button", name="Erase all of this user's data…")).to_be_visible()
    assert api.ok("DELETE", f"/conversations/{phone['conversationId']}")["deleted"]

    # The token never travelled in a URL.
    assert not [u for u in watch.requests if token in u]
    watch.check()
    ctx.close()
    print(f"\nconsole walkthrough: {time.monotonic() - started:.1f}s in the browser")


def test_on_a_phone_screen(browser, console_server):
    server, api = console_server
    world = seed(api)
    ctx, page, watch = new_page(browser, PHONE, mobile=True)
    dev_sign_in(page, server.base_url)
    rows = page.locator("table.list tbody tr")
    sync_api.expect(rows).to_have_count(25)
    # Rows become cards: no sideways scrolling on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    sync_api.expect(page.locator("table.list thead")).to_be_hidden()
    shot(page, "phone-list")
    assert_accessible(page, "the list on a phone")
    page.goto(f"{server.base_url}/#/conversations/{world['story']}")
    sync_api.expect(page.locator("#transcript > li")).to_have_count(6)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.locator("#transcript li.is-flagged").scroll_into_view_if_needed()
    shot(page, "phone-transcript")
    assert_accessible(page, "a transcript on a phone")
    page.get_by_role("button", name="Review…").click()
    dialog = page.get_by_role("dialog", name="Review this conversation")
    dialog.get_by_label("Dismissed").check()
    shot(page, "phone-review")
    dialog.get_by_role("button", name="Save review").click()
    sync_api.expect(page.locator(".notice.ok")).to_contain_text("Marked dismissed")
    assert api.conversation(world["story"])["flagStatus"] == "dismissed"
    watch.check()
    ctx.close()


def test_a_pasted_token_errors_and_sign_out(browser, console_server):
    server, api = console_server
    ctx, page, watch = new_page(browser)
    page.goto(server.base_url + "/")
    ready(page)
    # The console's headers: its policy allows this origin only.
    resp = page.request.get(server.base_url + "/")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self';" in csp and "unsafe" not in csp
    assert resp.headers["x-content-type-options"] == "nosniff"

    # Not a token at all: refused in the page, nothing sent.
    page.get_by_label("Token", exact=True).fill("hello")
    page.get_by_role("button", name="Sign in", exact=True).click()
    sync_api.expect(page.locator(".notice.error")).to_contain_text("not a token")

    # A token signed with another secret: the API's 401, its message and
    # trace id shown, and back to the sign-in page.
    forged = server.token("alice").rsplit(".", 1)[0] + "." + base64.urlsafe_b64encode(b"x" * 32).decode().rstrip("=")
    watch.expect(401, "/conversations")
    page.get_by_label("Token", exact=True).fill(forged)
    page.get_by_role("button", name="Sign in", exact=True).click()
    err = page.locator(".notice.error").last
    sync_api.expect(err).to_contain_text("the token's signature is invalid")
    sync_api.expect(err).to_contain_text("code unauthorized · HTTP 401 · trace id ")
    sync_api.expect(page.get_by_label("Token", exact=True)).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('convo.console.token')") is None

    # A real token from `convo-local token`, for another owner: bob sees
    # none of alice's conversations.
    api.create(unique("kid"), "teddy")
    page.get_by_label("Token", exact=True).fill(server.token("bob"))
    page.get_by_role("button", name="Sign in", exact=True).click()
    sync_api.expect(page.locator("#owner")).to_have_text("bob")
    sync_api.expect(page.locator("#empty")).to_have_text("No conversations match.")

    # A bad filter is the API's 400, shown with its message.
    watch.expect(400, "/conversations")
    page.goto(server.base_url + "/#/conversations?status=bogus")
    sync_api.expect(page.locator(".notice.error").last).to_contain_text("code validation_failed")

    # A reload keeps the tab signed in; signing out forgets the token.
    page.goto(server.base_url + "/#/conversations")
    sync_api.expect(page.locator("#empty")).to_be_visible()
    page.reload()
    ready(page)
    sync_api.expect(page.locator("#owner")).to_have_text("bob")
    page.get_by_role("button", name="Sign out").click()
    sync_api.expect(page.get_by_label("Token", exact=True)).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('convo.console.token')") is None
    watch.check()
    ctx.close()


def test_dev_sign_in_is_off_unless_asked_for(browser, make_server):
    server = make_server(in_memory=True)
    ctx, page, watch = new_page(browser)
    page.goto(server.base_url + "/")
    ready(page)
    sync_api.expect(page.get_by_label("Token", exact=True)).to_be_visible()
    sync_api.expect(page.get_by_label("Owner id")).to_have_count(0)
    sync_api.expect(page.locator(".signin")).to_contain_text("convo-local token --sub alice")
    status, _, body = server.client(None).call("POST", "/console/dev-token", {"sub": "alice"})
    assert (status, body["error"]["code"]) == (404, "route_not_found")
    watch.check()
    ctx.close()


@pytest.fixture
def oidc_provider(monkeypatch):
    """A real OpenID Connect provider on loopback (oidc-provider-mock: Authlib's
    authorization server, its sign-in form takes any subject), with CORS on,
    as Cognito's token endpoint has, so the console can redeem its code.

    Three settings it lacks are made: its code grant also takes public
    clients (``none``: no secret, as the console and Cognito's app client
    have); its ID tokens name their key (``kid``), which API Gateway's JWT
    authorizer, and so convo-local, require; and since it does not check
    PKCE itself the test checks the challenge against the verifier
    independently (hashlib)."""
    import threading

    import flask_cors
    import oidc_provider_mock
    import werkzeug.serving
    from oidc_provider_mock import _app as provider_app

    monkeypatch.setattr(provider_app.AuthorizationCodeGrant, "TOKEN_ENDPOINT_AUTH_METHODS",
                        ["none", "client_secret_basic", "client_secret_post"])
    jwt_config = provider_app.OpenIDCode.get_jwt_config

    def with_kid(self, grant, client=None):
        config = jwt_config(self, grant, client)
        return {**config, "kid": config["key"]["kid"]}

    monkeypatch.setattr(provider_app.OpenIDCode, "get_jwt_config", with_kid)
    app = oidc_provider_mock.app()
    flask_cors.CORS(app)
    srv = werkzeug.serving.make_server("localhost", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://localhost:{srv.server_port}"
    srv.shutdown()


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def register_public_client(provider: str, redirect_uri: str) -> str:
    """Registers the console as a public client (no secret: PKCE instead),
    allowed to come back to ``redirect_uri`` only."""
    req = urllib.request.Request(provider + "/oauth2/clients", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none"}).encode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["client_id"]


@pytest.fixture
def oidc_server(tmp_path, oidc_provider):
    port = free_port()
    client_id = register_public_client(oidc_provider, f"http://127.0.0.1:{port}/")
    s = Server(tmp_path / "oidc-data", "--jwt-issuer", oidc_provider, "--jwt-audience", client_id,
               in_memory=True, port=port)
    s.start()
    yield s, client_id
    s.stop()


def test_sign_in_through_an_openid_connect_provider_with_pkce(browser, make_server, oidc_provider, oidc_server):
    server, client_id = oidc_server
    owner = unique("carol")
    mine = server.client(owner).create(unique("kid"), "teddy", userName="Ava")["conversationId"]
    ctx, page, watch = new_page(browser, origins=(server.base_url, oidc_provider))
    # The provider's form asks a CDN for its stylesheet; there is no internet here.
    ctx.route("https://cdn.jsdelivr.net/**", lambda route: route.fulfill(status=200, content_type="text/css", body=""))
    sent = {}
    page.on("request", lambda r: r.url.startswith(oidc_provider + "/oauth2/") and sent.setdefault(
        urllib.parse.urlsplit(r.url).path, r))

    page.goto(server.base_url + "/#/conversations")
    ready(page)
    page.get_by_role("button", name="Sign in", exact=True).first.click()
    page.wait_for_url(oidc_provider + "/oauth2/authorize?**")
    page.locator("input[name=sub]").fill(owner)
    page.get_by_role("button", name="Authorize").click()
    sync_api.expect(page.locator("#owner")).to_have_text(owner)
    rows = page.locator("table.list tbody tr")
    sync_api.expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-id") == mine

    # The code flow with PKCE, as RFC 7636 has it: the challenge sent to the
    # authorization endpoint is the S256 of the verifier the token request
    # carried, the state came back, and the code left the address bar.
    auth = urllib.parse.parse_qs(urllib.parse.urlsplit(sent["/oauth2/authorize"].url).query)
    assert auth["response_type"] == ["code"] and auth["client_id"] == [client_id]
    assert auth["code_challenge_method"] == ["S256"]
    assert auth["redirect_uri"] == [server.base_url + "/"]
    redeem = urllib.parse.parse_qs(sent["/oauth2/token"].post_data)
    assert redeem["grant_type"] == ["authorization_code"]
    assert s256(redeem["code_verifier"][0]) == auth["code_challenge"][0]
    assert len(redeem["code_verifier"][0]) >= 43
    assert "code=" not in page.url and "state=" not in page.url
    assert page.url.endswith("/#/conversations")
    token = page.evaluate("sessionStorage.getItem('convo.console.token')")
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert (claims["iss"], claims["aud"], claims["sub"]) == (oidc_provider, [client_id], owner)

    # The API takes the provider's token; a server for another audience refuses it.
    assert Client(server.base_url, token).ok("GET", "/conversations")["conversations"][0]["conversationId"] == mine
    other = make_server("--jwt-issuer", oidc_provider, "--jwt-audience", "someone-else", in_memory=True)
    status, _, body = Client(other.base_url, token).get("/conversations")
    assert (status, body["error"]["message"]) == (401, "the token is for another audience")

    # An answer that does not match a sign-in started here is refused, and
    # its code taken out of the address bar.
    page.get_by_role("button", name="Sign out").click()
    page.goto(server.base_url + "/?code=stolen&state=forged#/conversations")
    sync_api.expect(page.locator(".notice.error")).to_contain_text("does not match a sign-in started here")
    assert "code=" not in page.url
    assert page.evaluate("sessionStorage.getItem('convo.console.token')") is None
    watch.check()
    ctx.close()


def test_dev_sign_in_answers_loopback_names_only(make_server):
    """DNS rebinding: a page of another site whose name resolves to this
    machine sends its own name in Host and Origin; the development sign-in
    refuses it (403) and mints nothing. Loopback names still sign in."""
    server = make_server("--dev-sign-in", in_memory=True)
    client = server.client(None)
    body = {"sub": "alice"}
    for headers in [
        {"Host": "evil.example:%d" % server.port},
        {"Host": "127.0.0.1.nip.io:%d" % server.port, "Origin": "http://127.0.0.1.nip.io:%d" % server.port},
        {"Host": "127.0.0.1:%d" % server.port, "Origin": "http://evil.example"},
        {"Host": "localhost:%d" % server.port, "Origin": "null"},
    ]:
        err = assert_error(client.call("POST", "/console/dev-token", body, headers=headers), 403, "forbidden")
        assert "loopback" in err["message"] or "localhost" in err["message"], err
    for headers in [
        {},
        {"Host": "localhost:%d" % server.port, "Origin": "http://localhost:%d" % server.port},
        {"Host": "[::1]:%d" % server.port},
    ]:
        status, _, answer = client.call("POST", "/console/dev-token", body, headers=headers)
        assert status == 200 and answer["owner"] == "alice", (headers, status, answer)
