//! The n-gram view of a text, exactly as `models/safety/train.py` computes
//! it: words are runs of alphanumeric characters and apostrophes, lower-cased;
//! features are each word's character 2- to 5-grams (the word padded with a
//! space on each side), the word itself and each pair of neighbours, hashed
//! with 32-bit FNV-1a (over a one-letter kind prefix and the UTF-8 bytes)
//! into `buckets` buckets.

/// Bucket and weight pairs, buckets ascending.
pub type Sparse = Vec<(u32, f32)>;

/// Byte spans of the words of `text`.
pub fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() || c == '\'' {
            start.get_or_insert(i);
        } else if let Some(s) = start.take() {
            spans.push((s, i));
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

#[derive(Clone, Copy)]
struct Fnv(u32);

impl Fnv {
    fn new() -> Self {
        Fnv(FNV_OFFSET)
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        for &x in b {
            self.0 ^= u32::from(x);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
        self
    }
    fn char(self, c: char) -> Self {
        let mut buf = [0u8; 4];
        self.bytes(c.encode_utf8(&mut buf).as_bytes())
    }
}

/// Each n-gram's bucket, once per occurrence (unsorted).
fn ngram_buckets(text: &str, buckets: usize) -> Vec<u32> {
    let words: Vec<String> = word_spans(text)
        .into_iter()
        .map(|(a, b)| text[a..b].to_lowercase())
        .collect();
    let bucket = |h: Fnv| (h.0 as usize % buckets) as u32;
    let mut out = Vec::new();
    let mut padded: Vec<char> = Vec::new();
    for w in &words {
        padded.clear();
        padded.push(' ');
        padded.extend(w.chars());
        padded.push(' ');
        for n in 2..=5 {
            if padded.len() < n {
                break;
            }
            for gram in padded.windows(n) {
                let h = gram.iter().fold(Fnv::new().bytes(b"c"), |h, c| h.char(*c));
                out.push(bucket(h));
            }
        }
    }
    for (i, w) in words.iter().enumerate() {
        out.push(bucket(Fnv::new().bytes(b"w ").bytes(w.as_bytes())));
        if let Some(next) = words.get(i + 1) {
            out.push(bucket(
                Fnv::new()
                    .bytes(b"b ")
                    .bytes(w.as_bytes())
                    .bytes(b" ")
                    .bytes(next.as_bytes()),
            ));
        }
    }
    out
}

/// The bucket counts of `text` (buckets ascending).
fn ngram_counts(text: &str, buckets: usize) -> Vec<(u32, u32)> {
    let mut all = ngram_buckets(text, buckets);
    all.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for k in all {
        match out.last_mut() {
            Some((last, n)) if *last == k => *n += 1,
            _ => out.push((k, 1)),
        }
    }
    out
}

/// The normalised n-gram vector of `text` under `idf`.
pub fn features(text: &str, buckets: usize, idf: &[f32]) -> Sparse {
    let counts = ngram_counts(text, buckets);
    let mut v: Sparse = counts
        .iter()
        .map(|&(k, n)| (k, (1.0 + (n as f32).ln()) * idf.get(k as usize).copied().unwrap_or(0.0)))
        .collect();
    let norm = v.iter().map(|(_, x)| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|(_, x)| *x /= norm);
    }
    v
}
