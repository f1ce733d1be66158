"""Image-token usage counts occurrences and images exactly."""

from __future__ import annotations

import numpy as np

from tokalign.align.formats.corpus import open_corpus
from tokalign.probes.token_usage import token_usage


def test_usage_counts_match_a_direct_count(synthetic_corpus):
    corpus = open_corpus(synthetic_corpus(items=100, codebook=64, shard_size=30))
    tokens = corpus.image_tokens(np.arange(corpus.items)).astype(np.int64)
    usage = token_usage(corpus, chunk=7)
    assert np.array_equal(usage.occurrences, np.bincount(tokens.ravel(), minlength=64))
    expected_images = np.array([(tokens == t).any(axis=1).sum() for t in range(64)])
    assert np.array_equal(usage.images, expected_images)
    assert usage.used + len(usage.unused_ids) == 64
    assert all(usage.occurrences[i] == 0 for i in usage.unused_ids)
