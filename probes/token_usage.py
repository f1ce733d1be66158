"""How often each image token occurs in a corpus, and which never do."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenUsage:
    occurrences: np.ndarray   # (codebook,) int64: total occurrences over all images
    images: np.ndarray        # (codebook,) int64: images containing the token at least once

    @property
    def used(self) -> int:
        return int((self.occurrences > 0).sum())

    @property
    def unused_ids(self) -> np.ndarray:
        return np.flatnonzero(self.occurrences == 0)


def token_usage(corpus, chunk: int = 4096) -> TokenUsage:
    """Count every image token of ``corpus`` (streams over shards; memory does not grow with the corpus)."""
    k = corpus.codebook_size
    occurrences = np.zeros(k, dtype=np.int64)
    images = np.zeros(k, dtype=np.int64)
    for _, tokens in corpus.iter_shards():
        for lo in range(0, len(tokens), chunk):
            block = np.asarray(tokens[lo:lo + chunk], dtype=np.int64)
            occurrences += np.bincount(block.ravel(), minlength=k)
            ordered = np.sort(block, axis=1)
            first = np.ones(ordered.shape, dtype=bool)
            first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
            images += np.bincount(ordered[first], minlength=k)
    return TokenUsage(occurrences, images)
