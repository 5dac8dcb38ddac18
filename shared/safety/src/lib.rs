//! The learned screening stage: what word lists miss (paraphrases,
//! euphemisms, grooming that never uses a listed word).
//!
//! Each category's head is a logistic regression over two views of a text
//! (`models/safety/train.py` trains them; [`features`] computes them):
//!
//! - hashed n-grams: characters 2 to 5 within each word, words, and pairs of
//!   neighbouring words, hashed into 2^18 buckets, counted sublinearly,
//!   weighted by idf and normalised: they catch phrasings and their
//!   misspellings;
//! - a static sentence embedding: the mean of the text's WordPiece tokens'
//!   rows of a table distilled from all-MiniLM-L6-v2
//!   (`models/safety/distil.py`: every vocabulary token through the
//!   transformer, PCA to 256 dimensions, int8): it carries meaning to words
//!   the training texts did not use.
//!
//! A text longer than the window (64 words) is scored window by window, half
//! a window apart, at most [`MAX_WINDOWS`] windows, a category taking its
//! highest window: a harmful sentence inside a long reply is not averaged
//! away, and the work per message is bounded.
//!
//! Why not the transformer itself: a pass costs about 25 ms per short
//! sentence on one core (0.7 GFLOP per 32 tokens) against a budget of 10 ms
//! for a whole exchange, and its weights (90 MB in f32) would not fit a 50 MB
//! Lambda zip; these heads score a 200-character message in tens of
//! microseconds from 11 MB of tables.
//!
//! Owners add exemplars (texts that must be caught) and move thresholds
//! through [`Overrides`].

use std::sync::Arc;

use serde::Deserialize;
use tokenizers::Tokenizer;

mod features;
mod overrides;
mod table;

pub use features::{Sparse, features, word_spans};
pub use overrides::{Exemplars, Overrides};
pub use table::Table;

/// The categories of the learned stage, in the heads' order.
pub const CATEGORIES: [&str; 10] = [
    "self_harm",
    "sexual",
    "sexual_minors",
    "grooming",
    "violence",
    "weapons",
    "hate",
    "bullying",
    "drugs",
    "personal_data",
];

/// The most windows one message is scored in. Content is at most 16 KiB
/// (about 3,000 words, 95 windows); past that, the windows are spread
/// evenly over the text.
pub const MAX_WINDOWS: usize = 128;

/// At most this many bytes of a text are read (a message's content with its
/// tool calls' arguments is at most 32 KiB).
pub const MAX_BYTES: usize = 64 * 1024;

static TOKENIZER: &[u8] = include_bytes!("../../../models/safety/tokenizer.json");
static TABLE: &[u8] = include_bytes!("../../../models/safety/static.bin");
static HEADS_META: &str = include_str!("../../../models/safety/heads.json");
static HEADS: &[u8] = include_bytes!("../../../models/safety/heads.bin");

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeadsMeta {
    format: u32,
    model: String,
    buckets: usize,
    dense_weight: f32,
    window: usize,
    stride: usize,
    categories: Vec<HeadMeta>,
}

#[derive(Debug, Deserialize)]
struct HeadMeta {
    name: String,
    threshold: f32,
    bias: f32,
    scale: f32,
}

/// One category's head: int8 weights over the buckets then the dense
/// dimensions, times `scale`.
#[derive(Debug, Clone)]
pub struct Head {
    weights: &'static [u8],
    scale: f32,
    bias: f32,
    /// The probability at or above which the category is reported.
    pub threshold: f32,
}

impl Head {
    fn weight(&self, i: usize) -> f32 {
        f32::from(self.weights[i] as i8)
    }
}

/// The scores of one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Each category's probability (the highest window's), in
    /// [`CATEGORIES`] order.
    pub probability: [f32; CATEGORIES.len()],
    /// Whether each category reached its threshold (or an owner's exemplar
    /// matched).
    pub hit: [bool; CATEGORIES.len()],
    /// How many windows were scored (the work done, for the bounds test).
    pub windows: usize,
}

impl Scores {
    /// The categories reached, with their probabilities.
    pub fn hits(&self) -> impl Iterator<Item = (&'static str, f32)> + '_ {
        CATEGORIES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.hit[*i])
            .map(|(i, c)| (*c, self.probability[i]))
    }

