// convo console: a page over the convo API for parents, moderators and
// operators. Plain JavaScript, no build step, no dependency: every element
// is made with the DOM API and every text from the API is set as text (a
// child's words are never parsed as HTML).
//
// Sign-in: a pasted token, a one-click owner in development
// (`convo-local serve --dev-sign-in`), or OpenID Connect (authorization
// code with PKCE, e.g. the stack's Cognito hosted UI). The token lives in
// this tab's sessionStorage and in memory, never in a URL.

const TOKEN_KEY = "convo.console.token";
const PKCE_KEY = "convo.console.pkce";
const PAGE = 25;

const state = { config: null, token: null, owner: null };

// ----------------------------------------------------------------------
// small DOM helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (sel) => document.querySelector(sel);

function main() {
  return $("#main");
}

function show(...children) {
  const m = main();
  m.replaceChildren(...children.flat().filter(Boolean));
}

// ----------------------------------------------------------------------
// formatting

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return h("time", { datetime: iso, title: iso }, dateTime.format(d));
}

function clock(iso) {
  return h("time", { datetime: iso, title: iso }, timeOnly.format(new Date(iso)));
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.max(0, Math.round(seconds));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (hours) return `${hours} h ${minutes} min`;
  if (minutes) return `${minutes} min ${rest} s`;
  return `${rest} s`;
}

function conversationTitle(c) {
  return c.title || c.firstMessagePreview || "Untitled conversation";
}

function person(name, id) {
  return name ? `${name} (${id})` : id;
}

// Human labels for the moderator's categories and stages.
const CATEGORY_LABELS = {
  self_harm: "Self-harm",
  sexual: "Sexual content",
  sexual_minors: "Sexual content involving minors",
  grooming: "Grooming",
  violence: "Violence and threats",
  weapons: "Weapons and dangerous acts",
  hate: "Hate",
  bullying: "Bullying and harassment",
  drugs: "Drugs and alcohol",
  personal_data: "Personal data",
  profanity: "Profanity",
  pii_email: "E-mail address",
  pii_phone: "Phone number",
  pii_card: "Payment card",
  pii_address: "Street address",
  content: "Flagged content",
};
const STAGE_LABELS = {
  wordlist: "word list",
  detector: "personal-data detector",
  learned: "learned model",
  conversation: "conversation",
};
const SEVERITY_LABELS = { low: "low", medium: "medium", high: "high", critical: "critical" };

function categoryLabel(c) {
  return CATEGORY_LABELS[c] || String(c || "").replace(/_/g, " ");
}

function flagBadges(c) {
  if (!c.flagged) return [h("span", { class: "muted" }, "not flagged")];
  const sev = c.severity ? ` · ${SEVERITY_LABELS[c.severity] || c.severity}` : "";
  return [
    h("span", { class: c.severity === "critical" ? "badge critical" : "badge flagged" }, `${c.flagType ? categoryLabel(c.flagType) : "Flagged"}${sev}`),
    " ",
    h("span", { class: "badge state" }, c.flagStatus || "unreviewed"),
  ];
}

function safetyBadge(m) {
  const v = m.safety || {};
  if (!m.flagged && !m.blocked) return null;
  const what = m.blocked ? "Blocked" : "Flagged";
  // Each category with the stage that found it (verdicts from before the
  // learned stage carry no findings: their categories alone).
  const stageOf = {};
  for (const f of v.findings || []) stageOf[f.category] = stageOf[f.category] || f.stage;
  const cats = (v.categories || [])
    .map((c) => (stageOf[c] ? `${categoryLabel(c)} (${STAGE_LABELS[stageOf[c]] || stageOf[c]})` : categoryLabel(c)))
    .join(", ");
  const sev = v.severity ? ` · ${v.severity}` : "";
  const cls = m.blocked ? "badge blocked" : v.severity === "critical" ? "badge critical" : "badge flagged";
  return h("span", { class: cls }, `${what}${cats ? `: ${cats}` : ""}${sev}`);
}

