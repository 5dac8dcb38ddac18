//! The API's OpenAPI 3.1 document, generated from the schema crate's types
//! (their `ToSchema` derives carry the limits the validators enforce) and
//! the operations declared here, one per route. `GET /openapi.json` serves
//! it, the repository commits it as `openapi.json` (a test fails when that
//! copy is stale), and schemathesis checks the running server against it.
//!
//! The functions below are never called: each only carries the
//! `#[utoipa::path]` description of one route.
#![allow(dead_code)]

use convo_schema::api::*;
use convo_schema::{Conversation, UserStats};
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr};

use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// A required id (`userId`, `agentId`): 1 to 200 characters, not blank, no
/// control character, no `#` or `/`.
pub const ID_PATTERN: &str = r"^[^#/\x00-\x1f\x7f-\x9f]*[^#/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^#/\x00-\x1f\x7f-\x9f]*$";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "convo",
        description = "The conversation store behind AI agents. Writes are validated, screened and queued (202); \
            a worker stores them in order, exactly once. Errors are `{\"error\": {code, message, details, traceId}}`.",
        license(name = "Apache-2.0")
    ),
    paths(
        create_conversation,
        list_conversations,
        get_conversation,
        patch_conversation,
        delete_conversation,
        append_messages,
        list_messages,
        remove_message,
        clear_messages,
        end_session,
        context,
        user_context,
        review,
        list_reviews,
        user_stats,
        delete_user,
        get_erasure,
        export_user,
        health,
        deep_health,
        openapi_document,
    ),
    // The events convo emits (not answers of a route): their envelope and
    // data, for consumers of the bus and the webhooks.
    components(schemas(
        ErrorBody,
        ErrorDetail,
        Health,
        Liveness,
        convo_schema::events::CloudEvent,
        convo_schema::events::EventData,
        convo_schema::events::EventType
    )),
    modifiers(&CommonAnswers),
    security(("bearer" = [])),
    tags(
        (name = "conversations", description = "Conversations and their sessions"),
        (name = "messages", description = "Appending and reading messages"),
        (name = "moderation", description = "Flags and reviews"),
        (name = "users", description = "A user's totals and erasure"),
        (name = "service", description = "Health and this document"),
    )
)]
pub struct ApiDoc;

/// The document, as served and committed: what utoipa derives, and the
/// rules of a message that tie its fields together (which its derive
/// cannot state).
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(message) = doc.pointer_mut("/components/schemas/NewMessage")
        && let Some(schema) = message.as_object_mut()
    {
        schema.insert("allOf".into(), message_rules());
    }
    doc
}

/// A message has content that is not blank, or tool calls (then its content
/// may be empty); only an assistant message carries tool calls, and only a
/// tool message a `toolCallId`.
fn message_rules() -> serde_json::Value {
    let calls =
        serde_json::json!({"required": ["toolCalls"], "properties": {"toolCalls": {"type": "array", "minItems": 1}}});
    serde_json::json!([
        {"anyOf": [
            {"required": ["content"], "properties": {"content": {"pattern": NONBLANK_PATTERN}}},
            calls,
        ]},
        {"if": calls, "then": {"properties": {"role": {"const": "assistant"}}}},
        {"if": {"required": ["toolCallId"], "properties": {"toolCallId": {"type": "string"}}},
         "then": {"properties": {"role": {"const": "tool"}}}},
    ])
}

/// Holds a character that is not white space (Rust's `trim` and Python's
/// `str.strip` agree on these).
const NONBLANK_PATTERN: &str = r"[^\x09-\x0d\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// The document as pretty JSON with a final newline (the committed form).
pub fn document_json() -> String {
    let mut json = serde_json::to_string_pretty(&document()).unwrap_or_else(|_| "{}".into());
    json.push('\n');
    json
}

/// `GET /health`'s body.
#[derive(ToSchema)]
#[schema(as = Liveness)]
struct Liveness {
    /// Always `healthy`: the API answers.
    #[schema(pattern = "^healthy$")]
    status: String,
    #[schema(value_type = String, format = DateTime)]
    timestamp: String,
}

/// `GET /health/deep`'s body.
#[derive(ToSchema)]
#[schema(as = Health)]
struct Health {
    /// `healthy` (200) or `unhealthy` (503).
    #[schema(pattern = "^(healthy|unhealthy)$")]
    status: String,
    #[schema(value_type = String, format = DateTime)]
    timestamp: String,
    /// `store`, `writesQueue`, `titlesQueue`, `eventsQueue`: `{name, ok, …figures}`.
    components: Vec<HealthComponent>,
}

#[derive(ToSchema)]
struct HealthComponent {
    name: String,
    ok: bool,
}

