//! Titles: the offline extractive generator and the title job's rules.
//!
//! The generator is deterministic: it takes the topic words of the user's
//! early turns (no stop words, no numbers, no e-mail addresses, nothing the
//! moderator objects to, no names of the participants), ranks them by how
//! often they occur and how early, and keeps 3 to 8 in first-seen order.

use crate::ApiDeps;
use std::collections::{HashMap, HashSet};

use convo_schema::commands::TitleJob;
use convo_schema::{Role, SafetyAction, TitleSource};

use crate::Deps;
use crate::error::DomainError;
use crate::moderation::fold;
use crate::ports::*;

/// How many of the user's first turns feed the title.
pub const TITLE_TURNS: usize = 8;
pub const MIN_TITLE_WORDS: usize = 3;
pub const MAX_TITLE_WORDS: usize = 6;
/// A title, with the conversation's type before its topic words, has at
/// most this many words and characters (a `PATCH` takes up to 200).
pub const MAX_SHAPED_WORDS: usize = 8;
pub const MAX_TITLE_CHARS: usize = 80;
/// Longer "words" are run-ons or noise, not topics.
const MAX_TOPIC_WORD_CHARS: usize = 20;

pub struct ExtractiveTitler {
    stop_words: HashSet<String>,
    moderator: std::sync::Arc<dyn Moderator>,
}

impl ExtractiveTitler {
    pub fn new(moderator: std::sync::Arc<dyn Moderator>) -> Self {
        let stop_words = include_str!("../data/stopwords.txt")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(str::split_whitespace)
            .map(str::to_string)
            .collect();
        Self { stop_words, moderator }
    }

    /// A topic word as `(folded, as written in lower case)`: the folded form
    /// (no accents, lower case) is matched against stop words, names and
    /// the moderator; the title keeps the user's letters.
    fn topic_word(&self, raw: &str) -> Option<(String, String)> {
        if raw.contains('@') || raw.chars().any(|c| c.is_ascii_digit()) {
            return None;
        }
        let word: String = raw
            .trim_matches(|c: char| !c.is_alphanumeric())
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '\'' || *c == '-')
            .collect();
        let folded = fold(&word);
        let length = folded.chars().count();
        if !(3..=MAX_TOPIC_WORD_CHARS).contains(&length) || self.stop_words.contains(&folded) {
            return None;
        }
        if self.moderator.screen(&folded).action != SafetyAction::Safe {
            return None;
        }
        Some((folded, word.to_lowercase()))
    }
}

impl TitleGenerator for ExtractiveTitler {
    fn title(&self, user_turns: &[&str], avoid: &[&str]) -> Option<String> {
        let avoid: HashSet<String> = avoid.iter().flat_map(|n| n.split_whitespace()).map(fold).collect();
        // stem -> (first spelling, count, first position); "dragon" and
        // "dragons" count as one word.
        let mut seen: HashMap<String, (String, usize, usize)> = HashMap::new();
        let mut position = 0;
        for turn in user_turns.iter().take(TITLE_TURNS) {
            for raw in turn.split_whitespace() {
                if let Some((folded, written)) = self.topic_word(raw).filter(|(w, _)| !avoid.contains(w)) {
                    seen.entry(stem(&folded)).or_insert((written, 0, position)).1 += 1;
                    position += 1;
                }
            }
        }
        if seen.is_empty() {
            return None;
        }
        let mut ranked: Vec<(String, usize, usize)> = seen.into_values().collect();
        // Most frequent first; ties go to the earlier word, then alphabetical.
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
        ranked.truncate(MAX_TITLE_WORDS);
        ranked.sort_by_key(|(_, _, p)| *p);
        let words: Vec<String> = ranked.into_iter().map(|(w, _, _)| capitalize(&w)).collect();
        Some(words.join(" "))
    }
}

