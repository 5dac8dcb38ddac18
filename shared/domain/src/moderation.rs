//! The rule-based moderator: category word lists matched in linear time
//! (Aho-Corasick over case- and accent-folded text, whole words only) and
//! detectors for personal data. Deterministic and allocation-light, so it
//! runs on every message before it is enqueued.
//!
//! Score = 1 − the sum of the weights of the categories found (each counted
//! once), clamped to [0, 1]. Bands (the seed service's): ≥ 0.8 safe,
//! 0.5–0.8 flagged, < 0.5 blocked.

use aho_corasick::{AhoCorasick, MatchKind};
use convo_schema::{SafetyAction, SafetyVerdict, Severity};
use unicode_normalization::UnicodeNormalization;

use crate::ports::Moderator;

/// One category: its terms, the weight of a hit and its severity.
#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    pub weight: f64,
    pub severity: Severity,
    pub terms: Vec<String>,
}

/// The built-in categories, from the word lists in `data/moderation/`.
pub fn default_categories() -> Vec<Category> {
    let list = |name: &str, weight: f64, severity: Severity, text: &str| Category {
        name: name.to_string(),
        weight,
        severity,
        terms: parse_word_list(text),
    };
    vec![
        list(
            "profanity",
            0.3,
            Severity::Low,
            include_str!("../data/moderation/profanity.txt"),
        ),
        list(
            "violence",
            0.35,
            Severity::Medium,
            include_str!("../data/moderation/violence.txt"),
        ),
        // Flagged rather than blocked, at the highest severity: the agent
        // must answer a child in distress, carefully.
        list(
            "self_harm",
            0.45,
            Severity::Critical,
            include_str!("../data/moderation/self_harm.txt"),
        ),
        list(
            "sexual",
            0.6,
            Severity::High,
            include_str!("../data/moderation/sexual.txt"),
        ),
        list(
            "bullying",
            0.3,
            Severity::Medium,
            include_str!("../data/moderation/bullying.txt"),
        ),
        list(
            "drugs",
            0.35,
            Severity::Medium,
            include_str!("../data/moderation/drugs.txt"),
        ),
    ]
}

/// Terms of a word-list file: one per line, `#` starts a comment.
pub fn parse_word_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(fold)
        .collect()
}

/// Lower case, accents removed: "Café" and "cafe" match alike.
pub fn fold(text: &str) -> String {
    text.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

const PII_WEIGHT: f64 = 0.25;

pub struct RuleModerator {
    categories: Vec<Category>,
    matcher: AhoCorasick,
    /// For each pattern of `matcher`, the index of its category.
    pattern_category: Vec<usize>,
}

impl RuleModerator {
    pub fn new(categories: Vec<Category>) -> Self {
        let mut patterns = Vec::new();
        let mut pattern_category = Vec::new();
        for (i, c) in categories.iter().enumerate() {
            for t in &c.terms {
                patterns.push(t.clone());
                pattern_category.push(i);
            }
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .expect("word lists build an automaton");
        Self {
            categories,
            matcher,
            pattern_category,
        }
    }

    /// The categories found in `content`, in first-hit order.
    fn categories_in(&self, folded: &str) -> Vec<usize> {
        let bytes = folded.as_bytes();
        let mut found = Vec::new();
        for m in self.matcher.find_iter(folded) {
            let before_ok = m.start() == 0 || !is_word_byte(folded, m.start(), true);
            let after_ok = m.end() == bytes.len() || !is_word_byte(folded, m.end(), false);
            if before_ok && after_ok {
                let cat = self.pattern_category[m.pattern().as_usize()];
                if !found.contains(&cat) {
                    found.push(cat);
                }
            }
        }
        found
    }
}

impl Default for RuleModerator {
    fn default() -> Self {
        Self::new(default_categories())
    }
}

/// Whether the character just before (`before`) or at byte `at` is part of a word.
fn is_word_byte(s: &str, at: usize, before: bool) -> bool {
    let c = if before {
        s[..at].chars().next_back()
    } else {
        s[at..].chars().next()
    };
    c.is_some_and(|c| c.is_alphanumeric() || c == '\'')
}

impl Moderator for RuleModerator {
    fn screen(&self, content: &str) -> SafetyVerdict {
        let folded = fold(content);
        let mut categories = Vec::new();
        let mut weight = 0.0;
        let mut severity: Option<Severity> = None;
        for i in self.categories_in(&folded) {
            let c = &self.categories[i];
            categories.push(c.name.clone());
            weight += c.weight;
            severity = severity.max(Some(c.severity));
        }
        for (name, found) in [
            ("pii_email", has_email(content)),
            ("pii_phone", has_phone_number(content)),
        ] {
            if found {
                categories.push(name.to_string());
                weight += PII_WEIGHT;
                severity = severity.max(Some(Severity::Medium));
            }
        }
        let score = ((1.0 - weight) * 100.0).round().clamp(0.0, 100.0) / 100.0;
        let action = if score >= 0.8 {
            SafetyAction::Safe
        } else if score >= 0.5 {
            SafetyAction::Flagged
        } else {
            SafetyAction::Blocked
        };
        let reason = (!categories.is_empty()).then(|| format!("matched {}", categories.join(", ")));
        SafetyVerdict {
            score,
            action,
            severity: if categories.is_empty() { None } else { severity },
            categories,
            reason,
        }
    }
}

/// `local@domain.tld`, found without a regex engine.
fn has_email(text: &str) -> bool {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '<' || c == '>')
        .any(|tok| {
            let tok = tok.trim_matches(|c: char| !c.is_alphanumeric());
            match tok.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && domain
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                }
                None => false,
            }
        })
}