/// Adds what every operation shares: the bearer scheme, and the error
/// answers each can give (400 for bad input, 401 without a valid token,
/// 404 for an id the owner does not hold, 500 and 503), all in the one
/// error body.
struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        if let Some(body) = doc
            .paths
            .paths
            .get_mut("/conversations/{id}/end")
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.request_body.as_mut())
            && let RefOr::T(body) = body
        {
            body.required = Some(utoipa::openapi::Required::False);
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops: [&mut Option<Operation>; 4] = [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete];
            for op in ops.into_iter().flatten() {
                let open = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let mut add = |status: &str, why: &str| {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error_answer(why));
                };
                if path != "/health" && path != "/openapi.json" {
                    add(
                        "400",
                        "Bad input (`validation_failed`, `malformed_json`, `invalid_cursor`, …); nothing changed",
                    );
                    if !open {
                        add("401", "No valid bearer token (`unauthorized`)");
                    }
                    add(
                        "503",
                        "A dependency is unavailable (`dependency_unavailable`); retry shortly",
                    );
                }
                if path.contains('{') {
                    add(
                        "404",
                        "No such conversation for this owner (`conversation_not_found`), or no such message (`message_not_found`)",
                    );
                }
                add("500", "An internal error (`internal_error`)");
            }
        }
    }
}

fn error_answer(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
struct ConversationPath {
    /// The conversation's id (a ULID).
    #[param(pattern = "^[0-9A-Za-z]{26}$")]
    id: String,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path, names("userId"))]
struct UserPath(
    /// The user's id, found under the identity rule of `userId` in
    /// CreateConversationRequest: any spelling of a phone number (starting
    /// with `+`) finds its E.164 form; other ids match NFC-normalised.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^#/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb](?:[^#/\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^#/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?$"
    )]
    String,
);

#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
struct IdempotencyHeader {
    /// Makes a retry safe: the same key and body get the first answer
    /// again and store nothing new; the same key with another body is a
    /// 409. Keys are remembered 24 hours.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 200,
        pattern = "^[!-~]([ -~]*[!-~])?$"
    )]
    idempotency_key: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct AfterQuery {
    /// A write's `commandId`: answer once that write is applied (up to the
    /// deployment's wait), and say which in `X-Convo-After`.
    #[param(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9_-]+$")]
    after: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// The `nextCursor` of the previous page (opaque; bound to its list).
    cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(non_snake_case)]
struct ListQuery {
    /// Only the conversations with this user (the identity rule of
    /// `userId` in CreateConversationRequest).
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^#/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb](?:[^#/\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^#/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?$"
    )]
    userId: Option<String>,
    /// Only the conversations with this agent.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^#/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb](?:[^#/\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^#/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?$"
    )]
    agentId: Option<String>,
    /// `active`, `ended` or `archived`.
    #[param(inline, value_type = Option<convo_schema::ConversationStatus>)]
    status: Option<String>,
    /// Only flagged (`true`) or only unflagged (`false`) conversations.
    flagged: Option<bool>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct MessagesQuery {
    /// `asc` (default) or `desc`, by message index.
    #[param(pattern = "^(asc|desc)$")]
    order: Option<String>,
    /// Messages created at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Messages created before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// `true`: only the flagged and blocked messages (from a sparse index).
    flagged: Option<bool>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(non_snake_case)]
struct ContextQuery {
    /// How many of the latest messages, 1 to 200 (default 15).
    #[param(minimum = 1, maximum = 200)]
    maxMessages: Option<u32>,
    /// Only messages younger than this: a count and a unit, `90s`, `30m`,
    /// `24h`, `7d`.
    #[param(pattern = "^[0-9]*[1-9][0-9]*[smhd]$")]
    maxAge: Option<String>,
    /// A token budget: the newest whole messages whose cost in a chat
    /// request (each message's framing and the reply's priming included)
    /// fits in it; `maxMessages` then defaults to 200.
    #[param(minimum = 1, maximum = 10000000)]
    maxTokens: Option<u32>,
    /// The tokenizer that counts: `o200k_base` (GPT-4o and later, the
    /// default) or `cl100k_base` (GPT-4, GPT-3.5).
    #[param(pattern = "^(o200k_base|cl100k_base)$")]
    tokenizer: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct ReviewsQuery {
    /// The review state listed (default `unreviewed`).
    #[param(inline, value_type = Option<convo_schema::FlagStatus>)]
    status: Option<String>,
}

/// Create a conversation (or find the pair's active one).
#[utoipa::path(post, path = "/conversations", tag = "conversations",
    request_body = CreateConversationRequest,
    responses(
        (status = 201, description = "Created", body = Conversation),
        (status = 200, description = "`reuseActive` found the (agent, user) pair's active conversation", body = Conversation),
        (status = 413, description = "`metadata` over 8 KiB (`payload_too_large`)", body = ErrorBody),
    ))]
fn create_conversation() {}