/// A plural's singular, crudely: enough to merge "castle" and "castles".
fn stem(word: &str) -> String {
    match word.strip_suffix('s') {
        Some(base) if base.chars().count() >= 3 && !base.ends_with('s') => base.to_string(),
        _ => word.to_string(),
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Pads a title that has fewer than [`MIN_TITLE_WORDS`] words so that it
/// always reads as a title: "Dinosaurs" becomes "Chat about Dinosaurs".
fn shape_title(kind: &str, topic: Option<String>, date: &str) -> String {
    let kind = capitalize(kind);
    let title = match topic {
        Some(t) if t.split_whitespace().count() >= MIN_TITLE_WORDS => t,
        Some(t) if t.split_whitespace().count() == 2 => format!("{kind}: {t}"),
        Some(t) => format!("{kind} about {t}"),
        None => format!("{kind} on {date}"),
    };
    bound(&title)
}

/// At most [`MAX_SHAPED_WORDS`] words and [`MAX_TITLE_CHARS`] characters,
/// cut between words (a conversation's type is free text of up to 200
/// characters).
fn bound(title: &str) -> String {
    let mut out = String::new();
    for word in title.split_whitespace().take(MAX_SHAPED_WORDS) {
        let extra = usize::from(!out.is_empty()) + word.chars().count();
        if out.chars().count() + extra > MAX_TITLE_CHARS {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.is_empty() {
        out = title.chars().take(MAX_TITLE_CHARS).collect();
    }
    out
}

/// What a title job did. Its `Debug` never shows the title (made of what
/// the child said, and sealed in the store): logs name the outcome only.
#[derive(PartialEq)]
pub enum TitleOutcome {
    Set(String),
    /// The user chose the title; it is never overwritten.
    KeptUserTitle,
    /// The conversation no longer exists.
    Gone,
}

impl TitleOutcome {
    /// The outcome's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            TitleOutcome::Set(_) => "set",
            TitleOutcome::KeptUserTitle => "kept_user_title",
            TitleOutcome::Gone => "gone",
        }
    }
}

impl std::fmt::Debug for TitleOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Queues `title.generated`; a failure fails the job, which is retried.
async fn announce(
    deps: &Deps,
    c: &convo_schema::Conversation,
    reason: convo_schema::commands::TitleReason,
) -> Result<(), DomainError> {
    deps.events
        .send_events(&[crate::events::title_generated(c, reason)])
        .await
        .map_err(|e| DomainError::Unavailable(format!("could not queue the title's event: {e}")))
}

/// At the end of a sealed conversation: writes the conversation item
/// again (through the sealing store, with the previews as the chunks read),
/// so that lists, which read it alone, show the last message's preview.
/// False when the conversation moved meanwhile (read it again).
async fn refresh_snapshot(deps: &Deps, record: &ConversationRecord, job: &TitleJob) -> Result<bool, DomainError> {
    if record.key_id.is_none() || job.reason != convo_schema::commands::TitleReason::SessionEnded {
        return Ok(true);
    }
    let mut again = record.clone();
    again.version = record.version + 1;
    match deps.store.conversations.put_conversation(&again, record.version).await {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Applies a title job. Idempotent: the same conversation gives the same title.
pub async fn generate_title(deps: &ApiDeps, job: &TitleJob) -> Result<TitleOutcome, DomainError> {
    for _ in 0..8 {
        let Some(mut record) = deps.store.conversations.get_conversation(&job.conversation_id).await? else {
            return Ok(TitleOutcome::Gone);
        };
        if record.conversation.owner_id != job.owner_id || record.deleting {
            return Ok(TitleOutcome::Gone);
        }
        if record.conversation.title_source == Some(TitleSource::User) {
            return match refresh_snapshot(deps, &record, job).await? {
                true => Ok(TitleOutcome::KeptUserTitle),
                false => continue,
            };
        }
        let page = deps
            .store
            .messages
            .list_messages(
                &job.conversation_id,
                &MessageQuery {
                    limit: TITLE_TURNS * 4,
                    ..MessageQuery::default()
                },
            )
            .await?;
        let turns: Vec<&str> = page
            .items
            .iter()
            .filter(|m| m.role == Role::User && !m.flagged)
            .map(|m| m.content.as_str())
            .take(TITLE_TURNS)
            .collect();
        let date = record.conversation.start_time.format("%-d %B %Y").to_string();
        let c = &record.conversation;
        let names: Vec<&str> = [c.user_name.as_deref(), c.agent_name.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let title = shape_title(&c.kind, deps.titler.title(&turns, &names), &date);
        let expected = record.version;
        let c = &mut record.conversation;
        if c.title.as_deref() == Some(title.as_str()) && c.title_generated_at.is_some() {
            // Set by an earlier run of this job, whose event may not have
            // been queued: queued again, with the same id.
            if !refresh_snapshot(deps, &record, job).await? {
                continue;
            }
            announce(deps, &record.conversation, job.reason).await?;
            return Ok(TitleOutcome::Set(title));
        }
        c.title = Some(title.clone());
        c.title_source = Some(TitleSource::Generated);
        c.title_generated_at = Some(deps.clock.now());
        record.version = expected + 1;
        match deps.store.conversations.put_conversation(&record, expected).await {
            Ok(()) => {
                announce(deps, &record.conversation, job.reason).await?;
                return Ok(TitleOutcome::Set(title));
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(DomainError::Unavailable(
        "conversation busy; title job will be retried".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moderation::RuleModerator;

    fn titler() -> ExtractiveTitler {
        ExtractiveTitler::new(std::sync::Arc::new(RuleModerator::default()))
    }

    #[test]
    fn takes_topic_words_in_order() {
        let t = titler()
            .title(
                &[
                    "Can you tell me about dinosaurs?",
                    "Which dinosaurs could fly? I love pterodactyls",
                    "Do volcanoes erupt often?",
                ],
                &[],
            )
            .unwrap();
        assert_eq!(t, "Dinosaurs Fly Love Pterodactyls Volcanoes Erupt");
        let t = titler()
            .title(&["a dragon story", "more dragons and castles", "the castle"], &[])
            .unwrap();
        assert_eq!(t, "Dragon Story Castles");
        let words = t.split_whitespace().count();
        assert!((MIN_TITLE_WORDS..=8).contains(&words));
    }

    #[test]
    fn leaves_out_personal_data_and_bad_words() {
        let t = titler()
            .title(
                &["Mia here: my number is 415 555 2671 and email is kid@example.com, shit, let's talk rockets"],
                &["Mia Jones", "Teddy"],
            )
            .unwrap();
        assert_eq!(t, "Number Email Talk Rockets");
    }

    #[test]
    fn titles_keep_the_users_letters_and_stay_short() {
        let t = titler()
            .title(&["Erzähl mir eine Geschichte über Märchen und Drachen"], &[])
            .unwrap();
        assert!(t.contains("Erzähl") && t.contains("Märchen"), "{t}");
        assert!(!t.contains("Erzahl") && !t.contains("Marchen"), "{t}");
        // One long run-on word, and a long run-on turn.
        let long = "a".repeat(300);
        let run_on = "dragons castles knights princesses wizards unicorns giants trolls fairies ".repeat(20);
        for turns in [vec![long.as_str(), "tell me about dragons"], vec![run_on.as_str()]] {
            let shaped = shape_title("story", titler().title(&turns, &[]), "1 May 2026");
            assert!(shaped.chars().count() <= MAX_TITLE_CHARS, "{shaped}");
            assert!(shaped.split_whitespace().count() <= MAX_SHAPED_WORDS, "{shaped}");
        }
        let kind = "k".repeat(200);
        let shaped = shape_title(&kind, Some("Dragons".into()), "1 May 2026");
        assert_eq!(shaped.chars().count(), MAX_TITLE_CHARS);
        let shaped = shape_title("a very long type of conversation indeed", Some("Dragons".into()), "x");
        assert!(shaped.split_whitespace().count() <= MAX_SHAPED_WORDS, "{shaped}");
    }

    #[test]
    fn short_topics_are_padded_and_empty_falls_back() {
        assert_eq!(
            shape_title("story", Some("Dragons".into()), "1 May 2026"),
            "Story about Dragons"
        );
        assert_eq!(shape_title("chat", None, "1 May 2026"), "Chat on 1 May 2026");
        assert_eq!(titler().title(&["hi", "ok thanks"], &[]), None);
    }
}
