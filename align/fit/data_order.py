"""Seeded bijections over ``[0, n)`` and the per-epoch data order built from them, in O(batch) per step.

A fit at the paper's scale (134M pairs) cannot afford an O(N) permutation per step, nor even one held in
memory per epoch (1 GB at int64).  :func:`permute` maps positions through a keyed Feistel network over the
smallest power of four that covers ``n`` and walks cycles until the value lands in ``[0, n)``: a bijection of
``[0, n)`` for every key, evaluated only where asked.  :class:`EpochOrder` turns a training step into its
global batch: epoch ``e`` visits the training ranks in the order ``permute(0..n-1, key(seed, e))``, batch
``p`` of the epoch being positions ``p*B .. (p+1)*B-1`` (the tail short of a full batch is skipped, as
before).  Everything is a pure function of ``(seed, step)``, so a resumed fit sees exactly the batches an
uninterrupted one sees.
"""

from __future__ import annotations

import numpy as np

from tokalign.align.training.seeds import FIT_ORDER_TAG, mix64

ROUNDS = 6


def round_keys(*words: int) -> np.ndarray:
    """``ROUNDS`` uint64 round keys derived from integers (NumPy's SeedSequence: stable across versions)."""
    return np.random.SeedSequence([int(w) for w in words]).generate_state(ROUNDS, dtype=np.uint64)


def _half_bits(n: int) -> int:
    return max(1, (max(n - 1, 1).bit_length() + 1) // 2)


def _feistel(x: np.ndarray, half: int, keys: np.ndarray) -> np.ndarray:
    mask = np.uint64((1 << half) - 1)
    left, right = x >> np.uint64(half), x & mask
    with np.errstate(over="ignore"):
        for key in keys:
            left, right = right, left ^ (mix64(right + key) & mask)
    return (left << np.uint64(half)) | right


def permute(positions: np.ndarray, n: int, keys: np.ndarray) -> np.ndarray:
    """The images of ``positions`` (each in ``[0, n)``) under the bijection of ``[0, n)`` keyed by ``keys``."""
    x = np.asarray(positions, dtype=np.uint64)
    if x.size and int(x.max()) >= n:
        raise ValueError(f"positions must lie in [0, {n})")
    half = _half_bits(n)
    y = _feistel(x, half, keys)
    outside = np.flatnonzero(y >= np.uint64(n))
    while outside.size:  # cycle walking: each walk ends because the Feistel map permutes a finite domain
        y[outside] = _feistel(y[outside], half, keys)
        outside = outside[y[outside] >= np.uint64(n)]
    return y.astype(np.int64)


class EpochOrder:
    """Global batch of every step: a fresh bijection of the training ranks per epoch, O(batch) per call.

    ``rank_to_item`` maps training ranks ``0..train_items-1`` to corpus indices (the split's complement of
    the held-out set).
    """

    def __init__(self, train_items: int, batch_size: int, seed: int, rank_to_item=None) -> None:
        if train_items < batch_size:
            raise ValueError(f"{train_items} training items hold no batch of {batch_size}")
        self.train_items, self.batch_size, self.seed = train_items, batch_size, seed
        self.steps_per_epoch = train_items // batch_size
        self._rank_to_item = rank_to_item if rank_to_item is not None else (lambda r: r)

    def epoch_keys(self, epoch: int) -> np.ndarray:
        return round_keys(self.seed, FIT_ORDER_TAG, epoch)

    def batch(self, step: int) -> np.ndarray:
        """Corpus indices (int64, ``batch_size``) of step ``step``'s global batch."""
        epoch, position = divmod(step, self.steps_per_epoch)
        lo = position * self.batch_size
        ranks = permute(np.arange(lo, lo + self.batch_size), self.train_items, self.epoch_keys(epoch))
        return self._rank_to_item(ranks)

    def batches(self, start: int, count: int) -> np.ndarray:
        """``(count, batch_size)`` corpus indices of steps ``start .. start+count-1``: ``batch(s)`` stacked,
        one permutation call per epoch touched (the vectorized form a device-side loader asks for ahead)."""
        out = np.empty((count, self.batch_size), dtype=np.int64)
        step = start
        while step < start + count:
            epoch, position = divmod(step, self.steps_per_epoch)
            n = min(self.steps_per_epoch - position, start + count - step)
            lo = position * self.batch_size
            ranks = permute(np.arange(lo, lo + n * self.batch_size), self.train_items, self.epoch_keys(epoch))
            out[step - start:step - start + n] = np.asarray(self._rank_to_item(ranks)).reshape(n, self.batch_size)
            step += n
        return out
