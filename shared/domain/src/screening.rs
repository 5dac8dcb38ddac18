//! The moderator every function uses: the word lists and personal-data
//! detectors first (fast, and they explain themselves), then the learned
//! stage (`convo-safety`) for what the lists miss, and each message's part
//! in its conversation's rolling grooming risk.
//!
//! A learned finding can only add: a category the lists already found keeps
//! their finding, and the verdict's score is never above the lists' score,
//! so a learned verdict raises a message's band and never lowers it.
//!
//! Self-harm is flagged at critical and never blocked by the learned stage
//! on its own: an agent must answer a child in distress, carefully.

use std::path::Path;

use convo_safety::{Model, Overrides, Scores};
use convo_schema::commands::TurnRisk;
use convo_schema::{SafetyAction, SafetyFinding, SafetyStage, SafetyVerdict, Severity};

use crate::moderation::{Confirmation, RuleModerator, band, score_of};
use crate::ports::Moderator;

/// Each learned category's weight in the score (as a word list's), and its
/// severity. Alone: self-harm 0.55 (flagged, critical); sexual content 0.4
/// and sexual content involving minors 0.2 (blocked); hate 0.45 (blocked);
/// the rest flagged.
pub const LEARNED_CATEGORIES: [(&str, f64, Severity); 10] = [
    ("self_harm", 0.45, Severity::Critical),
    ("sexual", 0.6, Severity::High),
    ("sexual_minors", 0.8, Severity::Critical),
    ("grooming", 0.35, Severity::High),
    ("violence", 0.35, Severity::Medium),
    ("weapons", 0.35, Severity::High),
    ("hate", 0.55, Severity::High),
    ("bullying", 0.3, Severity::Medium),
    ("drugs", 0.35, Severity::Medium),
    ("personal_data", 0.25, Severity::Medium),
];

/// Which learned categories confirm a word list's topic terms (see
/// `moderation`): a topic term counts when the model gives one of them at
/// least [`TOPIC_CONFIRMATION`] of its threshold. Profanity has no learned
/// counterpart: its topic terms, if an owner writes any, always count.
pub const TOPIC_CONFIRMERS: [(&str, &[&str]); 5] = [
    ("violence", &["violence", "weapons", "hate", "bullying"]),
    ("self_harm", &["self_harm"]),
    ("sexual", &["sexual", "sexual_minors", "grooming"]),
    ("bullying", &["bullying", "hate"]),
    ("drugs", &["drugs"]),
];

/// The share of a learned category's threshold that confirms a topic term:
/// half the evidence the model alone would need to report the category.
/// Fixed before it was measured, not tuned.
pub const TOPIC_CONFIRMATION: f32 = 0.5;

/// The conversation stage: each message's grooming signal (the higher of
/// its grooming and sexual-content-involving-minors probabilities, counted
/// when at least `floor`) accumulates as `level × decay + signal`; the
/// conversation is flagged when the level reaches `threshold`.
///
/// The defaults (floor 0.4, decay 0.9 a message, threshold 1.5): a signal
/// under 0.4 is noise; one strong message (which the message stage flags
/// anyway) or two stay under the threshold, while four or five moderate
/// ones (0.45, each below every message threshold) a few turns apart, with
/// the agent's harmless replies between them, cross it. A message's
/// influence halves in about seven messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConversationPolicy {
    pub floor: f32,
    pub decay: f32,
    pub threshold: f32,
}

impl Default for ConversationPolicy {
    fn default() -> Self {
        Self {
            floor: 0.4,
            decay: 0.9,
            threshold: 1.5,
        }
    }
}

/// The moderator: the word lists, then the learned stage, each tuned by the
/// files of `dir` (if any): `<category>.txt` lists, `safety.json` and
/// `exemplars/<category>.txt`.
pub fn moderator(dir: Option<&Path>) -> Result<LayeredModerator, String> {
    LayeredModerator::from_dir(dir)
}

/// Word lists, then the learned stage.
pub struct LayeredModerator {
    rules: RuleModerator,
    learned: Option<Model>,
    policy: ConversationPolicy,
}

impl LayeredModerator {
    pub fn new(rules: RuleModerator, learned: Option<Model>, policy: ConversationPolicy) -> Self {
        Self { rules, learned, policy }
    }

    /// The built-in lists and model, each tuned by the files of `dir` when
    /// given: `<category>.txt` word lists, `safety.json` and `exemplars/`.
    pub fn from_dir(dir: Option<&Path>) -> Result<Self, String> {
        let rules = crate::wordlists::rule_moderator(dir)?;
        let overrides = match dir {
            Some(d) => Overrides::read(d)?,
            None => Overrides {
                learned: true,
                ..Default::default()
            },
        };
        let mut policy = ConversationPolicy::default();
        if let Some(t) = overrides.conversation_threshold {
            policy.threshold = t;
        }
        let learned = match overrides.learned {
            true => Some(Model::builtin()?.with_overrides(&overrides)?),
            false => None,
        };
        Ok(Self::new(rules, learned, policy))
    }

