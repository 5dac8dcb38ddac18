//! Validation of API input. Every function returns the first problem found,
//! with the field it concerns; nothing here has side effects.

use chrono::Duration;

use crate::api::{AppendRequest, CreateConversationRequest, NewMessage, PatchConversationRequest};
use crate::limits::*;
use crate::{Metadata, Timestamp, ValidationError};

/// A required identifier: non-empty, at most [`MAX_NAME_CHARS`], no control
/// characters, and none of the characters convo uses as key separators.
pub fn id(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::invalid(field, format!("{field} must not be empty")));
    }
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(ValidationError::invalid(
            field,
            format!("{field} is longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    if value.chars().any(|c| c.is_control() || c == '#' || c == '/') {
        return Err(ValidationError::invalid(
            field,
            format!("{field} must not contain control characters, '#' or '/'"),
        ));
    }
    Ok(())
}

/// An optional display text (names, titles, channel, type).
pub fn text(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::invalid(field, format!("{field} must not be blank")));
    }
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(ValidationError::invalid(
            field,
            format!("{field} is longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::invalid(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

pub fn metadata(field: &str, value: &Metadata) -> Result<(), ValidationError> {
    let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(ValidationError::too_large(
            field,
            format!("{field} is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}"),
        ));
    }
    Ok(())
}

pub fn create(req: &CreateConversationRequest) -> Result<(), ValidationError> {
    id("userId", &req.user_id)?;
    if let Some(days) = req.retention_days
        && !(1..=MAX_RETENTION_DAYS).contains(&days)
    {
        return Err(ValidationError::invalid(
            "retentionDays",
            format!("retentionDays must be from 1 to {MAX_RETENTION_DAYS}"),
        ));
    }
    id("agentId", &req.agent_id)?;
    for (field, value) in [
        ("userName", &req.user_name),
        ("agentName", &req.agent_name),
        ("channel", &req.channel),
        ("type", &req.kind),
        ("title", &req.title),
    ] {
        if let Some(v) = value {
            text(field, v)?;
        }
    }
    if let Some(m) = &req.metadata {
        metadata("metadata", m)?;
    }
    Ok(())
}

pub fn append(req: &AppendRequest, now: Timestamp) -> Result<(), ValidationError> {
    if req.messages.is_empty() {
        return Err(ValidationError::invalid(
            "messages",
            "messages must hold at least one message",
        ));
    }
    if req.messages.len() > MAX_MESSAGES_PER_APPEND {
        return Err(ValidationError::invalid(
            "messages",
            format!(
                "{} messages in one append; the limit is {MAX_MESSAGES_PER_APPEND}",
                req.messages.len()
            ),
        ));
    }
    for (i, m) in req.messages.iter().enumerate() {
        message(i, m, now)?;
    }
    Ok(())
}

fn message(i: usize, m: &NewMessage, now: Timestamp) -> Result<(), ValidationError> {
    let field = |name: &str| format!("messages[{i}].{name}");
    let calls = m.tool_calls.as_deref().unwrap_or_default();
    if m.content.trim().is_empty() && calls.is_empty() {
        return Err(ValidationError::invalid(
            field("content"),
            "content must not be empty (only a message with toolCalls may leave it empty)",
        ));
    }
    if m.content.len() > MAX_CONTENT_BYTES {
        return Err(ValidationError::too_large(
            field("content"),
            format!("content is {} bytes; the limit is {MAX_CONTENT_BYTES}", m.content.len()),
        ));
    }
    tool_fields(i, m, calls)?;
    if let Some(ext) = &m.external_id
        && (ext.trim().is_empty() || ext.chars().count() > MAX_EXTERNAL_ID_CHARS || ext.chars().any(char::is_control))
    {
        return Err(ValidationError::invalid(
            field("externalId"),
            format!("externalId must hold 1 to {MAX_EXTERNAL_ID_CHARS} printable characters"),
        ));
    }
    if let Some(url) = &m.audio_url
        && (url.chars().count() > 2048 || !(url.starts_with("https://") || url.starts_with("s3://")))
    {
        return Err(ValidationError::invalid(
            field("audioUrl"),
            "audioUrl must be an https:// or s3:// URL of at most 2048 characters",
        ));
    }
    if let Some(at) = m.created_at
        && at > now + Duration::seconds(MAX_FUTURE_SKEW_SECONDS)
    {
        return Err(ValidationError::invalid(
            field("createdAt"),
            "createdAt lies in the future",
        ));
    }
    if let Some(meta) = &m.metadata {
        metadata(&field("metadata"), meta)?;
    }
    Ok(())
}

/// The tool calls of an assistant message and the call id of a tool
/// message: each on its own role, each id and name a short text, the
/// arguments counted with the content against one message's limit.
fn tool_fields(i: usize, m: &NewMessage, calls: &[crate::ToolCall]) -> Result<(), ValidationError> {
    let field = |name: &str| format!("messages[{i}].{name}");
    if !calls.is_empty() && m.role != crate::Role::Assistant {
        return Err(ValidationError::invalid(
            field("toolCalls"),
            "only an assistant message carries toolCalls",
        ));
    }
    if calls.len() > MAX_TOOL_CALLS {
        return Err(ValidationError::invalid(
            field("toolCalls"),
            format!(
                "{} tool calls in one message; the limit is {MAX_TOOL_CALLS}",
                calls.len()
            ),
        ));
    }
    let mut bytes = m.content.len();
    for (j, call) in calls.iter().enumerate() {
        text(&field(&format!("toolCalls[{j}].id")), &call.id)?;
        text(&field(&format!("toolCalls[{j}].name")), &call.name)?;
        bytes += call.arguments.len();
    }
    if bytes > MAX_CONTENT_BYTES {
        return Err(ValidationError::too_large(
            field("toolCalls"),
            format!("content and tool call arguments are {bytes} bytes; the limit is {MAX_CONTENT_BYTES}"),
        ));
    }
    if let Some(id) = &m.tool_call_id {
        if m.role != crate::Role::Tool {
            return Err(ValidationError::invalid(
                field("toolCallId"),
                "only a tool message carries toolCallId",
            ));
        }
        text(&field("toolCallId"), id)?;
    }
    Ok(())
}

pub fn patch(req: &PatchConversationRequest) -> Result<(), ValidationError> {
    if let Some(t) = &req.title {
        text("title", t)?;
    }
    if let Some(m) = &req.metadata {
        metadata("metadata", m)?;
    }
    if let Some(s) = &req.status
        && s != "archived"
    {
        return Err(ValidationError::invalid(
            "status",
            "status can only be set to \"archived\"",
        ));
    }
    Ok(())
}

/// Parses a boolean query parameter: `true` or `false`, nothing else.
pub fn boolean(field: &str, raw: &str) -> Result<bool, ValidationError> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ValidationError::invalid(
            field,
            format!("{field} must be true or false"),
        )),
    }
}