// ----------------------------------------------------------------------
// notices: results and every API error (its message, code and trace id)

function notify(kind, text, detail) {
  const box = h(
    "div",
    { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" },
    h("button", { type: "button", "aria-label": "Dismiss", onclick: () => box.remove() }, "×"),
    text,
    detail ? h("span", { class: "trace" }, detail) : null,
  );
  $("#notices").append(box);
  return box;
}

function clearNotices() {
  $("#notices").replaceChildren();
}

class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.traceId = error.traceId || null;
  }
}

function showError(err) {
  if (err instanceof ApiError) {
    const bits = [`code ${err.code}`, `HTTP ${err.status}`];
    if (err.traceId) bits.push(`trace id ${err.traceId}`);
    notify("error", err.message, bits.join(" · "));
  } else {
    notify("error", err && err.message ? err.message : String(err));
  }
}

// ----------------------------------------------------------------------
// the API

async function api(method, path, body) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${state.token}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(`${state.config.apiUrl}${path}`, init);
  } catch (e) {
    throw new ApiError(0, { code: "network_error", message: `The API could not be reached (${e.message}).` });
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const error = data && data.error ? data.error : { message: text || resp.statusText };
    const err = new ApiError(resp.status, error);
    if (resp.status === 401) {
      signOut(false);
    }
    throw err;
  }
  return data;
}

function enc(s) {
  return encodeURIComponent(s);
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

// ----------------------------------------------------------------------
// sign-in

function b64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function tokenSubject(token) {
  try {
    const payload = token.split(".")[1];
    const binary = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (ch) => ch.charCodeAt(0))));
    return claims.sub || claims.username || "(unknown)";
  } catch {
    return null;
  }
}

function signIn(token) {
  const owner = tokenSubject(token);
  if (!owner) {
    throw new Error("That is not a token: a token is three parts separated by dots (a JWT).");
  }
  state.token = token;
  state.owner = owner;
  sessionStorage.setItem(TOKEN_KEY, token);
  renderChrome();
}

function signOut(navigate = true) {
  state.token = null;
  state.owner = null;
  sessionStorage.removeItem(TOKEN_KEY);
  renderChrome();
  const oidc = state.config && state.config.oidc;
  if (navigate && oidc && oidc.logoutUrl) {
    const u = new URL(oidc.logoutUrl);
    u.searchParams.set("client_id", oidc.clientId);
    u.searchParams.set("logout_uri", redirectUri());
    location.assign(u.toString());
    return;
  }
  if (navigate) route();
}

function redirectUri() {
  return `${location.origin}/`;
}

export async function pkceChallenge(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return b64url(new Uint8Array(digest));
}

async function startOidc() {
  const oidc = state.config.oidc;
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const st = b64url(crypto.getRandomValues(new Uint8Array(16)));
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state: st, hash: location.hash }));
  const u = new URL(oidc.authorizeUrl);
  u.search = new URLSearchParams({
    response_type: "code",
    client_id: oidc.clientId,
    redirect_uri: redirectUri(),
    scope: oidc.scope || "openid",
    state: st,
    code_challenge: await pkceChallenge(verifier),
    code_challenge_method: "S256",
  }).toString();
  location.assign(u.toString());
}

