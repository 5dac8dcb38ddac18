//! The query strings of the read routes, as given (`*Params`, borrowed
//! strings) and parsed (`*Query`, typed, defaults applied). The HTTP edge
//! parses a query string here and hands the domain the typed query; a bad
//! parameter is a [`ValidationError`] naming it, before any use case runs.

use chrono::Duration;

use crate::limits::{
    DEFAULT_CONTEXT_MESSAGES, DEFAULT_PAGE_LIMIT, MAX_CONTEXT_MESSAGES, MAX_EXTERNAL_ID_CHARS, MAX_PAGE_LIMIT,
};
use crate::{ConversationStatus, FlagStatus, Timestamp, ValidationError, identity, validate};

/// The order of a page of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// The tokenizer a token budget is counted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tokenizer {
    /// GPT-4o, GPT-4.1, o-series, GPT-5 (the default).
    #[default]
    O200kBase,
    /// GPT-4, GPT-3.5 Turbo, text-embedding-3.
    Cl100kBase,
}

impl Tokenizer {
    pub const ALL: [Self; 2] = [Self::O200kBase, Self::Cl100kBase];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::O200kBase => "o200k_base",
            Self::Cl100kBase => "cl100k_base",
        }
    }

    /// `tokenizer=` as given (default `o200k_base`).
    pub fn parse(raw: Option<&str>) -> Result<Self, ValidationError> {
        match raw {
            None => Ok(Self::O200kBase),
            Some(s) => Self::ALL
                .into_iter()
                .find(|t| t.as_str() == s)
                .ok_or_else(|| ValidationError::invalid("tokenizer", "tokenizer must be o200k_base or cl100k_base")),
        }
    }
}

/// The largest token budget taken (the largest context windows hold a
/// few million tokens; convo returns at most 200 messages anyway).
pub const MAX_CONTEXT_TOKENS: usize = 10_000_000;

/// `after=`: the commandId of a write (letters, digits, `-` and `_`).
pub fn command_id(raw: &str) -> Result<String, ValidationError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_EXTERNAL_ID_CHARS
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(raw.to_string())
    } else {
        Err(ValidationError::invalid(
            "after",
            "after must be the commandId of a write (letters, digits, - and _)",
        ))
    }
}

fn after(raw: Option<&str>) -> Result<Option<String>, ValidationError> {
    raw.map(command_id).transpose()
}

/// The query string of `GET /conversations`, as given: every filter is
/// optional.
#[derive(Debug, Default, Clone, Copy)]
pub struct ListParams<'a> {
    pub user_id: Option<&'a str>,
    pub agent_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub flagged: Option<&'a str>,
    pub cursor: Option<&'a str>,
    pub limit: Option<&'a str>,
}

/// `GET /conversations`, parsed: ids in the form they are stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub status: Option<ConversationStatus>,
    pub flagged: Option<bool>,
    pub cursor: Option<String>,
    pub limit: usize,
}

impl ListParams<'_> {
    pub fn parse(&self) -> Result<ListQuery, ValidationError> {
        Ok(ListQuery {
            user_id: self.user_id.map(|raw| identity::party_id("userId", raw)).transpose()?,
            agent_id: self
                .agent_id
                .map(|raw| identity::party_id("agentId", raw))
                .transpose()?,
            status: self
                .status
                .map(|s| {
                    ConversationStatus::parse(s)
                        .ok_or_else(|| ValidationError::invalid("status", "status must be active, ended or archived"))
                })
                .transpose()?,
            flagged: self.flagged.map(|f| validate::boolean("flagged", f)).transpose()?,
            cursor: self.cursor.map(str::to_string),
            limit: validate::limit("limit", self.limit, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)?,
        })
    }
}

impl Default for ListQuery {
    fn default() -> Self {
        ListParams::default().parse().expect("no parameters parse")
    }
}

/// The query string of `GET /conversations/{id}/messages`, as given.
#[derive(Debug, Default, Clone, Copy)]
pub struct MessageParams<'a> {
    pub cursor: Option<&'a str>,
    pub limit: Option<&'a str>,
    pub order: Option<&'a str>,
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    /// `true`: only the flagged (and blocked) messages.
    pub flagged: Option<&'a str>,
    /// A write's commandId: answer once it is applied.
    pub after: Option<&'a str>,
}

/// `GET /conversations/{id}/messages`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagesQuery {
    pub cursor: Option<String>,
    pub limit: usize,
    pub order: Order,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub flagged: bool,
    pub after: Option<String>,
}

impl MessageParams<'_> {
    pub fn parse(&self) -> Result<MessagesQuery, ValidationError> {
        Ok(MessagesQuery {
            cursor: self.cursor.map(str::to_string),
            limit: validate::limit("limit", self.limit, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)?,
            order: match self.order {
                None | Some("asc") => Order::Asc,
                Some("desc") => Order::Desc,
                Some(_) => return Err(ValidationError::invalid("order", "order must be asc or desc")),
            },
            since: self.since.map(|s| validate::timestamp("since", s)).transpose()?,
            until: self.until.map(|s| validate::timestamp("until", s)).transpose()?,
            flagged: self
                .flagged
                .map(|f| validate::boolean("flagged", f))
                .transpose()?
                .unwrap_or(false),
            after: after(self.after)?,
        })
    }
}

impl Default for MessagesQuery {
    fn default() -> Self {
        MessageParams::default().parse().expect("no parameters parse")
    }
}

