//! Documented limits. Each is enforced by `validate` and listed in the README.

/// Maximum size of one message's content, in bytes of UTF-8 (413 above).
pub const MAX_CONTENT_BYTES: usize = 16 * 1024;
/// Maximum number of tool calls on one assistant message (400 above).
pub const MAX_TOOL_CALLS: usize = 32;
/// Maximum number of messages in one append request (400 above).
pub const MAX_MESSAGES_PER_APPEND: usize = 20;
/// Maximum size of a metadata object once serialized as JSON (413 above).
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Maximum length of names, ids, titles, types and channels, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Maximum length of an externalId or an Idempotency-Key, in characters.
pub const MAX_EXTERNAL_ID_CHARS: usize = 200;
/// Maximum length of a review note, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;
/// Longest retention a conversation may ask for, in days.
pub const MAX_RETENTION_DAYS: u32 = 3650;
/// Maximum size of a whole request body (413 above).
pub const MAX_BODY_BYTES: usize = 512 * 1024;
/// Default and maximum page sizes for list endpoints.
pub const DEFAULT_PAGE_LIMIT: usize = 50;
pub const MAX_PAGE_LIMIT: usize = 200;
/// Default and maximum number of messages returned by the context endpoint.
pub const DEFAULT_CONTEXT_MESSAGES: usize = 15;
pub const MAX_CONTEXT_MESSAGES: usize = 200;
/// Length of the first/last message previews on a conversation, in characters.
pub const PREVIEW_CHARS: usize = 120;
/// How far in the future a client-supplied createdAt may lie (clock skew).
pub const MAX_FUTURE_SKEW_SECONDS: i64 = 300;
