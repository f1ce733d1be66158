"""The unigram entropy of a corpus's image tokens: the held-out image loss a model that ignores context scores.

A generator that predicts every image token from the corpus's overall token frequencies (no caption, no position,
no neighbouring tokens) pays this many nats per image token on average; uniform over the codebook pays
``ln(codebook size)``, which is never less. A held-out image loss below it is what learning from context looks
like. Torch-free: counts every image token of every shard once (one ``bincount`` a shard, memory-mapped).
"""

from __future__ import annotations

import math
import os

import numpy as np

from tokalign.align.errors import TokalignError

__all__ = ["image_token_entropy", "entropy_of_counts"]


def entropy_of_counts(counts: np.ndarray) -> float:
    """Shannon entropy in nats of the distribution ``counts / counts.sum()`` (zero counts contribute nothing)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise TokalignError("no image tokens to measure an entropy on; the corpus is empty")
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def image_token_counts(corpus) -> np.ndarray:
    """How often each of the corpus's ``codebook_size`` image tokens occurs, over all items."""
    counts = np.zeros(corpus.codebook_size, dtype=np.int64)
    for start, tokens in corpus.iter_shards():
        found = np.bincount(np.asarray(tokens, dtype=np.int64).ravel(), minlength=corpus.codebook_size)
        if len(found) > len(counts):
            raise TokalignError(f"corpus {corpus.root} has image token {len(found) - 1} (in the shard from item "
                                f"{start}) beyond its codebook of {len(counts)}; rebuild the corpus")
        counts += found
    return counts


def image_token_entropy(corpus_root: str | os.PathLike) -> float:
    """Unigram entropy (nats) of the image tokens of the corpus at ``corpus_root``; at most ``ln(codebook size)``."""
    from tokalign.align.formats.corpus import open_corpus

    corpus = open_corpus(corpus_root)
    value = entropy_of_counts(image_token_counts(corpus))
    return min(value, math.log(corpus.codebook_size))  # float rounding never puts it above uniform
