#!/usr/bin/env python3
"""Trains the learned safety stage's heads: one logistic regression per
category over two views of a text:

- hashed n-grams: characters 2 to 5 within each word (padded with a space
  on each side), words, and pairs of neighbouring words; each hashed with
  32-bit FNV-1a into BUCKETS buckets, counted as 1 + ln(count), times the
  bucket's idf (from the training texts), L2-normalised;
- the static sentence embedding: the mean of the text's WordPiece tokens'
  rows of `static.bin` (all-MiniLM-L6-v2 distilled by `distil.py`),
  normalised, times DENSE_WEIGHT.

Words are runs of letters, digits and apostrophes after lower-casing. A
text longer than WINDOW words is scored window by window (WINDOW words,
STRIDE apart; the Rust side, shared/safety, does the same), a category
taking its highest window.

    train.py [--eval]

Inputs: `static.bin`, `tokenizer.json` and the training examples
`data/train/*.jsonl` (their sources: data/SOURCES.md). The evaluation set
`data/eval/` is never read for training; `--eval` reports on it (the Rust
test `safety_accuracy` measures the shipped implementation on it).

Outputs: `heads.bin` (idf and int8 weights), `heads.json` (names,
thresholds, biases, scales, the model's version) and `probe.jsonl` (texts
with the probabilities this script computes, which the Rust tests must
reproduce). Deterministic: the folds come from a fixed seed and the
optimiser (L-BFGS from zeros) has no randomness.
"""
import glob
import hashlib
import json
import multiprocessing
import os
import sys

import numpy as np
from scipy.optimize import minimize
from scipy.sparse import csr_matrix, diags, hstack
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
BUCKETS = 1 << 18
DENSE_WEIGHT = 0.5
WINDOW = 64
STRIDE = 32
SEED = 20261207
FOLDS = 4
C = 30.0
# The share of harmless training texts each category's threshold may flag
# out of fold (0.6 % until convo-safety-2; raised when the word lists' topic
# terms stopped flagging clinical and supportive text, see BENCHMARKS.md).
HARMLESS_BUDGET = 0.008
VERSION = "convo-safety-3"

CATEGORIES = [
    "self_harm", "sexual", "sexual_minors", "grooming", "violence",
    "weapons", "hate", "bullying", "drugs", "personal_data",
]


def fnv(s):
    h = 0x811C9DC5
    for b in s.encode("utf-8"):
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def word_spans(text):
    """(start, end) character offsets of the words of `text`."""
    spans, start = [], None
    for i, ch in enumerate(text):
        if ch.isalnum() or ch == "'":
            if start is None:
                start = i
        elif start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(text)))
    return spans


def grams(words):
    for w in words:
        p = " " + w + " "
        for n in (2, 3, 4, 5):
            for i in range(len(p) - n + 1):
                yield "c" + p[i:i + n]
    for i, w in enumerate(words):
        yield "w " + w
        if i + 1 < len(words):
            yield "b " + w + " " + words[i + 1]


def counts(text):
    words = [text[a:b].lower() for a, b in word_spans(text)]
    out = {}
    for g in grams(words):
        k = fnv(g) % BUCKETS
        out[k] = out.get(k, 0) + 1
    return out


def load_table():
    raw = open(os.path.join(HERE, "static.bin"), "rb").read()
    assert raw[:4] == b"CVSE"
    _, rows, dims = np.frombuffer(raw[4:16], dtype="<u4")
    scales = np.frombuffer(raw[16:16 + 4 * rows], dtype="<f4")
    table = np.frombuffer(raw[16 + 4 * rows:], dtype=np.int8).reshape(rows, dims)
    return table.astype(np.float32) * scales[:, None]