/// The owner's conversations, newest first. Each filter is served by an
/// index; combined filters may leave a page short of `limit` while it
/// still has a `nextCursor`.
#[utoipa::path(get, path = "/conversations", tag = "conversations",
    params(ListQuery, PageQuery),
    responses((status = 200, description = "A page", body = ConversationPage)))]
fn list_conversations() {}

/// One conversation.
#[utoipa::path(get, path = "/conversations/{id}", tag = "conversations",
    params(ConversationPath, AfterQuery),
    responses((status = 200, description = "The conversation", body = Conversation,
        headers(("X-Convo-After" = String, description = "With `after=`: `applied` or `pending`")))))]
fn get_conversation() {}

/// Set a user title, merge metadata (`null` removes a key), or archive an
/// ended conversation.
#[utoipa::path(patch, path = "/conversations/{id}", tag = "conversations",
    params(ConversationPath),
    request_body = PatchConversationRequest,
    responses(
        (status = 200, description = "The conversation", body = Conversation),
        (status = 409, description = "Archiving a conversation not ended (`conversation_not_ended`)", body = ErrorBody),
        (status = 413, description = "`metadata` over 8 KiB (`payload_too_large`)", body = ErrorBody),
    ))]
fn patch_conversation() {}

/// Erase a conversation and everything stored with it (idempotent: a
/// missing id gets the same answer).
#[utoipa::path(delete, path = "/conversations/{id}", tag = "users",
    params(ConversationPath),
    responses((status = 200, description = "Erased", body = DeleteConversationResponse)))]
fn delete_conversation() {}

/// Append messages: screened, queued and answered at once; stored in order
/// a moment later (read them with `after=<commandId>`).
#[utoipa::path(post, path = "/conversations/{id}/messages", tag = "messages",
    params(ConversationPath, IdempotencyHeader),
    request_body = AppendRequest,
    responses(
        (status = 202, description = "Accepted: ids and safety verdicts", body = AppendResponse),
        (status = 409, description = "The conversation has ended (`conversation_ended`), or the `Idempotency-Key` was used with another body (`idempotency_key_reused`) or is in flight (`request_in_progress`)", body = ErrorBody),
        (status = 413, description = "A message over 16 KiB, metadata over 8 KiB, or the append over 250 KiB encoded (`payload_too_large`)", body = ErrorBody),
        (status = 429, description = "Over the conversation's appends per minute (`rate_limited`); nothing was queued", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next minute"))),
    ))]
fn append_messages() {}

/// Messages in index order.
#[utoipa::path(get, path = "/conversations/{id}/messages", tag = "messages",
    params(ConversationPath, MessagesQuery, PageQuery, AfterQuery),
    responses((status = 200, description = "A page", body = MessagePage,
        headers(("X-Convo-After" = String, description = "With `after=`: `applied` or `pending`")))))]
fn list_messages() {}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(non_snake_case)]
struct MessagePath {
    /// The conversation's id (a ULID).
    #[param(pattern = "^[0-9A-Za-z]{26}$")]
    id: String,
    /// The message's id (a ULID).
    #[param(pattern = "^[0-9A-Za-z]{26}$")]
    messageId: String,
}

/// Remove one message, after every write accepted before this request;
/// answers with the message as it was. The message's index stays taken
/// (a tombstone with no content); reads and contexts skip it.
#[utoipa::path(delete, path = "/conversations/{id}/messages/{messageId}", tag = "messages",
    params(MessagePath, AfterQuery),
    responses(
        (status = 202, description = "Accepted: the message as it was", body = RemoveMessageResponse),
        (status = 409, description = "The write named by `after` is not stored yet (`request_in_progress`); retry shortly", body = ErrorBody),
    ))]
fn remove_message() {}

/// Remove every message accepted before this request; the conversation
/// stays.
#[utoipa::path(delete, path = "/conversations/{id}/messages", tag = "messages",
    params(ConversationPath),
    responses((status = 202, description = "Accepted", body = ClearMessagesResponse)))]
fn clear_messages() {}

/// End the session, after every write accepted before it.
#[utoipa::path(post, path = "/conversations/{id}/end", tag = "conversations",
    params(ConversationPath, IdempotencyHeader),
    request_body(content = EndRequest, description = "Optional: a POST without a body ends the session too"),
    responses(
        (status = 202, description = "Accepted", body = EndResponse),
        (status = 409, description = "Already ended (`conversation_ended`), or the `Idempotency-Key` was reused or is in flight", body = ErrorBody),
    ))]
fn end_session() {}

/// The most recent messages, oldest first, ready for an LLM (blocked ones
/// left out).
#[utoipa::path(get, path = "/conversations/{id}/context", tag = "messages",
    params(ConversationPath, ContextQuery, AfterQuery),
    responses((status = 200, description = "The context", body = ContextResponse,
        headers(("X-Convo-After" = String, description = "With `after=`: `applied` or `pending`")))))]