// Back from the identity provider with ?code=…&state=…: the code is taken
// out of the address bar first, then exchanged (with the PKCE verifier) for
// tokens.
async function finishOidc() {
  const q = new URLSearchParams(location.search);
  if (!q.has("code") && !q.has("error")) return;
  const saved = JSON.parse(sessionStorage.getItem(PKCE_KEY) || "null");
  sessionStorage.removeItem(PKCE_KEY);
  history.replaceState(null, "", `${location.pathname}${saved && saved.hash ? saved.hash : ""}`);
  const oidc = state.config.oidc;
  if (q.has("error")) {
    notify("error", `Sign-in failed: ${q.get("error_description") || q.get("error")}`);
    return;
  }
  if (!oidc || !saved || saved.state !== q.get("state")) {
    notify("error", "Sign-in failed: the answer from the identity provider does not match a sign-in started here. Try again.");
    return;
  }
  let resp;
  try {
    resp = await fetch(oidc.tokenUrl, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code",
        client_id: oidc.clientId,
        code: q.get("code"),
        redirect_uri: redirectUri(),
        code_verifier: saved.verifier,
      }).toString(),
    });
  } catch (e) {
    notify("error", `Sign-in failed: the identity provider could not be reached (${e.message}).`);
    return;
  }
  const body = await resp.json().catch(() => ({}));
  const token = body[oidc.tokenField || "access_token"];
  if (!resp.ok || !token) {
    notify("error", `Sign-in failed: ${body.error_description || body.error || `HTTP ${resp.status}`}`);
    return;
  }
  signIn(token);
}

function viewSignIn() {
  const cfg = state.config;
  const parts = [h("h1", {}, "Sign in to the convo console")];
  if (cfg.oidc) {
    parts.push(
      h(
        "section",
        { class: "card", "aria-labelledby": "oidc-h" },
        h("h2", { id: "oidc-h" }, "With your account"),
        h("p", { class: "muted" }, "You are sent to the sign-in page of this deployment's identity provider, then back here."),
        h("button", { type: "button", class: "primary", id: "oidc-sign-in", onclick: () => startOidc().catch(showError) }, "Sign in"),
      ),
    );
  }
  if (cfg.devSignIn) {
    const input = h("input", { id: "dev-owner", name: "owner", value: "alice", autocomplete: "off", required: true, maxlength: 200 });
    parts.push(
      h(
        "section",
        { class: "card", "aria-labelledby": "dev-h" },
        h("h2", { id: "dev-h" }, "As an owner (development)"),
        h("p", { class: "muted" }, "This server was started with ", h("code", {}, "--dev-sign-in"), ": anyone who reaches it can act as any owner. Never use it with real data."),
        h(
          "form",
          {
            id: "dev-form",
            onsubmit: async (e) => {
              e.preventDefault();
              clearNotices();
              try {
                const resp = await fetch("/console/dev-token", {
                  method: "POST",
                  headers: { "Content-Type": "application/json" },
                  body: JSON.stringify({ sub: input.value.trim() }),
                });
                const body = await resp.json().catch(() => ({}));
                if (!resp.ok) throw new ApiError(resp.status, body.error || {});
                signIn(body.token);
                route();
              } catch (err) {
                showError(err);
              }
            },
          },
          h("label", { for: "dev-owner" }, "Owner id"),
          input,
          h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in as this owner")),
        ),
      ),
    );
  }
  const area = h("textarea", { id: "token", name: "token", rows: 4, required: true, spellcheck: "false", autocomplete: "off" });
  parts.push(
    h(
      "section",
      { class: "card", "aria-labelledby": "paste-h" },
      h("h2", { id: "paste-h" }, "With a token"),
      h("p", { class: "muted" }, cfg.tokenHint ? ["Paste a bearer token (a JWT). Locally: ", h("code", {}, cfg.tokenHint)] : "Paste a bearer token (a JWT) from your identity provider."),
      h(
        "form",
        {
          id: "token-form",
          onsubmit: (e) => {
            e.preventDefault();
            clearNotices();
            try {
              signIn(area.value.trim());
              route();
            } catch (err) {
              showError(err);
            }
          },
        },
        h("label", { for: "token" }, "Token"),
        area,
        h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in")),
      ),
    ),
    h("p", { class: "muted" }, "The token is kept in this tab only (session storage) and sent to the API in the Authorization header."),
  );
  show(h("div", { class: "signin" }, parts));
}

// ----------------------------------------------------------------------
// the chrome and the router

function renderChrome() {
  const signedIn = Boolean(state.token);
  $("#nav").hidden = !signedIn;
  $("#who").hidden = !signedIn;
  $("#owner").textContent = state.owner || "";
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, q] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(q || "") };
}

