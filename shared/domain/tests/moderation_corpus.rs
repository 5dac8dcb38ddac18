//! Precision and recall of the rule-based moderator over a labelled corpus,
//! `tests/moderation/corpus.jsonl` at the repository root: one JSON object a
//! line, `{"text": ..., "categories": [...]}` with the exact set of
//! categories the moderator should report (empty for a safe text) and an
//! optional `note` saying why a tricky line is labelled as it is.
//!
//! Thresholds (the test fails below them):
//! - every category: precision ≥ 0.90 and recall ≥ 0.90;
//! - safe texts (no category expected): at most 5 % reported with any category;
//! - coverage: at least 8 examples per category and 60 safe texts, so a
//!   ratio never rests on a handful of lines.
//!
//! The table and every disagreement are printed:
//! `CARGO_TARGET_DIR=target cargo test -p convo-domain --test moderation_corpus -- --nocapture`

use std::collections::BTreeSet;

use convo_domain::moderation::{RuleModerator, default_categories};
use convo_domain::ports::Moderator;

const MIN_PRECISION: f64 = 0.90;
const MIN_RECALL: f64 = 0.90;
const MAX_SAFE_FALSE_POSITIVE_RATE: f64 = 0.05;
const MIN_EXAMPLES_PER_CATEGORY: usize = 8;
const MIN_SAFE_EXAMPLES: usize = 60;

/// The categories beyond the word lists: the personal-data detectors.
const PII_CATEGORIES: &[&str] = &["pii_email", "pii_phone", "pii_address", "pii_card"];

struct Example {
    line: usize,
    text: String,
    expected: BTreeSet<String>,
}

fn load_corpus() -> Vec<Example> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/moderation/corpus.jsonl");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(i + 1, l))
        .collect()
}

fn parse_line(line: usize, raw: &str) -> Example {
    let v: serde_json::Value = serde_json::from_str(raw).unwrap_or_else(|e| panic!("line {line}: {e}"));
    let text = v["text"].as_str().unwrap_or_else(|| panic!("line {line}: no text"));
    let categories = v["categories"]
        .as_array()
        .unwrap_or_else(|| panic!("line {line}: no categories array"));
    let expected = categories
        .iter()
        .map(|c| {
            c.as_str()
                .unwrap_or_else(|| panic!("line {line}: category not a string"))
                .to_string()
        })
        .collect();
    Example {
        line,
        text: text.to_string(),
        expected,
    }
}

fn known_categories() -> Vec<String> {
    let mut names: Vec<String> = default_categories().into_iter().map(|c| c.name).collect();
    names.extend(PII_CATEGORIES.iter().map(|s| s.to_string()));
    names
}

#[derive(Default)]
struct Counts {
    true_pos: usize,
    false_pos: usize,
    false_neg: usize,
}

impl Counts {
    fn support(&self) -> usize {
        self.true_pos + self.false_neg
    }

    /// Precision with nothing reported is vacuously 1.
    fn precision(&self) -> f64 {
        ratio(self.true_pos, self.true_pos + self.false_pos)
    }

    fn recall(&self) -> f64 {
        ratio(self.true_pos, self.support())
    }
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 { 1.0 } else { n as f64 / d as f64 }
}

#[test]
fn moderator_meets_precision_and_recall_on_the_corpus() {
    let corpus = load_corpus();
    let names = known_categories();
    let moderator = RuleModerator::default();
    let mut counts: Vec<Counts> = names.iter().map(|_| Counts::default()).collect();
    let (mut safe, mut safe_flagged, mut exact) = (0, 0, 0);
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();

    for ex in &corpus {
        for c in &ex.expected {
            assert!(names.contains(c), "line {}: unknown category {c:?}", ex.line);
        }
        assert!(seen.insert(ex.text.as_str()), "line {}: duplicate text", ex.line);
        let got: BTreeSet<String> = moderator.screen(&ex.text).categories.into_iter().collect();
        for (name, n) in names.iter().zip(counts.iter_mut()) {
            match (ex.expected.contains(name), got.contains(name)) {
                (true, true) => n.true_pos += 1,
                (false, true) => n.false_pos += 1,
                (true, false) => n.false_neg += 1,
                (false, false) => {}
            }
        }
        if ex.expected.is_empty() {
            safe += 1;
            safe_flagged += usize::from(!got.is_empty());
        }
        if got == ex.expected {
            exact += 1;
        } else {
            println!(
                "line {:>3}: expected {:?}, got {:?}: {}",
                ex.line, ex.expected, got, ex.text
            );
        }
    }

    println!(
        "\n{:<12} {:>7} {:>4} {:>4} {:>4} {:>9} {:>7}",
        "category", "support", "tp", "fp", "fn", "precision", "recall"
    );
    for (name, n) in names.iter().zip(&counts) {
        println!(
            "{:<12} {:>7} {:>4} {:>4} {:>4} {:>9.3} {:>7.3}",
            name,
            n.support(),
            n.true_pos,
            n.false_pos,
            n.false_neg,
            n.precision(),
            n.recall()
        );
        if n.support() < MIN_EXAMPLES_PER_CATEGORY {
            problems.push(format!("{name}: only {} examples", n.support()));
        }
        if n.precision() < MIN_PRECISION {
            problems.push(format!("{name}: precision {:.3} < {MIN_PRECISION}", n.precision()));
        }
        if n.recall() < MIN_RECALL {
            problems.push(format!("{name}: recall {:.3} < {MIN_RECALL}", n.recall()));
        }
    }
    let fp_rate = ratio(safe_flagged, safe);
    println!("safe texts: {safe}, reported with a category: {safe_flagged} (false-positive rate {fp_rate:.3})");
    println!("exact category set on {exact} of {} texts\n", corpus.len());
    if safe < MIN_SAFE_EXAMPLES {
        problems.push(format!("only {safe} safe texts"));
    }
    if fp_rate > MAX_SAFE_FALSE_POSITIVE_RATE {
        problems.push(format!(
            "safe false-positive rate {fp_rate:.3} > {MAX_SAFE_FALSE_POSITIVE_RATE}"
        ));
    }
    assert!(
        problems.is_empty(),
        "moderation corpus thresholds not met:\n{}",
        problems.join("\n")
    );
}