class Featurizer:
    def __init__(self, idf=None):
        self.tok = Tokenizer.from_file(os.path.join(HERE, "tokenizer.json"))
        self.tok.no_truncation()
        self.tok.no_padding()
        self.table = load_table()
        self.idf = idf

    def dense(self, text):
        ids = self.tok.encode(text, add_special_tokens=False).ids
        if not ids:
            return np.zeros(self.table.shape[1], dtype=np.float32)
        v = self.table[ids].sum(axis=0) / len(ids)
        n = np.linalg.norm(v)
        return v / n if n > 0 else v

    def fit_idf(self, texts):
        df = np.zeros(BUCKETS)
        for t in texts:
            for k in counts(t):
                df[k] += 1
        self.idf = (np.log((1 + len(texts)) / (1 + df)) + 1).astype(np.float32)

    def matrix(self, texts):
        rows, cols, data = [], [], []
        for i, t in enumerate(texts):
            c = counts(t)
            vals = {k: (1 + np.log(n)) * self.idf[k] for k, n in c.items()}
            norm = np.sqrt(sum(v * v for v in vals.values())) or 1.0
            for k, v in vals.items():
                rows.append(i)
                cols.append(k)
                data.append(v / norm)
        sparse = csr_matrix((data, (rows, cols)), shape=(len(texts), BUCKETS), dtype=np.float64)
        dense = np.stack([self.dense(t) for t in texts]) * DENSE_WEIGHT
        return hstack([sparse, csr_matrix(dense)]).tocsr()

    def windows(self, text):
        """The texts of the windows `text` is scored in."""
        spans = word_spans(text)
        if len(spans) <= WINDOW:
            return [text]
        starts = list(range(0, len(spans) - WINDOW + 1, STRIDE))
        if starts[-1] != len(spans) - WINDOW:
            starts.append(len(spans) - WINDOW)
        return [text[spans[s][0]:spans[s + WINDOW - 1][1]] for s in starts]


def load(pattern):
    rows = []
    for path in sorted(glob.glob(os.path.join(HERE, "data", pattern))):
        for n, line in enumerate(open(path, encoding="utf-8"), 1):
            if line.strip():
                ex = json.loads(line)
                unknown = set(ex["labels"]) - set(CATEGORIES)
                assert not unknown, f"{path}:{n}: unknown labels {unknown}"
                rows.append(ex)
    return rows


def fit(x, y, weight):
    """Weighted L2-regularised logistic regression (L-BFGS from zeros)."""
    d = x.shape[1]
    total = weight.sum()

    def loss(theta):
        w, b = theta[:d], theta[d]
        z = x @ w + b
        p = 1 / (1 + np.exp(-z))
        eps = 1e-12
        l = -(weight * (y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))).sum() / total
        l += (w @ w) / (2 * C * total)
        g = weight * (p - y) / total
        return l, np.concatenate([x.T @ g + w / (C * total), [g.sum()]])

    res = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 3000})
    return res.x[:d], res.x[d]


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


class Heads:
    """The trained heads, quantised as shipped."""

    def __init__(self, feat, ws, bs, thresholds):
        self.feat = feat
        self.scales = np.abs(ws).max(axis=1) / 127.0
        self.scales[self.scales == 0] = 1.0
        self.q = np.clip(np.rint(ws / self.scales[:, None]), -127, 127).astype(np.int8)
        self.w = self.q.astype(np.float64) * self.scales[:, None]
        self.b = np.array(bs, dtype=np.float32).astype(np.float64)
        self.t = np.array(thresholds)

    def probabilities(self, text):
        x = self.feat.matrix(self.feat.windows(text))
        return sigmoid(x @ self.w.T + self.b).max(axis=0)


_SHARED = None


def train_head(c):
    """One category: out-of-fold scores choose the threshold, then a fit on
    every example."""
    train, x, harmless, fold = _SHARED
    y = np.array([c in e["labels"] for e in train], dtype=np.float64)
    pos = y.sum()
    # Balanced classes: the positives weigh as much as the rest.
    weight = np.where(y == 1, (len(y) - pos) / pos, 1.0)
    oof = np.zeros(len(train))
    for k in range(FOLDS):
        tr = fold != k
        w, b = fit(x[tr], y[tr], weight[tr])
        oof[~tr] = sigmoid(x[~tr] @ w + b)
    neg = np.sort(oof[harmless])[::-1]
    threshold = float(max(0.5, neg[int(HARMLESS_BUDGET * len(neg))] + 1e-4))
    recall = float((oof[y == 1] >= threshold).mean())
    w, b = fit(x, y, weight)
    return w, b, threshold, recall, pos