function go(path, params) {
  const q = params ? query(params) : "";
  const next = `#/${path}${q}`;
  if (location.hash === next) route();
  else location.hash = next;
}

let routeToken = 0;

async function route() {
  const my = ++routeToken;
  const { parts, params } = parseHash();
  const section = parts[0] || "conversations";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.section === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!state.token) {
    viewSignIn();
    return;
  }
  show(h("p", { class: "loading" }, "Loading…"));
  const stale = () => my !== routeToken;
  try {
    if (section === "conversations" && parts[1]) await viewTranscript(parts[1], stale);
    else if (section === "reviews") await viewReviews(params, stale);
    else if (section === "users") await viewUser(parts[1], stale);
    else await viewConversations(params, stale);
  } catch (err) {
    if (stale()) return;
    showError(err);
    if (!state.token) viewSignIn();
    else show(h("h1", {}, "Something went wrong"), h("p", { class: "muted" }, "The error is shown above."));
  }
  if (!stale()) document.title = `${$("main h1") ? $("main h1").textContent : "convo"} · convo console`;
}

// ----------------------------------------------------------------------
// conversation lists (the owner's listing, a user's, the review queue)

function conversationTable(caption, rows, { review = false } = {}) {
  const head = review
    ? ["Conversation", "User", "Agent", "Flagged", "Reason", "Flag"]
    : ["Conversation", "User", "Agent", "Started", "Duration", "Messages", "Flag"];
  const body = h("tbody");
  const table = h(
    "table",
    { class: "list" },
    h("caption", { class: "muted", hidden: true }, caption),
    h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)))),
    body,
  );
  const add = (list) => {
    for (const c of list) {
      const link = h("a", { href: `#/conversations/${enc(c.conversationId)}` }, conversationTitle(c));
      const cells = review
        ? [
            [head[0], link],
            [head[1], person(c.userName, c.userId)],
            [head[2], person(c.agentName, c.agentId)],
            [head[3], when(c.flaggedAt)],
            [head[4], c.flagReason || "—"],
            [head[5], flagBadges(c)],
          ]
        : [
            [head[0], link],
            [head[1], person(c.userName, c.userId)],
            [head[2], person(c.agentName, c.agentId)],
            [head[3], when(c.startTime)],
            [head[4], c.status === "active" ? h("span", { class: "badge status" }, "active") : duration(c.durationSeconds)],
            [head[5], String(c.messageCount)],
            [head[6], flagBadges(c)],
          ];
      body.append(
        h(
          "tr",
          { "data-id": c.conversationId },
          cells.map(([label, v], i) => h("td", { "data-label": label, class: !review && i === 5 ? "num" : null }, v)),
        ),
      );
    }
  };
  add(rows);
  return { table, add };
}

// A list with "Load more" following the API's nextCursor.
async function pagedList(path, params, caption, opts, stale) {
  const first = await api("GET", `${path}${query({ ...params, limit: PAGE })}`);
  if (stale()) return null;
  if (!first.conversations.length) {
    return h("p", { class: "card muted", id: "empty" }, "No conversations match.");
  }
  const { table, add } = conversationTable(caption, first.conversations, opts);
  const wrap = h("div", {}, table);
  wrap.append(
    loadMore("Load more", first.nextCursor, async (cursor) => {
      const page = await api("GET", `${path}${query({ ...params, limit: PAGE, cursor })}`);
      add(page.conversations);
      return page.nextCursor;
    }),
  );
  return wrap;
}

// A "Load more" button following the API's cursors: `next(cursor)` shows
// one more page and answers the cursor after it; hidden once none is left.
function loadMore(label, firstCursor, next) {
  let cursor = firstCursor;
  const more = h("div", { class: "more" });
  const button = h(
    "button",
    {
      type: "button",
      id: "load-more",
      onclick: async () => {
        button.disabled = true;
        try {
          cursor = await next(cursor);
          more.hidden = !cursor;
        } catch (err) {
          showError(err);
        } finally {
          button.disabled = false;
        }
      },
    },
    label,
  );
  more.append(button);
  more.hidden = !cursor;
  return more;
}

