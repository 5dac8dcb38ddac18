//! The rule-based moderator: category word lists matched in linear time
//! (Aho-Corasick over case- and accent-folded text, whole words only) and
//! detectors for personal data. Deterministic and allocation-light, so it
//! runs on every message before it is enqueued. Personal data: e-mail
//! addresses, phone numbers, payment card numbers (Luhn-checked) and street
//! addresses, each found by a small hand scanner in linear time.
//!
//! Score = 1 − the sum of the weights of the categories found (each counted
//! once), clamped to [0, 1]. Bands (the seed service's): ≥ 0.8 safe,
//! 0.5–0.8 flagged, < 0.5 blocked.
//!
//! A list's line that starts with `~` is a *topic* term: a word that names
//! a subject ("suicide", "sexual", "murder", "vaping") which health
//! education, news, crisis support, history and fiction talk about as
//! often as harm does. A category found only by topic terms counts when the
//! caller confirms it ([`RuleModerator::screen_confirmed`]: the layered
//! moderator asks the learned stage) and always when nobody can
//! ([`Moderator::screen`], the lists alone). Acts and phrases aimed at
//! someone ("kill myself", "send me pics") are plain terms and always count.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use convo_schema::{SafetyAction, SafetyFinding, SafetyStage, SafetyVerdict, Severity};
use unicode_normalization::UnicodeNormalization;

use crate::ports::Moderator;

mod pii;
use pii::*;

/// One category: its terms, the weight of a hit and its severity.
#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    pub weight: f64,
    pub severity: Severity,
    /// Terms that count on their own.
    pub terms: Vec<String>,
    /// Topic terms (`~` in the file): they count when confirmed.
    pub topics: Vec<String>,
}

/// The built-in categories, from the word lists in `data/moderation/`.
pub fn default_categories() -> Vec<Category> {
    let list = |name: &str, weight: f64, severity: Severity, text: &str| {
        let (terms, topics) = parse_word_list(text);
        Category {
            name: name.to_string(),
            weight,
            severity,
            terms,
            topics,
        }
    };
    vec![
        list(
            "profanity",
            0.3,
            Severity::Low,
            include_str!("../../data/moderation/profanity.txt"),
        ),
        list(
            "violence",
            0.35,
            Severity::Medium,
            include_str!("../../data/moderation/violence.txt"),
        ),
        // Flagged rather than blocked, at the highest severity: the agent
        // must answer a child in distress, carefully.
        list(
            "self_harm",
            0.45,
            Severity::Critical,
            include_str!("../../data/moderation/self_harm.txt"),
        ),
        list(
            "sexual",
            0.6,
            Severity::High,
            include_str!("../../data/moderation/sexual.txt"),
        ),
        list(
            "bullying",
            0.3,
            Severity::Medium,
            include_str!("../../data/moderation/bullying.txt"),
        ),
        list(
            "drugs",
            0.35,
            Severity::Medium,
            include_str!("../../data/moderation/drugs.txt"),
        ),
    ]
}

/// Terms and topic terms of a word-list file: one per line, `#` starts a
/// comment, `~` starts a topic term.
pub fn parse_word_list(text: &str) -> (Vec<String>, Vec<String>) {
    let mut terms = Vec::new();
    let mut topics = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        match line.strip_prefix('~') {
            Some(topic) if !topic.trim().is_empty() => topics.push(fold(topic.trim())),
            Some(_) => {}
            None if !line.is_empty() => terms.push(fold(line)),
            None => {}
        }
    }
    (terms, topics)
}

/// Lower case, accents removed: "Café" and "cafe" match alike.
pub fn fold(text: &str) -> String {
    // Most chat text is ASCII: nothing to decompose, nothing to map.
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    text.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        // Typographic apostrophes, as phones type them: "you’re" is "you're".
        .map(|c| {
            if matches!(c, '\u{2019}' | '\u{2018}' | '\u{02bc}') {
                '\''
            } else {
                c
            }
        })
        .flat_map(char::to_lowercase)
        .collect()
}

const PII_WEIGHT: f64 = 0.25;

/// Whether a category found only by topic terms counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Confirmation {
    /// Nobody can judge it (the lists alone): it counts.
    Unconditional,
    /// Confirmed by a learned probability, recorded on the finding.
    By(f32),
    /// Not confirmed: it does not count.
    Refused,
}