/// The query string of `GET /conversations/{id}/context`, as given.
#[derive(Debug, Default, Clone, Copy)]
pub struct ContextParams<'a> {
    pub max_messages: Option<&'a str>,
    pub max_age: Option<&'a str>,
    /// A token budget: the newest whole messages that fit in it.
    pub max_tokens: Option<&'a str>,
    /// `o200k_base` (default) or `cl100k_base`.
    pub tokenizer: Option<&'a str>,
    pub after: Option<&'a str>,
}

/// `GET /conversations/{id}/context`, parsed. With a token budget,
/// `max_messages` defaults to its maximum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextQuery {
    pub max_messages: usize,
    /// `None`: no age bound (absent, or `0`).
    pub max_age: Option<Duration>,
    pub max_tokens: Option<usize>,
    pub tokenizer: Tokenizer,
    pub after: Option<String>,
}

impl ContextParams<'_> {
    pub fn parse(&self) -> Result<ContextQuery, ValidationError> {
        let max_tokens = self
            .max_tokens
            .map(|raw| validate::limit("maxTokens", Some(raw), MAX_CONTEXT_TOKENS, MAX_CONTEXT_TOKENS))
            .transpose()?;
        let tokenizer = Tokenizer::parse(self.tokenizer)?;
        let default_messages = if max_tokens.is_some() {
            MAX_CONTEXT_MESSAGES
        } else {
            DEFAULT_CONTEXT_MESSAGES
        };
        Ok(ContextQuery {
            max_messages: validate::limit("maxMessages", self.max_messages, default_messages, MAX_CONTEXT_MESSAGES)?,
            max_age: match self.max_age {
                Some(raw) => validate::max_age("maxAge", raw)?,
                None => None,
            },
            max_tokens,
            tokenizer,
            after: after(self.after)?,
        })
    }
}

impl Default for ContextQuery {
    fn default() -> Self {
        ContextParams::default().parse().expect("no parameters parse")
    }
}

/// The query string of `GET /users/{userId}/context`, as given: the
/// context's bounds, and the agent whose conversations it spans.
#[derive(Debug, Default, Clone, Copy)]
pub struct UserContextParams<'a> {
    pub agent_id: Option<&'a str>,
    pub context: ContextParams<'a>,
}

/// `GET /users/{userId}/context`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserContextQuery {
    /// Only the conversations with this agent (the id as stored).
    pub agent_id: Option<String>,
    pub context: ContextQuery,
}

impl UserContextParams<'_> {
    pub fn parse(&self) -> Result<UserContextQuery, ValidationError> {
        Ok(UserContextQuery {
            agent_id: self
                .agent_id
                .map(|raw| identity::party_id("agentId", raw))
                .transpose()?,
            context: self.context.parse()?,
        })
    }
}

/// The query string of `GET /reviews`, as given.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReviewParams<'a> {
    pub status: Option<&'a str>,
    pub cursor: Option<&'a str>,
    pub limit: Option<&'a str>,
}

/// `GET /reviews`, parsed (default: the unreviewed ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewQuery {
    pub status: FlagStatus,
    pub cursor: Option<String>,
    pub limit: usize,
}

impl ReviewParams<'_> {
    pub fn parse(&self) -> Result<ReviewQuery, ValidationError> {
        Ok(ReviewQuery {
            status: match self.status {
                None => FlagStatus::Unreviewed,
                Some(s) => FlagStatus::parse(s).ok_or_else(|| {
                    ValidationError::invalid("status", "status must be unreviewed, reviewed, dismissed or escalated")
                })?,
            },
            cursor: self.cursor.map(str::to_string),
            limit: validate::limit("limit", self.limit, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_parameter() {
        let q = ListParams::default().parse().unwrap();
        assert_eq!((q.limit, q.flagged, q.status), (DEFAULT_PAGE_LIMIT, None, None));
        let err = ListParams {
            limit: Some("0"),
            ..Default::default()
        }
        .parse()
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("limit"));
        let q = ListParams {
            user_id: Some("+1 (415) 555-2671"),
            status: Some("ended"),
            flagged: Some("true"),
            ..Default::default()
        }
        .parse()
        .unwrap();
        assert_eq!(q.user_id.as_deref(), Some("+14155552671"), "the identity rule applies");
        assert_eq!((q.status, q.flagged), (Some(ConversationStatus::Ended), Some(true)));
        let err = MessageParams {
            order: Some("sideways"),
            ..Default::default()
        }
        .parse()
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("order"));
        let err = MessageParams {
            after: Some("no spaces"),
            ..Default::default()
        }
        .parse()
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("after"));
        let q = ContextParams {
            max_tokens: Some("1000"),
            ..Default::default()
        }
        .parse()
        .unwrap();
        assert_eq!(
            q.max_messages, MAX_CONTEXT_MESSAGES,
            "a budget lifts the message default"
        );
        assert_eq!(ContextQuery::default().max_messages, DEFAULT_CONTEXT_MESSAGES);
        let err = ContextParams {
            tokenizer: Some("gpt2"),
            ..Default::default()
        }
        .parse()
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("tokenizer"));
        assert_eq!(ReviewParams::default().parse().unwrap().status, FlagStatus::Unreviewed);
        assert!(
            ReviewParams {
                status: Some("lost"),
                ..Default::default()
            }
            .parse()
            .is_err()
        );
    }
}