function field(id, label, control) {
  return h("div", {}, h("label", { for: id }, label), control);
}

function select(id, name, value, options) {
  return h(
    "select",
    { id, name },
    options.map(([v, t]) => h("option", { value: v, selected: v === (value || "") }, t)),
  );
}

async function viewConversations(params, stale) {
  const filters = {
    userId: params.get("userId") || "",
    agentId: params.get("agentId") || "",
    status: params.get("status") || "",
    flagged: params.get("flagged") || "",
  };
  const form = h(
    "form",
    {
      class: "card filters",
      id: "filters",
      role: "search",
      "aria-label": "Filter conversations",
      onsubmit: (e) => {
        e.preventDefault();
        const data = new FormData(e.target);
        go("conversations", Object.fromEntries([...data.entries()].map(([k, v]) => [k, String(v).trim()])));
      },
    },
    field("f-user", "User id", h("input", { id: "f-user", name: "userId", value: filters.userId, autocomplete: "off" })),
    field("f-agent", "Agent id", h("input", { id: "f-agent", name: "agentId", value: filters.agentId, autocomplete: "off" })),
    field("f-status", "Status", select("f-status", "status", filters.status, [["", "Any"], ["active", "Active"], ["ended", "Ended"], ["archived", "Archived"]])),
    field("f-flagged", "Flagged", select("f-flagged", "flagged", filters.flagged, [["", "Any"], ["true", "Flagged"], ["false", "Not flagged"]])),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Apply filters")),
  );
  const list = await pagedList("/conversations", filters, "Conversations, newest first", {}, stale);
  if (stale()) return;
  show(h("h1", {}, "Conversations"), form, list);
}

async function viewReviews(params, stale) {
  const status = params.get("status") || "unreviewed";
  const form = h(
    "form",
    {
      class: "card filters",
      id: "review-filters",
      "aria-label": "Filter the review queue",
      onsubmit: (e) => {
        e.preventDefault();
        go("reviews", { status: new FormData(e.target).get("status") });
      },
    },
    field("r-status", "Review state", select("r-status", "status", status, [["unreviewed", "Unreviewed"], ["escalated", "Escalated"], ["reviewed", "Reviewed"], ["dismissed", "Dismissed"]])),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Show")),
  );
  const list = await pagedList("/reviews", { status }, "Flagged conversations, newest flag first", { review: true }, stale);
  if (stale()) return;
  show(h("h1", {}, "Review queue"), h("p", { class: "muted" }, "Conversations the moderator flagged, by review state."), form, list);
}

// ----------------------------------------------------------------------
// one conversation: its facts, review, erasure and transcript

function messageItem(m) {
  const cls = ["msg", `role-${m.role}`];
  if (m.blocked) cls.push("is-blocked");
  else if (m.flagged) cls.push("is-flagged");
  const tools = (m.toolCalls || []).map((t) =>
    h("div", { class: "tool" }, h("strong", {}, `Tool call ${t.name}`), h("span", { class: "muted" }, ` (${t.id})`), h("pre", {}, t.arguments)),
  );
  return h(
    "li",
    { class: cls.join(" "), "data-index": m.messageIndex, "data-id": m.messageId },
    h(
      "header",
      {},
      h("span", { class: "role" }, m.role),
      clock(m.createdAt),
      h("span", {}, `#${m.messageIndex}`),
      m.toolCallId ? h("span", {}, `result of ${m.toolCallId}`) : null,
      safetyBadge(m),
    ),
    m.content ? h("p", { class: "content" }, m.content) : null,
    tools,
  );
}