def main():
    train = load("train/*.jsonl")
    texts = [e["text"] for e in train]
    feat = Featurizer()
    feat.fit_idf(texts)
    x = feat.matrix(texts)
    harmless = np.array([not e["labels"] for e in train])
    fold = np.random.default_rng(SEED).permutation(len(train)) % FOLDS
    global _SHARED
    _SHARED = (train, x, harmless, fold)
    # One process per core, one category each (fork shares the matrix).
    with multiprocessing.get_context("fork").Pool(min(len(CATEGORIES), os.cpu_count() or 1)) as pool:
        results = pool.map(train_head, CATEGORIES)
    ws, bs, thresholds = [], [], []
    for c, (w, b, threshold, recall, pos) in zip(CATEGORIES, results):
        ws.append(w)
        bs.append(b)
        thresholds.append(round(threshold, 4))
        print(f"{c:14s} n={int(pos):4d} threshold={threshold:.3f} out-of-fold recall={recall:.3f}", file=sys.stderr)
    heads = Heads(feat, np.array(ws), bs, thresholds)
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(HERE, "data", "train", "*.jsonl"))):
        digest.update(open(path, "rb").read())
    with open(os.path.join(HERE, "heads.bin"), "wb") as f:
        f.write(b"CVSH")
        f.write(np.array([1, BUCKETS, feat.table.shape[1], len(CATEGORIES)], dtype="<u4").tobytes())
        f.write(feat.idf.astype("<f4").tobytes())
        f.write(heads.q.tobytes())
    meta = {
        "format": 1,
        "model": VERSION,
        "trainingSha256": digest.hexdigest(),
        "trainingExamples": len(train),
        "buckets": BUCKETS,
        "denseWeight": DENSE_WEIGHT,
        "window": WINDOW,
        "stride": STRIDE,
        "categories": [
            {"name": c, "threshold": thresholds[i], "bias": float(np.float32(bs[i])), "scale": float(np.float32(heads.scales[i]))}
            for i, c in enumerate(CATEGORIES)
        ],
    }
    with open(os.path.join(HERE, "heads.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    # Probes for the Rust side: a few training texts, one long text, odd
    # Unicode, empty.
    probes = [train[i]["text"] for i in range(0, len(train), max(1, len(train) // 40))]
    probes += [" ".join(texts[:80]), "", "¡¡ÉL DIJO «NO»!! 😀 İstanbul ǅemal ß straße", "don't tell your mom"]
    with open(os.path.join(HERE, "probe.jsonl"), "w") as f:
        for p in probes:
            f.write(json.dumps({"text": p, "probability": [round(float(v), 5) for v in heads.probabilities(p)]}) + "\n")
    if "--eval" in sys.argv:
        evaluate(heads)


def short_text_threshold(t, words):
    """As the Rust side: a text of one to three words must be surer."""
    return t + (1 - t) * max(0, 4 - max(1, words)) / 4


def evaluate(heads):
    data = load("eval/e*.jsonl")
    preds = []
    for e in data:
        words = sum(any(ch.isalpha() for ch in e["text"][a:b]) for a, b in word_spans(e["text"]))
        t = np.array([short_text_threshold(x, words) for x in heads.t])
        preds.append({CATEGORIES[i] for i in np.nonzero((heads.probabilities(e["text"]) >= t) & (heads.t < 1))[0]})
    harmless = [p for e, p in zip(data, preds) if not e["labels"]]
    harmful = [(e, p) for e, p in zip(data, preds) if e["labels"]]
    print(f"harmless flagged: {sum(bool(p) for p in harmless) / len(harmless):.3f} of {len(harmless)}")
    print(f"harmful caught:   {sum(bool(p) for e, p in harmful) / len(harmful):.3f} of {len(harmful)}")
    for c in CATEGORIES:
        lab = [(e, p) for e, p in harmful if c in e["labels"]]
        predicted = [e for e, p in zip(data, preds) if c in p]
        print(
            f"{c:14s} caught={sum(bool(p) for e, p in lab) / len(lab):.3f} "
            f"recall={sum(c in p for e, p in lab) / len(lab):.3f} "
            f"precision={sum(c in e['labels'] for e in predicted) / max(1, len(predicted)):.3f} n={len(lab)}"
        )
    for lang in ["en", "es", "fr", "de", "pt"]:
        lab = [p for e, p in harmful if e["lang"] == lang]
        neg = [p for e, p in zip(data, preds) if not e["labels"] and e["lang"] == lang]
        print(f"{lang}: caught={sum(map(bool, lab)) / max(1, len(lab)):.3f} harmless flagged={sum(map(bool, neg)) / max(1, len(neg)):.3f}")


if __name__ == "__main__":
    main()
