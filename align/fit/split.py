"""The held-out split: a seeded, reproducible choice of pairs kept out of training, stored compactly.

:func:`make_split` draws the held-out set as the images of ``0..holdout-1`` under a keyed bijection of the
corpus indices (:func:`tokalign.align.fit.data_order.permute`): O(holdout) work and memory whatever the
corpus size.  The training items are the complement, addressed by rank (:meth:`Split.train_item`) without
ever listing them.  ``config.json`` records the split as its scheme, seed and counts plus a sha256 of the
held-out indices (:meth:`Split.record`); :func:`holdout_indices` reads that back, and also the plain index
list older runs stored.

The generator's sequence split (:func:`tokalign.generate.sequences.dataset.split`) is this same split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from tokalign.align.errors import TokalignError
from tokalign.align.fit.data_order import permute, round_keys

SCHEME = "feistel-v1"
_SPLIT_TAG = 0x5EED


@dataclass(frozen=True)
class Split:
    """``items`` corpus indices: ``holdout`` (sorted int64) held out, the rest trained on."""

    items: int
    holdout: np.ndarray
    seed: int

    @property
    def train_items(self) -> int:
        return self.items - len(self.holdout)

    def train_item(self, ranks: np.ndarray) -> np.ndarray:
        """Corpus index of each training rank (rank ``r`` is the ``r``-th non-held-out index, ascending)."""
        ranks = np.asarray(ranks, dtype=np.int64)
        below = self.holdout - np.arange(len(self.holdout), dtype=np.int64)  # training items before each held one
        return ranks + np.searchsorted(below, ranks, side="right")

    def record(self) -> dict:
        """What ``config.json`` stores: enough to recompute the held-out set, and its hash to check it."""
        return {"scheme": SCHEME, "seed": self.seed, "items": self.items, "holdout_items": len(self.holdout),
                "train_items": self.train_items, "holdout_sha256": _sha(self.holdout)}


def make_split(items: int, holdout: int, seed: int) -> Split:
    """The split of ``items`` pairs keeping ``holdout`` out; the same for the same arguments."""
    if holdout >= items:
        raise TokalignError("the corpus holds no pairs; build it again from data that has some" if items == 0 else
                            f"--holdout {holdout} leaves no training pairs in a corpus of {items}; lower --holdout")
    held = np.sort(permute(np.arange(holdout), items, round_keys(seed, _SPLIT_TAG)))
    return Split(items, held, seed)


def holdout_indices(record: dict) -> np.ndarray:
    """The held-out corpus indices a run's ``config.json`` ``split`` entry names (either layout)."""
    if isinstance(record.get("holdout"), list):  # runs written before the compact record
        return np.asarray(record["holdout"], dtype=np.int64)
    if record.get("scheme") != SCHEME:
        raise TokalignError(f"the run's held-out split uses an unknown scheme {record.get('scheme')!r}; upgrade tokalign")
    split = make_split(int(record["items"]), int(record["holdout_items"]), int(record["seed"]))
    if _sha(split.holdout) != record.get("holdout_sha256"):
        raise TokalignError("the run's held-out split does not recompute to the indices it recorded; the run folder is damaged")
    return split.holdout


def _sha(indices: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes()).hexdigest()