function facts(c) {
  const rows = [
    ["Status", h("span", { class: "badge status" }, c.status)],
    ["User", h("a", { href: `#/users/${enc(c.userId)}` }, person(c.userName, c.userId))],
    ["Agent", person(c.agentName, c.agentId)],
    ["Started", when(c.startTime)],
    ["Duration", c.status === "active" ? "in progress" : duration(c.durationSeconds)],
    ["Messages", String(c.messageCount)],
    ["Type · channel", `${c.type} · ${c.channel}`],
    ["Flag", flagBadges(c)],
  ];
  if (c.flagged) {
    rows.push(["Flag reason", c.flagReason || "—"], ["Flagged at", when(c.flaggedAt)]);
  }
  if (c.reviewedAt) {
    rows.push(["Last review", [`${c.flagStatus} by ${c.reviewedBy || "?"} on `, when(c.reviewedAt)]], ["Review note", c.reviewNote || "—"]);
  }
  if (c.redactPii) rows.push(["Personal data", "masked when stored ([phone], [email], …)"]);
  return h("dl", { class: "facts", id: "facts" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

async function viewTranscript(id, stale) {
  const path = `/conversations/${enc(id)}`;
  const [c, first] = await Promise.all([api("GET", path), api("GET", `${path}/messages${query({ limit: PAGE })}`)]);
  if (stale()) return;
  const card = h("section", { class: "card", "aria-label": "About this conversation" }, facts(c));
  const buttons = h("div", { class: "actions" });
  if (c.flagged) {
    buttons.append(h("button", { type: "button", class: "primary", id: "review", onclick: () => openReview(c, card) }, "Review…"));
  }
  buttons.append(h("button", { type: "button", class: "danger", id: "erase-conversation", onclick: () => eraseConversation(c) }, "Erase conversation…"));
  card.append(buttons);

  const list = h("ol", { class: "transcript", id: "transcript", "aria-label": "Messages, oldest first" });
  for (const m of first.messages) list.append(messageItem(m));
  const more = loadMore("Load more messages", first.nextCursor, async (cursor) => {
    const page = await api("GET", `${path}/messages${query({ limit: PAGE, cursor })}`);
    for (const m of page.messages) list.append(messageItem(m));
    return page.nextCursor;
  });
  show(
    h("p", {}, h("a", { href: "#/conversations" }, "← All conversations")),
    h("h1", {}, conversationTitle(c)),
    card,
    h("h2", {}, "Transcript"),
    first.messages.length ? list : h("p", { class: "muted card" }, "No messages stored yet."),
    more,
  );
}

function wireClose(dialog) {
  for (const b of dialog.querySelectorAll("[data-close]")) {
    b.onclick = () => dialog.close("cancel");
  }
}

function openReview(c, card) {
  const dialog = $("#review-dialog");
  const form = $("#review-form");
  form.reset();
  $("#review-summary").textContent = `${conversationTitle(c)} · ${c.flagType ? categoryLabel(c.flagType) : "Flagged"}${c.severity ? `, ${c.severity}` : ""} · now ${c.flagStatus || "unreviewed"}`;
  wireClose(dialog);
  form.onsubmit = async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const note = String(data.get("note") || "").trim();
    const body = { flagStatus: data.get("flagStatus") };
    if (note) body.note = note;
    const save = form.querySelector("button[type=submit]");
    save.disabled = true;
    try {
      const updated = await api("POST", `/conversations/${enc(c.conversationId)}/review`, body);
      dialog.close("saved");
      clearNotices();
      notify("ok", `Marked ${updated.flagStatus} by ${updated.reviewedBy}.`);
      card.replaceChild(facts(updated), card.querySelector("#facts"));
      Object.assign(c, updated);
    } catch (err) {
      dialog.close("error");
      showError(err);
    } finally {
      save.disabled = false;
    }
  };
  dialog.showModal();
}

// A confirmation that names what will be deleted; for a whole user's data
// the user id must be typed.
function confirmDelete({ title, body, typed, button }) {
  return new Promise((resolve) => {
    const dialog = $("#confirm-dialog");
    const form = $("#confirm-form");
    const input = $("#confirm-input");
    $("#confirm-title").textContent = title;
    $("#confirm-body").replaceChildren(...body.map((p) => h("p", {}, p)));
    $("#confirm-go").textContent = button;
    input.value = "";
    input.hidden = !typed;
    input.required = Boolean(typed);
    $("#confirm-label").hidden = !typed;
    $("#confirm-label").textContent = typed ? `Type ${typed} to confirm` : "";
    wireClose(dialog);
    form.onsubmit = (e) => {
      e.preventDefault();
      if (typed && input.value !== typed) {
        input.setCustomValidity(`Type ${typed} exactly`);
        input.reportValidity();
        return;
      }
      dialog.close("go");
    };
    input.oninput = () => input.setCustomValidity("");
    dialog.onclose = () => resolve(dialog.returnValue === "go");
    dialog.returnValue = "";
    dialog.showModal();
    if (typed) input.focus();
  });
}

async function eraseConversation(c) {
  const ok = await confirmDelete({
    title: "Erase this conversation?",
    body: [
      `“${conversationTitle(c)}” between ${person(c.userName, c.userId)} and ${person(c.agentName, c.agentId)}, started ${dateTime.format(new Date(c.startTime))}, with ${c.messageCount} messages.`,
      "The conversation and all its messages are deleted for good; this cannot be undone.",
    ],
    button: "Erase conversation",
  });
  if (!ok) return;
  try {
    const result = await api("DELETE", `/conversations/${enc(c.conversationId)}`);
    clearNotices();
    notify("ok", result.deleted ? `Erased the conversation “${conversationTitle(c)}” (${result.conversationId}).` : `Nothing to erase: ${result.conversationId} was already gone.`);
    go("conversations");
  } catch (err) {
    showError(err);
  }
}

// ----------------------------------------------------------------------
// a child's data: totals, conversations, erasure

async function viewUser(userId, stale) {
  const form = h(
    "form",
    {
      class: "card filters",
      id: "user-form",
      role: "search",
      "aria-label": "Find a user",
      onsubmit: (e) => {
        e.preventDefault();
        const v = String(new FormData(e.target).get("userId")).trim();
        if (v) go(`users/${enc(v)}`);
      },
    },
    field("u-id", "User id", h("input", { id: "u-id", name: "userId", value: userId || "", required: true, autocomplete: "off" })),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Show")),
  );
  if (!userId) {
    show(h("h1", {}, "A child's data"), h("p", { class: "muted" }, "A user's totals and conversations, and erasure of everything convo holds for them."), form);
    return;
  }
  const stats = await api("GET", `/users/${enc(userId)}/stats`);
  if (stale()) return;
  const list = await pagedList("/conversations", { userId }, `Conversations of ${userId}`, {}, stale);
  if (stale()) return;
  const totals = h(
    "div",
    { class: "stats", id: "stats" },
    h("div", {}, h("strong", {}, String(stats.conversations)), "conversations ended"),
    h("div", {}, h("strong", {}, String(stats.messages)), "messages in them"),
    h("div", {}, h("strong", {}, duration(stats.totalSeconds)), "time talking"),
    h("div", {}, h("strong", {}, stats.lastConversationAt ? dateTime.format(new Date(stats.lastConversationAt)) : "—"), "last conversation"),
  );
  const erase = h(
    "button",
    {
      type: "button",
      class: "danger",
      id: "erase-user",
      onclick: async () => {
        const ok = await confirmDelete({
          title: `Erase all data of ${userId}?`,
          body: [
            `Every conversation of user ${userId} (${stats.conversations} ended, holding ${stats.messages} messages, and any still active), all their messages and their totals are deleted for good.`,
            "This cannot be undone.",
          ],
          typed: userId,
          button: "Erase all of this user's data",
        });
        if (!ok) return;
        try {
          // 202: the user's key is gone already; a job deletes the items.
          // Followed here until it is done (it goes on if this page closes).
          const started = await api("DELETE", `/users/${enc(userId)}`);
          clearNotices();
          notify("ok", `Erasing ${started.userId}: their data can no longer be read; deleting it…`);
          let result = started;
          for (let i = 0; i < 600 && result.status !== "done"; i += 1) {
            await new Promise((resolve) => setTimeout(resolve, 500));
            result = await api("GET", `/erasures/${enc(started.erasureId)}`);
          }
          clearNotices();
          if (result.status !== "done") {
            notify("ok", `The erasure of ${started.userId} goes on (erasure ${started.erasureId}).`);
            return;
          }
          const n = result.conversationsDeleted;
          notify(
            "ok",
            `Erased ${n} conversation${n === 1 ? "" : "s"} of ${started.userId} (${result.messagesDeleted} message${result.messagesDeleted === 1 ? "" : "s"}).`,
          );
          go(`users/${enc(userId)}`);
        } catch (err) {
          showError(err);
        }
      },
    },
    "Erase all of this user's data…",
  );
  // The API answers under the id the user is stored as (a phone number in
  // any spelling is its E.164 form): the page names that one.
  const stored = stats.userId;
  const heading = stored === userId ? `User ${stored}` : `User ${stored} (looked up as ${userId})`;
  const nothing = list.id === "empty" && stats.conversations === 0;
  // A parent's review of everything held: the export's pages, followed to
  // the end, as one JSON-lines file (opened in this browser, never stored).
  const download = h(
    "button",
    {
      type: "button",
      id: "export-user",
      onclick: async () => {
        download.disabled = true;
        try {
          const lines = [];
          let cursor = null;
          do {
            const page = await api("GET", `/users/${enc(userId)}/export${query({ cursor })}`);
            for (const c of page.conversations) lines.push(JSON.stringify({ type: "conversation", conversation: c }));
            for (const m of page.messages) lines.push(JSON.stringify({ type: "message", message: m }));
            cursor = page.nextCursor;
          } while (cursor);
          const url = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "application/x-ndjson" }));
          const a = h("a", { href: url, download: `convo-export-${stored.replace(/[^A-Za-z0-9+_-]/g, "_")}.jsonl` });
          document.body.append(a);
          a.click();
          a.remove();
          setTimeout(() => URL.revokeObjectURL(url), 60000);
          clearNotices();
          notify("ok", `Exported ${lines.length} records of ${stored}.`);
        } catch (err) {
          showError(err);
        } finally {
          download.disabled = false;
        }
      },
    },
    "Download all of this user's data (JSON lines)",
  );
  const exportCard = nothing
    ? null
    : h("section", { class: "card" }, h("p", {}, "Every conversation and message convo holds for this user, decrypted, as a file (a parent's review)."), download);
  const erasure = nothing
    ? h("section", { class: "card", id: "nothing-held" }, h("p", {}, `convo holds nothing for user ${stored}: no conversation and no totals, so there is nothing to erase. Check the spelling of the id.`))
    : h("section", { class: "card" }, h("p", {}, "Deletes every conversation, message and total convo holds for this user (a parent's request, or the end of a contract)."), erase);
  show(h("h1", {}, heading), form, h("h2", {}, "Totals"), totals, h("h2", {}, "Conversations"), list, exportCard && h("h2", {}, "Export"), exportCard, h("h2", {}, "Erasure"), erasure);
}

// ----------------------------------------------------------------------

async function start() {
  try {
    const resp = await fetch("/console/config.json", { cache: "no-store" });
    state.config = await resp.json();
  } catch (e) {
    state.config = { apiUrl: "", devSignIn: false, oidc: null };
    notify("error", `The console's configuration could not be read (${e.message}).`);
  }
  state.config.apiUrl = (state.config.apiUrl || "").replace(/\/+$/, "");
  $("#sign-out").addEventListener("click", () => {
    clearNotices();
    signOut(true);
  });
  await finishOidc();
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved && !state.token) {
    try {
      signIn(saved);
    } catch {
      sessionStorage.removeItem(TOKEN_KEY);
    }
  }
  renderChrome();
  window.addEventListener("hashchange", () => route());
  await route();
  document.body.dataset.ready = "true";
}

start();