    pub fn probability_of(&self, category: &str) -> f32 {
        category_index(category).map_or(0.0, |i| self.probability[i])
    }
}

/// The learned stage: tokenizer, tables and heads, shared read-only.
#[derive(Clone)]
pub struct Model {
    tokenizer: Arc<Tokenizer>,
    table: Arc<Table>,
    idf: Arc<Vec<f32>>,
    heads: Arc<Vec<Head>>,
    exemplars: Arc<Exemplars>,
    version: Arc<str>,
    buckets: usize,
    dense_weight: f32,
    window: usize,
    stride: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("version", &self.version).finish()
    }
}

fn le_u32(raw: &[u8], at: usize) -> Result<usize, String> {
    raw.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| "the heads file is truncated".to_string())
}

impl Model {
    /// The model built into the binary.
    pub fn builtin() -> Result<Self, String> {
        let mut tokenizer =
            Tokenizer::from_bytes(TOKENIZER).map_err(|e| format!("the built-in tokenizer does not load: {e}"))?;
        tokenizer
            .with_truncation(None)
            .map_err(|e| format!("tokenizer truncation: {e}"))?;
        tokenizer.with_padding(None);
        let table = Table::parse(TABLE)?;
        let meta: HeadsMeta =
            serde_json::from_str(HEADS_META).map_err(|e| format!("the built-in heads do not parse: {e}"))?;
        if meta.format != 1 {
            return Err(format!("heads format {} is not 1", meta.format));
        }
        let names: Vec<&str> = meta.categories.iter().map(|h| h.name.as_str()).collect();
        if names != CATEGORIES {
            return Err(format!("the heads' categories {names:?} are not {CATEGORIES:?}"));
        }
        if meta.window == 0 || meta.stride == 0 || meta.stride > meta.window {
            return Err("the heads' window and stride are not valid".into());
        }
        if HEADS.get(..4) != Some(b"CVSH".as_slice()) || le_u32(HEADS, 4)? != 1 {
            return Err("the heads file is not CVSH format 1".into());
        }
        let (buckets, dims, count) = (le_u32(HEADS, 8)?, le_u32(HEADS, 12)?, le_u32(HEADS, 16)?);
        let width = buckets + dims;
        let idf_end = 20 + 4 * buckets;
        if buckets != meta.buckets
            || dims != table.dims()
            || count != CATEGORIES.len()
            || HEADS.len() != idf_end + count * width
        {
            return Err("the heads file does not match heads.json and the token table".into());
        }
        let idf = HEADS[20..idf_end]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let heads = meta
            .categories
            .iter()
            .enumerate()
            .map(|(i, h)| Head {
                weights: &HEADS[idf_end + i * width..idf_end + (i + 1) * width],
                scale: h.scale,
                bias: h.bias,
                threshold: h.threshold,
            })
            .collect();
        Ok(Self {
            tokenizer: Arc::new(tokenizer),
            table: Arc::new(table),
            idf: Arc::new(idf),
            heads: Arc::new(heads),
            exemplars: Arc::new(Exemplars::default()),
            version: meta.model.into(),
            buckets,
            dense_weight: meta.dense_weight,
            window: meta.window,
            stride: meta.stride,
        })
    }

    /// The model with an owner's overrides (see [`Overrides`]): thresholds
    /// and exemplars.
    pub fn with_overrides(mut self, o: &Overrides) -> Result<Self, String> {
        if let Some(t) = &o.thresholds {
            let mut heads = (*self.heads).clone();
            for (name, value) in t {
                let i = category_index(name).ok_or_else(|| unknown_category(name))?;
                heads[i].threshold = *value;
            }
            self.heads = Arc::new(heads);
        }
        if !o.exemplars.is_empty() {
            let ex = Exemplars::build(&o.exemplars, o.exemplar_similarity, |t| self.sentence_vector(t))?;
            self.exemplars = Arc::new(ex);
        }
        Ok(self)
    }

    /// The model's version, recorded with every verdict it decides.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The thresholds in force, in [`CATEGORIES`] order.
    pub fn thresholds(&self) -> [f32; CATEGORIES.len()] {
        std::array::from_fn(|i| self.heads[i].threshold)
    }

