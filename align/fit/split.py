"""The held-out split: a seeded, reproducible choice of pairs kept out of training."""

from __future__ import annotations

import numpy as np

from tokalign.align.errors import TokalignError


def holdout_split(items: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices), both sorted; the same for the same arguments."""
    if holdout >= items:
        raise TokalignError(f"--holdout {holdout} leaves no training pairs in a corpus of {items}; lower --holdout")
    order = np.random.default_rng([seed, 0x5EED]).permutation(items)
    return np.sort(order[holdout:]), np.sort(order[:holdout])
