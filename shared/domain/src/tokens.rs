//! Token counts for `/context?maxTokens=`: what a chat model is charged
//! for a message, counted with the model's own tokenizer (tiktoken's BPE
//! files, bundled by `tiktoken-rs`; nothing is downloaded).
//!
//! A message costs its framing (3 tokens), its role, its content, and for
//! each tool call its name, its arguments and 1 more; a tool result also
//! its call's id. A reply costs 3 tokens of priming, once. These are the
//! counts of OpenAI's cookbook ("How to count tokens with tiktoken"), which
//! `tiktoken-rs` follows too. Text is encoded as ordinary text: a special
//! token's spelling in a message is counted as the characters it is.

use convo_schema::Role;
use convo_schema::api::ContextMessage;
use tiktoken_rs::CoreBPE;

/// Tokens framing every message.
pub const PER_MESSAGE: usize = 3;
/// Tokens priming the reply, once per request.
pub const REPLY_PRIMING: usize = 3;
/// Tokens each tool call adds beyond its name and arguments.
pub const PER_TOOL_CALL: usize = 1;

pub use convo_schema::queries::Tokenizer;

/// Counting with a [`Tokenizer`] (its name is the schema's; the encodings
/// are tiktoken's).
pub trait Count {
    /// Tokens of a text, special tokens counted as text.
    fn count(self, text: &str) -> usize;
    /// What one message costs in a chat request.
    fn message(self, m: &ContextMessage) -> usize;
}

fn bpe(t: Tokenizer) -> &'static CoreBPE {
    match t {
        Tokenizer::O200kBase => tiktoken_rs::o200k_base_singleton(),
        Tokenizer::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
    }
}

impl Count for Tokenizer {
    fn count(self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        bpe(self).encode_ordinary(text).len()
    }

    fn message(self, m: &ContextMessage) -> usize {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
            Role::Tool => "tool",
        };
        let mut n = PER_MESSAGE + self.count(role) + self.count(&m.content);
        for call in &m.tool_calls {
            n += self.count(&call.name) + self.count(&call.arguments) + PER_TOOL_CALL;
        }
        if let Some(id) = &m.tool_call_id {
            n += self.count(id);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, content: &str) -> ContextMessage {
        ContextMessage {
            role,
            content: content.into(),
            tool_calls: vec![],
            tool_call_id: None,
        }
    }

    #[test]
    fn counts_follow_the_published_encodings() {
        // "hello world" is 2 tokens in both encodings; "tiktoken is great!"
        // is 6 in cl100k_base (OpenAI's cookbook).
        assert_eq!(Tokenizer::O200kBase.count("hello world"), 2);
        assert_eq!(Tokenizer::Cl100kBase.count("hello world"), 2);
        assert_eq!(Tokenizer::Cl100kBase.count("tiktoken is great!"), 6);
        assert_eq!(Tokenizer::O200kBase.count(""), 0);
        // A special token's spelling is ordinary text.
        assert!(Tokenizer::O200kBase.count("<|endoftext|>") > 1);
        // framing 3 + "user" 1 + "hello world" 2
        assert_eq!(Tokenizer::O200kBase.message(&msg(Role::User, "hello world")), 6);
    }

    #[test]
    fn tokenizer_names_parse() {
        assert_eq!(Tokenizer::parse(None).unwrap(), Tokenizer::O200kBase);
        assert_eq!(Tokenizer::parse(Some("cl100k_base")).unwrap(), Tokenizer::Cl100kBase);
        assert_eq!(
            Tokenizer::parse(Some("gpt2")).unwrap_err().field.as_deref(),
            Some("tokenizer")
        );
    }
}