    /// The normalised mean of the static vectors of `text`'s tokens (zero
    /// when it has none): its sentence embedding.
    pub fn sentence_vector(&self, text: &str) -> Vec<f32> {
        let text = truncate(text, MAX_BYTES);
        let ids = match self.tokenizer.encode_fast(text, false) {
            Ok(enc) => enc.get_ids().to_vec(),
            // The tokenizer refuses nothing it is given as text; should it,
            // the dense view is empty (the n-grams and word lists still run).
            Err(_) => Vec::new(),
        };
        self.table.mean(&ids)
    }

    /// Scores `text`: every category's probability and whether it is hit.
    pub fn score(&self, text: &str) -> Scores {
        let text = truncate(text, MAX_BYTES);
        let mut probability = [0f32; CATEGORIES.len()];
        let mut windows = 0;
        let mut best = vec![0f32; self.exemplars.len()];
        let spans = word_spans(text);
        for w in windows_in(text, &spans, self.window, self.stride) {
            windows += 1;
            let sparse = features(w, self.buckets, &self.idf);
            let dense = self.sentence_vector(w);
            for (i, h) in self.heads.iter().enumerate() {
                let mut z = 0f32;
                for &(k, v) in &sparse {
                    z += h.weight(k as usize) * v;
                }
                for (d, v) in dense.iter().enumerate() {
                    z += h.weight(self.buckets + d) * v * self.dense_weight;
                }
                probability[i] = probability[i].max(sigmoid(z * h.scale + h.bias));
            }
            self.exemplars.similarities(&dense, &mut best);
        }
        // A threshold of 1 turns the category's finding off (its probability
        // still counts, in the conversation stage).
        // Numbers do not count as words here: "reply 11" is one word.
        let words = spans
            .iter()
            .filter(|(a, b)| text[*a..*b].chars().any(char::is_alphabetic))
            .count();
        let mut hit: [bool; CATEGORIES.len()] = std::array::from_fn(|i| {
            let t = self.heads[i].threshold;
            t < 1.0 && probability[i] >= short_text_threshold(t, words)
        });
        for (c, similarity) in self.exemplars.matched(&best) {
            hit[c] = true;
            probability[c] = probability[c].max(similarity);
        }
        Scores {
            probability,
            hit,
            windows,
        }
    }
}

/// The threshold for a text of `words` words (numbers not counted). A text
/// of one to three words
/// gives the heads one or two features to go on ("reply 11", "maybe"), so
/// it must be surer: a quarter of the way from the threshold to 1 for each
/// word short of four. (Short harmful texts are mostly listed words: the
/// word lists still catch "kys".)
pub fn short_text_threshold(threshold: f32, words: usize) -> f32 {
    let short = 4usize.saturating_sub(words.max(1)) as f32 / 4.0;
    threshold + (1.0 - threshold) * short
}

pub(crate) fn category_index(name: &str) -> Option<usize> {
    CATEGORIES.iter().position(|c| *c == name)
}

pub(crate) fn unknown_category(name: &str) -> String {
    format!("no category named {name:?} (known: {})", CATEGORIES.join(", "))
}

/// The windows `text` is scored in: the whole text when it has at most
/// `window` words; else `window` words every `stride` words, the last
/// ending with the text's last word, at most [`MAX_WINDOWS`] (spread
/// evenly).
pub fn windows_of(text: &str, window: usize, stride: usize) -> Vec<&str> {
    windows_in(text, &word_spans(text), window, stride)
}

/// [`windows_of`] over the word spans of `text`, already found.
fn windows_in<'a>(text: &'a str, spans: &[(usize, usize)], window: usize, stride: usize) -> Vec<&'a str> {
    if spans.len() <= window {
        return vec![text];
    }
    let last = spans.len() - window;
    let mut starts: Vec<usize> = (0..=last).step_by(stride).collect();
    if starts.last() != Some(&last) {
        starts.push(last);
    }
    if starts.len() > MAX_WINDOWS {
        let k = starts.len();
        starts = (0..MAX_WINDOWS)
            .map(|i| starts[i * (k - 1) / (MAX_WINDOWS - 1)])
            .collect();
    }
    starts
        .into_iter()
        .map(|s| &text[spans[s].0..spans[s + window - 1].1])
        .collect()
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests;