/// Parses a page size: 1..=max, default when absent.
pub fn limit(field: &str, raw: Option<&str>, default: usize, max: usize) -> Result<usize, ValidationError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.parse::<i64>() {
        Ok(n) if n >= 1 && n as u64 <= max as u64 => Ok(n as usize),
        _ => Err(ValidationError::invalid(
            field,
            format!("{field} must be an integer from 1 to {max}"),
        )),
    }
}

/// Splits `90s` into its count and the seconds of its unit (s, m, h, d).
/// The unit is the last character, whatever its width (a query string may
/// end in any character: splitting at a byte count would panic); a unit is
/// one ASCII byte, so the split is on a character boundary.
fn split_unit(raw: &str) -> Option<(&str, i64)> {
    let seconds = match raw.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    Some((raw.get(..raw.len() - 1)?, seconds))
}

/// Parses a duration such as `90s`, `30m`, `24h` or `7d` (at most 366 days).
pub fn duration(field: &str, raw: &str) -> Result<Duration, ValidationError> {
    let err = || ValidationError::invalid(field, format!("{field} must look like 90s, 30m, 24h or 7d"));
    let (num, unit_seconds) = split_unit(raw.trim()).ok_or_else(err)?;
    let n: i64 = num.parse().map_err(|_| err())?;
    if n <= 0 {
        return Err(err());
    }
    let secs = n.checked_mul(unit_seconds).ok_or_else(err)?;
    if secs > 366 * 86_400 {
        return Err(err());
    }
    Ok(Duration::seconds(secs))
}

/// A duration as [`duration`] parses it, or zero (`0`, `0s`): an interval
/// that zero turns off.
pub fn duration_or_zero(field: &str, raw: &str) -> Result<Duration, ValidationError> {
    let t = raw.trim();
    if t.trim_end_matches(['s', 'm', 'h', 'd']).chars().all(|c| c == '0') && t.starts_with('0') {
        return Ok(Duration::zero());
    }
    duration(field, raw)
}

/// Parses the `maxAge` of a read: a positive count of seconds, minutes,
/// hours or days (`90s`, `30m`, `24h`, `7d`), digits only. An age longer
/// than any clock can count back (`99999999999d`) bounds nothing: `None`.
pub fn max_age(field: &str, raw: &str) -> Result<Option<Duration>, ValidationError> {
    let err = || {
        ValidationError::invalid(
            field,
            format!("{field} must be a count and a unit: 90s, 30m, 24h or 7d"),
        )
    };
    let (digits, unit_seconds) = split_unit(raw).ok_or_else(err)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    if digits.bytes().all(|b| b == b'0') {
        return Err(err());
    }
    Ok(digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_seconds))
        .and_then(Duration::try_seconds))
}