fn context() {}

/// Record a review of a flagged conversation (who: the token's `sub`).
#[utoipa::path(post, path = "/conversations/{id}/review", tag = "moderation",
    params(ConversationPath),
    request_body = ReviewRequest,
    responses(
        (status = 200, description = "The conversation", body = Conversation),
        (status = 409, description = "Nothing to review (`conversation_not_flagged`)", body = ErrorBody),
    ))]
fn review() {}

/// The owner's flagged conversations in one review state, most recently
/// flagged first.
#[utoipa::path(get, path = "/reviews", tag = "moderation",
    params(ReviewsQuery, PageQuery),
    responses((status = 200, description = "A page", body = ConversationPage)))]
fn list_reviews() {}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(non_snake_case)]
struct UserContextAgent {
    /// Only the conversations with this agent.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^#/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb](?:[^#/\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^#/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?$"
    )]
    agentId: Option<String>,
}

/// A user's most recent messages across their conversations (with one
/// agent, when `agentId` is given), oldest first, each naming its
/// conversation, within the same bounds as a conversation's context: the
/// newest conversations first, read one after another until the bounds are
/// reached (tool calls kept with their results, blocked messages left
/// out). It looks at the user's 10 most recently created conversations.
/// With `after=`, the user's newest conversation is read once that write is
/// applied.
#[utoipa::path(get, path = "/users/{userId}/context", tag = "users",
    params(UserPath, UserContextAgent, ContextQuery, AfterQuery),
    responses((status = 200, description = "The user's context", body = UserContextResponse,
        headers(("X-Convo-After" = String, description = "With `after=`: `applied` or `pending`")))))]
fn user_context() {}

/// A user's totals (updated when sessions end).
#[utoipa::path(get, path = "/users/{userId}/stats", tag = "users",
    params(UserPath),
    responses((status = 200, description = "The totals", body = UserStats)))]
fn user_stats() {}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct ExportQuery {
    /// The `nextCursor` of the previous page (opaque).
    cursor: Option<String>,
}

/// Everything convo holds about a user, opened (decrypted), for a parent's
/// review: every conversation with them and every message in it, oldest
/// first within a conversation, at most 500 messages a page. Follow
/// `nextCursor` until it is null.
#[utoipa::path(get, path = "/users/{userId}/export", tag = "users",
    params(UserPath, ExportQuery),
    responses((status = 200, description = "A page of the export", body = UserExportPage)))]
fn export_user() {}

/// Erase everything the owner holds of a user: every conversation with
/// them, every message, their totals. The user's data key is destroyed
/// before the answer (nothing sealed under it opens again); a job then
/// deletes the items, page by page, and survives any crash. Follow
/// `Location` (`GET /erasures/{erasureId}`) until `status` is `done`. A
/// user the owner holds nothing of ends as `nothing_held`.
#[utoipa::path(delete, path = "/users/{userId}", tag = "users",
    params(UserPath),
    responses((status = 202, description = "The erasure is under way",
        headers(("Location" = String, description = "/erasures/{erasureId}")),
        body = ErasureReport)))]
fn delete_user() {}

#[derive(IntoParams)]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
struct ErasurePath {
    /// The erasure's id (a ULID), from `DELETE /users/{userId}`.
    #[param(pattern = "^[0-9A-Za-z]{26}$")]
    erasure_id: String,
}

/// An erasure's progress and, once `done`, its outcome. A finished erasure
/// keeps its counts but no id of the person it erased.
#[utoipa::path(get, path = "/erasures/{erasureId}", tag = "users",
    params(ErasurePath),
    responses(
        (status = 200, description = "The erasure", body = ErasureReport),
        (status = 404, description = "No erasure of this owner has that id (`erasure_not_found`)", body = ErrorBody),
    ))]
fn get_erasure() {}

/// Liveness (no token needed): the API answers. It calls nothing behind
/// it and shows nothing of any tenant; the store's and the queues' state is
/// `GET /health/deep`, for operators.
#[utoipa::path(get, path = "/health", tag = "service", security(()),
    responses(
        (status = 200, description = "The API answers", body = Liveness),
    ))]
fn health() {}

/// The store's and the queues' state, with their figures (every tenant's
/// counts, queue depths, dead letters): for the owners listed in
/// `CONVO_OPERATORS` (403 `forbidden` for any other token). One answer is
/// reused for 2 seconds, however many ask.
#[utoipa::path(get, path = "/health/deep", tag = "service",
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 403, description = "The token's owner is not an operator", body = ErrorBody),
        (status = 503, description = "A component is unhealthy", body = Health),
    ))]
fn deep_health() {}

/// This document (no token needed).
#[utoipa::path(get, path = "/openapi.json", tag = "service", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
fn openapi_document() {}
