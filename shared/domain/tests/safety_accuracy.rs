//! The whole moderator (word lists, detectors, then the learned stage)
//! measured on convo's own evaluation set, `models/safety/data/eval/`,
//! which the learned heads are never trained on (`models/safety/train.py`
//! reads only `data/train/`). Its sources are in `models/safety/data/SOURCES.md`.
//!
//! A message "is caught" when its verdict is not `safe`; a category's
//! recall counts the messages labelled with it that are caught, its
//! precision the messages reported in it that are labelled with it (the
//! detectors' `pii_*` count as `personal_data`). Conversations
//! (`conversations.jsonl`) are caught when a message is, or when the
//! rolling risk of the conversation stage reaches its threshold.
//!
//! The floors below sit a little under the figures measured when the heads
//! were trained (BENCHMARKS.md): the test fails when a change to the word
//! lists, the features or the heads makes the moderator worse.
//!
//! `cargo test -p convo-domain --test safety_accuracy -- --nocapture` prints
//! the table.

use std::collections::BTreeMap;

use convo_domain::ports::Moderator;
use convo_domain::screening::{LayeredModerator, next_risk};
use convo_schema::SafetyAction;

const CATEGORIES: [&str; 10] = convo_safety::CATEGORIES;

/// Floors, a little under the measured figures (BENCHMARKS.md, "Safety"),
/// so that a regression fails. The harmless ceiling counts every harmless
/// line of the set, the assistant-style replies of `e5` included (clinical
/// sex education, crisis guidance and history).
const MIN_RECALL_ALL: f64 = 0.77;
const MIN_RECALL_ENGLISH: f64 = 0.87;
const MIN_RECALL_PER_CATEGORY: f64 = 0.57;
const MAX_HARMLESS_FLAGGED: f64 = 0.075;
const MIN_PRECISION_PER_CATEGORY: f64 = 0.72;
const MIN_GROOMING_CONVERSATIONS: f64 = 0.90;
const MAX_HARMLESS_CONVERSATIONS: f64 = 0.35;

struct Example {
    text: String,
    labels: Vec<String>,
    lang: String,
    /// The file it came from (each is one writer's style).
    file: String,
}

fn eval_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/safety/data/eval")
}

fn load_examples() -> Vec<Example> {
    let mut files: Vec<_> = std::fs::read_dir(eval_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('e') && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let file = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        for line in std::fs::read_to_string(&f)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            out.push(Example {
                text: v["text"].as_str().unwrap().to_string(),
                labels: v["labels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_str().unwrap().to_string())
                    .collect(),
                lang: v["lang"].as_str().unwrap_or("en").to_string(),
                file: file.clone(),
            });
        }
    }
    out
}

fn reported(categories: &[String]) -> Vec<String> {
    categories
        .iter()
        .map(|c| {
            if c.starts_with("pii_") {
                "personal_data".to_string()
            } else {
                c.clone()
            }
        })
        .collect()
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Per group (a language, a file): harmful, harmful caught, harmless,
/// harmless flagged.
fn tally<'a>(
    examples: &'a [Example],
    caught: &impl Fn(usize) -> bool,
    group: impl Fn(&'a Example) -> &'a str,
) -> BTreeMap<&'a str, (usize, usize, usize, usize)> {
    let mut out: BTreeMap<&str, (usize, usize, usize, usize)> = BTreeMap::new();
    for (i, e) in examples.iter().enumerate() {
        let entry = out.entry(group(e)).or_default();
        if e.labels.is_empty() {
            entry.2 += 1;
            entry.3 += usize::from(caught(i));
        } else {
            entry.0 += 1;
            entry.1 += usize::from(caught(i));
        }
    }
    out
}