/// A run of 10 to 15 digits, possibly broken by spaces, dots, dashes or
/// brackets and led by `+`, standing on its own (not glued to letters, as
/// in a hex id): how people write phone numbers.
fn has_phone_number(text: &str) -> bool {
    let mut digits = 0;
    let mut gap = 0;
    let mut glued = false;
    let mut prev: Option<char> = None;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if digits == 0 {
                glued = prev.is_some_and(char::is_alphabetic);
            }
            digits += 1;
            gap = 0;
        } else if matches!(c, ' ' | '-' | '.' | '(' | ')' | '+') && digits > 0 && gap < 2 {
            gap += 1;
        } else {
            if (10..=15).contains(&digits) && !glued && !c.is_alphabetic() {
                return true;
            }
            digits = 0;
            gap = 0;
        }
        prev = Some(c);
    }
    (10..=15).contains(&digits) && !glued
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(text: &str) -> SafetyVerdict {
        RuleModerator::default().screen(text)
    }

    #[test]
    fn child_talk_is_safe() {
        for text in [
            "Can you tell me a story about a dragon?",
            "I built a sandcastle with my sister today!",
            "What do cats eat?",
        ] {
            let v = screen(text);
            assert_eq!(v.action, SafetyAction::Safe, "{text}");
            assert_eq!(v.score, 1.0);
            assert!(v.categories.is_empty());
        }
    }

    #[test]
    fn whole_words_only_and_accent_insensitive() {
        assert_eq!(
            screen("We drove through Scunthorpe and Essex").action,
            SafetyAction::Safe
        );
        assert_eq!(screen("the class assessment").action, SafetyAction::Safe);
        let v = screen("ŠHIT happens");
        assert_eq!(v.categories, vec!["profanity"]);
        assert_eq!(v.action, SafetyAction::Flagged);
    }

    #[test]
    fn bands_follow_the_weights() {
        let v = screen("I want to kill myself");
        assert_eq!(v.action, SafetyAction::Flagged);
        assert_eq!(v.severity, Some(Severity::Critical));
        assert_eq!(v.categories, vec!["self_harm"]);
        let v = screen("send me a naked picture, shit");
        assert_eq!(v.action, SafetyAction::Blocked);
        assert!(v.score < 0.5);
    }

    #[test]
    fn personal_data() {
        assert_eq!(screen("call me at (415) 555-2671").categories, vec!["pii_phone"]);
        assert_eq!(screen("mail kid@example.com").categories, vec!["pii_email"]);
        assert!(screen("I have 3 cats and 12 fish").categories.is_empty());
        assert!(screen("in 2024 we went to 2 parks").categories.is_empty());
        assert!(screen("id 3fa41234567890bc and ab1234567890").categories.is_empty());
        assert_eq!(screen("+44 20 7946 0958.").categories, vec!["pii_phone"]);
    }
}