    /// The learned model's version, when the stage is on.
    pub fn model_version(&self) -> Option<&str> {
        self.learned.as_ref().map(Model::version)
    }

    pub fn policy(&self) -> ConversationPolicy {
        self.policy
    }

    /// The message's grooming signal from its scores.
    fn signal(&self, s: &Scores) -> f32 {
        let p = s.probability_of("grooming").max(s.probability_of("sexual_minors"));
        if p >= self.policy.floor && p.is_finite() {
            p
        } else {
            0.0
        }
    }
}

/// `verdict` (the lists') with the learned findings of `scores` added.
pub fn combine(mut verdict: SafetyVerdict, scores: &Scores, version: &str) -> SafetyVerdict {
    let has_pii = verdict.categories.iter().any(|c| c.starts_with("pii_"));
    let mut added = Vec::new();
    for (category, probability) in scores.hits() {
        if verdict.categories.iter().any(|c| c == category) || (category == "personal_data" && has_pii) {
            continue;
        }
        let Some((_, weight, severity)) = LEARNED_CATEGORIES.iter().find(|(c, ..)| *c == category) else {
            continue;
        };
        added.push((category, *weight, *severity, probability));
    }
    if added.is_empty() {
        return verdict;
    }
    let rules_weight = 1.0 - verdict.score;
    let mut weight = rules_weight;
    let mut self_harm_only = true;
    for (category, w, severity, probability) in &added {
        weight += w;
        self_harm_only &= *category == "self_harm";
        verdict.categories.push(category.to_string());
        verdict.findings.push(SafetyFinding {
            category: category.to_string(),
            stage: SafetyStage::Learned,
            severity: *severity,
            probability: Some((f64::from(*probability) * 1000.0).round() / 1000.0),
        });
        verdict.severity = verdict.severity.max(Some(*severity));
    }
    let mut score = score_of(weight);
    // Self-harm found by the model alone flags, never blocks.
    if self_harm_only && band(score) == SafetyAction::Blocked && band(verdict.score) != SafetyAction::Blocked {
        score = 0.5;
    }
    let score = score.min(verdict.score);
    verdict.score = score;
    verdict.action = band(score);
    let learned: Vec<&str> = added.iter().map(|(c, ..)| *c).collect();
    verdict.reason = Some(match verdict.reason.take() {
        Some(r) => format!("{r}; learned {}", learned.join(", ")),
        None => format!("learned {}", learned.join(", ")),
    });
    verdict.model = Some(version.to_string());
    verdict
}

impl Moderator for LayeredModerator {
    fn screen(&self, content: &str) -> SafetyVerdict {
        self.screen_turn(content).0
    }

    fn screen_turn(&self, content: &str) -> (SafetyVerdict, Option<TurnRisk>) {
        let Some(model) = &self.learned else {
            return (self.rules.screen(content), None);
        };
        let scores = model.score(content);
        let thresholds = model.thresholds();
        let verdict = self.rules.screen_confirmed(content, |list| {
            let Some((_, confirmers)) = TOPIC_CONFIRMERS.iter().find(|(l, _)| *l == list) else {
                return Confirmation::Unconditional;
            };
            confirmers
                .iter()
                .filter_map(|c| {
                    let i = convo_safety::CATEGORIES.iter().position(|x| x == c)?;
                    let p = scores.probability[i];
                    (p >= TOPIC_CONFIRMATION * thresholds[i].min(1.0)).then_some(p)
                })
                .reduce(f32::max)
                .map_or(Confirmation::Refused, Confirmation::By)
        });
        let risk = TurnRisk {
            signal: self.signal(&scores),
            decay: self.policy.decay,
            threshold: self.policy.threshold,
        };
        let mut verdict = combine(verdict, &scores, model.version());
        // A topic term the model confirmed names the model too.
        if verdict.model.is_none() && verdict.findings.iter().any(|f| f.probability.is_some()) {
            verdict.model = Some(model.version().to_string());
        }
        (verdict, Some(risk))
    }

    fn redact(&self, content: &str) -> Option<String> {
        self.rules.redact(content)
    }
}

/// The level after a message: `level × decay + signal`, kept finite and
/// within [0, 100] whatever a command holds.
pub fn next_risk(level: f32, risk: &TurnRisk) -> f32 {
    let level = if level.is_finite() { level } else { 0.0 };
    let decay = if risk.decay.is_finite() {
        risk.decay.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let signal = if risk.signal.is_finite() {
        risk.signal.clamp(0.0, 1.0)
    } else {
        0.0
    };
    (level * decay + signal).clamp(0.0, 100.0)
}

#[cfg(test)]
mod tests;