#[test]
fn the_moderator_meets_its_floors_on_the_evaluation_set() {
    let moderator = LayeredModerator::from_dir(None).expect("the built-in moderator");
    let examples = load_examples();
    assert!(examples.len() >= 1500, "{} examples", examples.len());
    let verdicts: Vec<_> = examples.iter().map(|e| moderator.screen(&e.text)).collect();
    let caught = |i: usize| verdicts[i].action != SafetyAction::Safe;

    let harmful: Vec<usize> = (0..examples.len())
        .filter(|i| !examples[*i].labels.is_empty())
        .collect();
    let harmless: Vec<usize> = (0..examples.len()).filter(|i| examples[*i].labels.is_empty()).collect();
    let recall_all = ratio(harmful.iter().filter(|i| caught(**i)).count(), harmful.len());
    let flagged_harmless = ratio(harmless.iter().filter(|i| caught(**i)).count(), harmless.len());
    println!(
        "harmful caught {recall_all:.3} of {}; harmless flagged {flagged_harmless:.3} of {}",
        harmful.len(),
        harmless.len()
    );

    println!(
        "{:<15} {:>7} {:>9} {:>9} {:>5} {:>10}",
        "category", "recall", "category", "precision", "n", "English"
    );
    let mut failures = Vec::new();
    for c in CATEGORIES {
        let labelled: Vec<usize> = harmful
            .iter()
            .copied()
            .filter(|i| examples[*i].labels.iter().any(|l| l == c))
            .collect();
        let recall = ratio(labelled.iter().filter(|i| caught(**i)).count(), labelled.len());
        let exact = ratio(
            labelled
                .iter()
                .filter(|i| reported(&verdicts[**i].categories).iter().any(|r| r == c))
                .count(),
            labelled.len(),
        );
        let predicted: Vec<usize> = (0..examples.len())
            .filter(|i| reported(&verdicts[*i].categories).iter().any(|r| r == c))
            .collect();
        let precision = ratio(
            predicted
                .iter()
                .filter(|i| examples[**i].labels.iter().any(|l| l == c))
                .count(),
            predicted.len(),
        );
        let english: Vec<usize> = labelled.iter().copied().filter(|i| examples[*i].lang == "en").collect();
        let recall_en = ratio(english.iter().filter(|i| caught(**i)).count(), english.len());
        println!(
            "{c:<15} {recall:>7.3} {exact:>9.3} {precision:>9.3} {:>5} {recall_en:>10.3}",
            labelled.len()
        );
        if recall < MIN_RECALL_PER_CATEGORY {
            failures.push(format!("{c}: recall {recall:.3} < {MIN_RECALL_PER_CATEGORY}"));
        }
        if precision < MIN_PRECISION_PER_CATEGORY {
            failures.push(format!("{c}: precision {precision:.3} < {MIN_PRECISION_PER_CATEGORY}"));
        }
    }
    let by_lang = tally(&examples, &caught, |e| e.lang.as_str());
    let by_file = tally(&examples, &caught, |e| e.file.as_str());
    for (name, (n, c, hn, hc)) in by_lang.iter().chain(&by_file) {
        println!(
            "{name}: harmful caught {:.3} of {n}; harmless flagged {:.3} of {hn}",
            ratio(*c, *n),
            ratio(*hc, *hn)
        );
    }
    // For comparison, the word lists and detectors alone.
    let rules = convo_domain::wordlists::rule_moderator(None).expect("word lists");
    let alone: Vec<bool> = examples
        .iter()
        .map(|e| rules.screen(&e.text).action != SafetyAction::Safe)
        .collect();
    let en = |i: &usize| examples[*i].lang == "en";
    println!(
        "word lists alone: harmful caught {:.3} (English {:.3}); harmless flagged {:.3}",
        ratio(harmful.iter().filter(|i| alone[**i]).count(), harmful.len()),
        ratio(
            harmful.iter().filter(|i| en(i) && alone[**i]).count(),
            harmful.iter().filter(|i| en(i)).count()
        ),
        ratio(harmless.iter().filter(|i| alone[**i]).count(), harmless.len()),
    );
    let (n, c, ..) = by_lang["en"];
    let recall_en = ratio(c, n);
    if recall_all < MIN_RECALL_ALL {
        failures.push(format!("recall {recall_all:.3} < {MIN_RECALL_ALL}"));
    }
    if recall_en < MIN_RECALL_ENGLISH {
        failures.push(format!("English recall {recall_en:.3} < {MIN_RECALL_ENGLISH}"));
    }
    if flagged_harmless > MAX_HARMLESS_FLAGGED {
        failures.push(format!(
            "harmless flagged {flagged_harmless:.3} > {MAX_HARMLESS_FLAGGED}"
        ));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_conversation_stage_catches_grooming_built_over_turns() {
    let moderator = LayeredModerator::from_dir(None).expect("the built-in moderator");
    let text = std::fs::read_to_string(eval_dir().join("conversations.jsonl")).unwrap();
    let (mut grooming, mut grooming_caught, mut by_stage, mut harmless, mut harmless_caught) = (0, 0, 0, 0, 0);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut level = 0.0;
        let mut message_caught = false;
        let mut risk_caught = false;
        for turn in v["turns"].as_array().unwrap() {
            let (verdict, risk) = moderator.screen_turn(turn["text"].as_str().unwrap());
            message_caught |= verdict.action != SafetyAction::Safe;
            if !v["grooming"].as_bool().unwrap() && verdict.action != SafetyAction::Safe {
                eprintln!(
                    "DIAG {:?} {:?} :: {}",
                    verdict.categories,
                    verdict
                        .findings
                        .iter()
                        .map(|f| (f.category.clone(), f.probability))
                        .collect::<Vec<_>>(),
                    turn["text"].as_str().unwrap()
                );
            }
            let risk = risk.expect("the learned stage is on");
            level = next_risk(level, &risk);
            risk_caught |= level >= risk.threshold;
        }
        let caught = message_caught || risk_caught;
        if v["grooming"].as_bool().unwrap() {
            grooming += 1;
            grooming_caught += usize::from(caught);
            by_stage += usize::from(risk_caught && !message_caught);
        } else {
            harmless += 1;
            harmless_caught += usize::from(caught);
        }
    }
    let g = ratio(grooming_caught, grooming);
    let h = ratio(harmless_caught, harmless);
    println!(
        "grooming conversations caught {g:.3} of {grooming} ({by_stage} by the conversation stage alone); \
         harmless conversations flagged {h:.3} of {harmless}"
    );
    assert!(g >= MIN_GROOMING_CONVERSATIONS, "grooming conversations caught {g:.3}");
    assert!(h <= MAX_HARMLESS_CONVERSATIONS, "harmless conversations flagged {h:.3}");
}

fn normalised(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace() || *c == '_')
        .collect::<String>()
        .trim()
        .to_string()
}

/// The heads never saw an evaluation text: no training line equals one
/// (after lower-casing and dropping punctuation).
#[test]
fn the_evaluation_set_shares_no_text_with_the_training_set() {
    let mut eval: std::collections::HashSet<String> = load_examples().iter().map(|e| normalised(&e.text)).collect();
    let conversations = std::fs::read_to_string(eval_dir().join("conversations.jsonl")).unwrap();
    for line in conversations.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for t in v["turns"].as_array().unwrap() {
            eval.insert(normalised(t["text"].as_str().unwrap()));
        }
    }
    let train_dir = eval_dir().join("../train");
    let mut shared = Vec::new();
    let mut n = 0;
    for f in std::fs::read_dir(&train_dir).unwrap() {
        let path = f.unwrap().path();
        for line in std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = v["text"].as_str().unwrap();
            n += 1;
            if eval.contains(&normalised(text)) {
                shared.push(format!("{}: {text}", path.display()));
            }
        }
    }
    assert!(n > 5000, "{n} training lines");
    assert!(shared.is_empty(), "{shared:#?}");
}