pub struct RuleModerator {
    categories: Vec<Category>,
    matcher: AhoCorasick,
    /// For each pattern of `matcher`, the index of its category and
    /// whether it is a topic term.
    pattern_category: Vec<(usize, bool)>,
}

impl RuleModerator {
    pub fn new(categories: Vec<Category>) -> Self {
        let mut patterns = Vec::new();
        let mut pattern_category = Vec::new();
        for (i, c) in categories.iter().enumerate() {
            for (terms, topic) in [(&c.terms, false), (&c.topics, true)] {
                for t in terms {
                    patterns.push(t.clone());
                    pattern_category.push((i, topic));
                }
            }
        }
        let matcher = AhoCorasick::builder()
            // Every match, overlapping ones included: a longer phrase that
            // fails the whole-word check must not hide a shorter one inside
            // it, and one stretch of text can belong to two categories.
            .match_kind(MatchKind::Standard)
            // A DFA: the fastest search, for a few hundred terms a few
            // hundred KB built once per cold start.
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .expect("word lists build an automaton");
        Self {
            categories,
            matcher,
            pattern_category,
        }
    }

    /// The categories found in `content`, in first-hit order, each with
    /// whether only topic terms found it.
    fn categories_in(&self, folded: &str) -> Vec<(usize, bool)> {
        let bytes = folded.as_bytes();
        let mut found: Vec<(usize, bool)> = Vec::new();
        for m in self.matcher.find_overlapping_iter(folded) {
            let before_ok = m.start() == 0 || !is_word_byte(folded, m.start(), true);
            let after_ok = m.end() == bytes.len() || !is_word_byte(folded, m.end(), false);
            if before_ok && after_ok {
                let (cat, topic) = self.pattern_category[m.pattern().as_usize()];
                match found.iter_mut().find(|(c, _)| *c == cat) {
                    Some(entry) => entry.1 &= topic,
                    None => found.push((cat, topic)),
                }
            }
        }
        found
    }

    /// The verdict of the lists and detectors, where a category found only
    /// by topic terms counts when `confirm(category)` says so.
    pub fn screen_confirmed(&self, content: &str, confirm: impl Fn(&str) -> Confirmation) -> SafetyVerdict {
        self.verdict(content, &confirm)
    }

    fn verdict(&self, content: &str, confirm: &dyn Fn(&str) -> Confirmation) -> SafetyVerdict {
        let folded = fold(content);
        let mut categories = Vec::new();
        let mut findings = Vec::new();
        let mut weight = 0.0;
        let mut severity: Option<Severity> = None;
        for (i, topic_only) in self.categories_in(&folded) {
            let c = &self.categories[i];
            let probability = match topic_only.then(|| confirm(&c.name)) {
                None | Some(Confirmation::Unconditional) => None,
                Some(Confirmation::By(p)) => Some((f64::from(p) * 1000.0).round() / 1000.0),
                Some(Confirmation::Refused) => continue,
            };
            categories.push(c.name.clone());
            findings.push(SafetyFinding {
                category: c.name.clone(),
                stage: SafetyStage::Wordlist,
                severity: c.severity,
                probability,
            });
            weight += c.weight;
            severity = severity.max(Some(c.severity));
        }
        // The detectors need an "@" (e-mail) or a digit (phone, card, house
        // number): most messages have neither and skip them.
        let digits = content.bytes().any(|b| b.is_ascii_digit());
        let runs = if digits { digit_runs(content) } else { Vec::new() };
        for (name, found) in [
            ("pii_email", content.contains('@') && has_email(content)),
            ("pii_phone", runs.iter().any(|r| !r.is_card() && r.is_phone(content))),
            ("pii_card", runs.iter().any(DigitRun::is_card)),
            ("pii_address", digits && has_street_address(content)),
        ] {
            if found {
                categories.push(name.to_string());
                findings.push(SafetyFinding {
                    category: name.to_string(),
                    stage: SafetyStage::Detector,
                    severity: Severity::Medium,
                    probability: None,
                });
                weight += PII_WEIGHT;
                severity = severity.max(Some(Severity::Medium));
            }
        }
        let score = score_of(weight);
        let reason = (!categories.is_empty()).then(|| format!("matched {}", categories.join(", ")));
        SafetyVerdict {
            score,
            action: band(score),
            severity: if categories.is_empty() { None } else { severity },
            categories,
            reason,
            findings,
            model: None,
        }
    }
}

impl Default for RuleModerator {
    fn default() -> Self {
        Self::new(default_categories())
    }
}