/// The longest owner id (a token's `sub`) taken: Cognito's are 36
/// characters; DynamoDB's partition keys, which hold it, take 2,048 bytes.
pub const MAX_OWNER_CHARS: usize = 200;

/// An owner id every store key can hold unambiguously: not blank, at most
/// [`MAX_OWNER_CHARS`] characters, no control character (the embedded
/// store's separator is one). A `#` is fine: in every DynamoDB key the owner
/// comes first and the parts after it ([`id`]s) cannot hold one.
pub fn is_owner_id(sub: &str) -> bool {
    !sub.trim().is_empty() && sub.chars().count() <= MAX_OWNER_CHARS && !sub.chars().any(char::is_control)
}

/// Parses an RFC 3339 timestamp given as a query parameter.
pub fn timestamp(field: &str, raw: &str) -> Result<Timestamp, ValidationError> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| ValidationError::invalid(field, format!("{field} must be an RFC 3339 timestamp")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn durations() {
        assert_eq!(duration("maxAge", "24h").unwrap(), Duration::hours(24));
        assert_eq!(duration("maxAge", "90s").unwrap(), Duration::seconds(90));
        assert_eq!(duration("maxAge", "7d").unwrap(), Duration::days(7));
        for bad in ["", "h", "-1h", "0m", "12", "3w", "99999d"] {
            assert!(duration("maxAge", bad).is_err(), "{bad}");
        }
        // A last character of more than one byte used to panic (a split at
        // a byte that is not a character boundary): `maxAge=1%C3%A9`.
        for bad in ["1é", "é", "1h\u{301}", "日", "24日", "\u{1F600}"] {
            let e = duration("maxAge", bad).unwrap_err();
            assert_eq!(
                (e.code, e.field.as_deref()),
                (ErrorCode::ValidationFailed, Some("maxAge")),
                "{bad}"
            );
        }
    }

    #[test]
    fn max_ages() {
        assert_eq!(max_age("maxAge", "24h").unwrap(), Some(Duration::hours(24)));
        assert_eq!(max_age("maxAge", "007d").unwrap(), Some(Duration::days(7)));
        assert_eq!(max_age("maxAge", "400d").unwrap(), Some(Duration::days(400)));
        assert_eq!(max_age("maxAge", "99999999999999999999999d").unwrap(), None);
        assert_eq!(max_age("maxAge", "9223372036854775807s").unwrap(), None);
        for bad in [
            "",
            "h",
            "-1h",
            "+1h",
            " 1h",
            "1h ",
            "0m",
            "000s",
            "12",
            "3w",
            "1.5h",
            "1é",
            "\u{1F600}",
        ] {
            let e = max_age("maxAge", bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("maxAge"), "{bad}");
        }
    }

    proptest::proptest! {
        /// No string makes a query-parameter decoder panic; each answers a
        /// value or a validation error naming its field.
        #[test]
        fn query_decoders_never_panic(raw in "\\PC{0,40}", digits in "[0-9]{1,25}[smhd]?") {
            for input in [raw.as_str(), digits.as_str()] {
                if let Err(e) = duration("maxAge", input) {
                    proptest::prop_assert_eq!(e.field.as_deref(), Some("maxAge"));
                }
                if let Err(e) = max_age("maxAge", input) {
                    proptest::prop_assert_eq!(e.field.as_deref(), Some("maxAge"));
                }
                if let Err(e) = limit("limit", Some(input), 50, 200) {
                    proptest::prop_assert_eq!(e.field.as_deref(), Some("limit"));
                }
                if let Err(e) = timestamp("since", input) {
                    proptest::prop_assert_eq!(e.field.as_deref(), Some("since"));
                }
                if let Err(e) = id("userId", input) {
                    proptest::prop_assert_eq!(e.field.as_deref(), Some("userId"));
                }
            }
        }
    }

    #[test]
    fn an_interval_may_be_zero() {
        for zero in ["0", "0s", "00m"] {
            assert_eq!(duration_or_zero("i", zero).unwrap(), Duration::zero(), "{zero}");
        }
        assert_eq!(duration_or_zero("i", "2s").unwrap(), Duration::seconds(2));
        for bad in ["", "-1s", "0x", "soon"] {
            assert!(duration_or_zero("i", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits() {
        assert_eq!(limit("limit", None, 50, 200).unwrap(), 50);
        assert_eq!(limit("limit", Some("200"), 50, 200).unwrap(), 200);
        for bad in ["0", "-3", "201", "abc", "1e9", "99999999999999999999"] {
            assert!(limit("limit", Some(bad), 50, 200).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_reject_separators_and_blank() {
        assert!(id("userId", "child-42").is_ok());
        for bad in ["", "  ", "a#b", "a/b", "a\nb"] {
            assert!(id("userId", bad).is_err(), "{bad:?}");
        }
        assert!(id("userId", &"x".repeat(201)).is_err());
    }
}
