//! An owner's tuning of the learned stage, read once at start from the
//! moderation directory (`--moderation-dir`, `CONVO_MODERATION_DIR`), beside
//! the word lists:
//!
//! - `safety.json`, every key optional:
//!   `{"learned": true, "thresholds": {"grooming": 0.6, …}, "exemplarSimilarity": 0.85,
//!   "conversationThreshold": 1.5}`; a threshold is a probability in (0, 1]
//!   (1 turns the category's message-level finding off),
//!   the conversation's threshold a positive number (see the domain's
//!   conversation stage); unknown keys or categories stop the start.
//! - `exemplars/<category>.txt`: texts that must be caught as that category,
//!   one a line (`#` starts a comment); a message whose vector (or one of its
//!   windows') is at least `exemplarSimilarity` (cosine, default 0.85) from
//!   one of them is reported in that category.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::{category_index, dot, unknown_category};

/// The default cosine similarity at which an exemplar matches.
pub const DEFAULT_EXEMPLAR_SIMILARITY: f32 = 0.85;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SafetyFile {
    learned: Option<bool>,
    thresholds: Option<BTreeMap<String, f32>>,
    exemplar_similarity: Option<f32>,
    conversation_threshold: Option<f32>,
}

/// What `safety.json` and `exemplars/` say.
#[derive(Debug, Default)]
pub struct Overrides {
    /// `false` turns the learned stage off (the word lists still run).
    pub learned: bool,
    pub conversation_threshold: Option<f32>,
    pub thresholds: Option<BTreeMap<String, f32>>,
    pub exemplar_similarity: f32,
    /// (category, text) pairs.
    pub exemplars: Vec<(String, String)>,
}

impl Overrides {
    pub fn read(dir: &Path) -> Result<Self, String> {
        let mut out = Overrides {
            learned: true,
            exemplar_similarity: DEFAULT_EXEMPLAR_SIMILARITY,
            ..Default::default()
        };
        let file = dir.join("safety.json");
        if file.exists() {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let parsed: SafetyFile = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            if let Some(t) = &parsed.thresholds {
                for (name, value) in t {
                    category_index(name).ok_or_else(|| format!("{}: {}", file.display(), unknown_category(name)))?;
                    if !(*value > 0.0 && *value <= 1.0) {
                        return Err(format!(
                            "{}: the threshold of {name} is {value}; it must be above 0 and at most 1",
                            file.display()
                        ));
                    }
                }
            }
            if let Some(s) = parsed.exemplar_similarity {
                if !(s > 0.0 && s <= 1.0) {
                    return Err(format!(
                        "{}: exemplarSimilarity is {s}; it must be above 0 and at most 1",
                        file.display()
                    ));
                }
                out.exemplar_similarity = s;
            }
            if let Some(t) = parsed.conversation_threshold.filter(|t| !(t.is_finite() && *t > 0.0)) {
                return Err(format!(
                    "{}: conversationThreshold is {t}; it must be a positive number",
                    file.display()
                ));
            }
            out.thresholds = parsed.thresholds;
            out.learned = parsed.learned.unwrap_or(true);
            out.conversation_threshold = parsed.conversation_threshold;
        }
        let ex_dir = dir.join("exemplars");
        if ex_dir.is_dir() {
            let entries = std::fs::read_dir(&ex_dir).map_err(|e| format!("cannot read {}: {e}", ex_dir.display()))?;
            let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
            files.sort();
            for path in files {
                let ok_ext = path.extension().is_some_and(|x| x == "txt");
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_string();
                if !ok_ext {
                    return Err(format!("{}: exemplar files are <category>.txt", path.display()));
                }
                category_index(&name).ok_or_else(|| format!("{}: {}", path.display(), unknown_category(&name)))?;
                let text =
                    std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                for line in text.lines() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if !line.is_empty() {
                        out.exemplars.push((name.clone(), line.to_string()));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Owners' exemplars as vectors.
#[derive(Debug, Default)]
pub struct Exemplars {
    vectors: Vec<Vec<f32>>,
    categories: Vec<usize>,
    similarity: f32,
}

impl Exemplars {
    pub fn build(
        texts: &[(String, String)],
        similarity: f32,
        embed: impl Fn(&str) -> Vec<f32>,
    ) -> Result<Self, String> {
        let mut out = Exemplars {
            similarity,
            ..Default::default()
        };
        for (category, text) in texts {
            let v = embed(text);
            if v.iter().all(|x| *x == 0.0) {
                return Err(format!("the {category} exemplar {text:?} has no token the model knows"));
            }
            out.vectors.push(v);
            out.categories
                .push(category_index(category).ok_or_else(|| unknown_category(category))?);
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// Raises `best[i]` to the cosine similarity of `v` and exemplar `i`
    /// (both unit vectors).
    pub(crate) fn similarities(&self, v: &[f32], best: &mut [f32]) {
        for (b, e) in best.iter_mut().zip(&self.vectors) {
            *b = b.max(dot(e, v));
        }
    }

    /// The category and similarity of each exemplar whose best similarity
    /// reached the threshold.
    pub(crate) fn matched<'a>(&'a self, best: &'a [f32]) -> impl Iterator<Item = (usize, f32)> + 'a {
        best.iter()
            .zip(&self.categories)
            .filter(|(s, _)| **s >= self.similarity)
            .map(|(s, c)| (*c, *s))
    }
}