/// The score of a message whose categories weigh `weight` in all: 1 − the
/// weight, to two decimals, within [0, 1].
pub fn score_of(weight: f64) -> f64 {
    ((1.0 - weight) * 100.0).round().clamp(0.0, 100.0) / 100.0
}

/// The seed service's bands: ≥ 0.8 safe, 0.5–0.8 flagged, < 0.5 blocked.
pub fn band(score: f64) -> SafetyAction {
    if score >= 0.8 {
        SafetyAction::Safe
    } else if score >= 0.5 {
        SafetyAction::Flagged
    } else {
        SafetyAction::Blocked
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
    /// The lists alone: topic terms count (nothing can confirm them).
    fn screen(&self, content: &str) -> SafetyVerdict {
        self.verdict(content, &|_| Confirmation::Unconditional)
    }

    fn redact(&self, content: &str) -> Option<String> {
        let mut spans: Vec<(usize, usize, &str)> = Vec::new();
        spans.extend(email_spans(content).into_iter().map(|(a, b)| (a, b, "[email]")));
        for mut run in digit_runs(content) {
            // The "+" or "(" that opens a number goes with it.
            while run.start > 0 && matches!(content.as_bytes()[run.start - 1], b'+' | b'(') {
                run.start -= 1;
            }
            if run.is_card() {
                spans.push((run.start, run.end, "[card]"));
            } else if run.is_phone(content) {
                spans.push((run.start, run.end, "[phone]"));
            }
        }
        spans.extend(
            street_address_spans(content)
                .into_iter()
                .map(|(a, b)| (a, b, "[address]")),
        );
        if spans.is_empty() {
            return None;
        }
        spans.sort();
        let mut out = String::with_capacity(content.len());
        let mut at = 0;
        for (start, end, mask) in spans {
            if start < at {
                // Overlaps the previous mask (a phone inside an address).
                at = at.max(end);
                continue;
            }
            out.push_str(&content[at..start]);
            out.push_str(mask);
            at = end;
        }
        out.push_str(&content[at..]);
        Some(out)
    }
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
    fn a_tilde_marks_a_topic_term() {
        let (terms, topics) = parse_word_list("# c\nKill myself\n~Suicide  # a subject\n~\n\n");
        assert_eq!(terms, vec!["kill myself"]);
        assert_eq!(topics, vec!["suicide"]);
        let sh = default_categories()
            .into_iter()
            .find(|c| c.name == "self_harm")
            .unwrap();
        assert!(sh.topics.contains(&"suicide".to_string()));
        assert!(sh.terms.contains(&"kill myself".to_string()));
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
        assert_eq!(
            screen("my number is 415 555 2671 call me").categories,
            vec!["pii_phone"]
        );
        assert!(
            screen("on 2026-11-23 10:30, 12345+67890, 10 20 30 40 50")
                .categories
                .is_empty()
        );
    }

    #[test]
    fn redaction_masks_each_kind_and_keeps_the_rest() {
        let m = RuleModerator::default();
        let text = "Mail kid@example.com or call (415) 555-2671; I live at 42 Oak Street. Card 4111 1111 1111 1111!";
        assert_eq!(
            m.redact(text).as_deref(),
            Some("Mail [email] or call [phone]; I live at [address]. Card [card]!")
        );
        assert_eq!(m.redact("I have 3 cats and 12 fish"), None);
        assert_eq!(
            m.redact("ring +44 20 7946 0958 now").as_deref(),
            Some("ring [phone] now")
        );
    }

    #[test]
    fn cards_and_street_addresses() {
        for text in [
            "4111 1111 1111 1111",
            "4242-4242-4242-4242",
            "378282246310005",
            "5555555555554444 737",
        ] {
            let v = screen(text);
            assert_eq!(v.categories, vec!["pii_card"], "{text}");
            assert_eq!(v.severity, Some(Severity::Medium));
        }
        assert!(
            screen("1234 5678 9012 3456").categories.is_empty(),
            "fails the Luhn check"
        );
        for text in [
            "I live at 42 Oak Street",
            "my address is 1600 Pennsylvania Avenue",
            "i live at 12 cherry lane",
        ] {
            assert_eq!(screen(text).categories, vec!["pii_address"], "{text}");
        }
        for text in [
            "we walked 3 miles down the road",
            "In 1969 Abbey Road came out",
            "Sesame Street",
        ] {
            assert!(screen(text).categories.is_empty(), "{text}");
        }
    }
}
