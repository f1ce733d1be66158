"""The generator's data, read together: which sequences each process trains on at each step, what the loop
asks of them, and the source that serves them.

* :class:`StepPlan`: a pure function of (seed, step), so resume is exact. The global batch of step ``s`` is a
  slice of a seeded bijection of the training items for epoch ``s // steps_per_epoch`` (the fit's keyed
  permutation, :mod:`tokalign.align.fit.data_order`: O(batch) work per step, never a permutation of the whole
  split); process ``r`` of ``world`` takes the ``r``-th equal share of it, cut into micro-batches of at most
  ``micro_batch`` sequences. Every process therefore runs the same number of micro-batches, and the union over
  processes is the same global batch whatever the number of processes.
* :class:`SequenceSource`: the protocol (token ids and target buckets for a set of corpus items);
  :class:`DatasetSource` serves it from the memory-mapped sequences (with and without caption dropout).
* :func:`micro_batch`: one set of items as a :class:`~tokalign.generate.train.step.MicroBatch` on the device.
  Positions that are not targets (``<pad>``, and position 0 which nothing predicts) carry bucket ``-1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from tokalign.align.errors import TokalignError
from tokalign.align.fit.data_order import permute, round_keys
from tokalign.align.training.seeds import GENERATOR_TAG
from tokalign.generate.sequences.buckets import bucket_table
from tokalign.generate.sequences.dataset import SequenceDataset
from tokalign.generate.train.loss import count_targets
from tokalign.generate.train.step import MicroBatch


# ------------------------------------------------------------------ which items, at which step, on which process
@dataclass(frozen=True)
class StepPlan:
    train_items: np.ndarray  #: corpus indices of the training split
    global_sequences: int
    micro_batch: int
    world: int
    rank: int
    seed: int

    def __post_init__(self) -> None:
        if self.global_sequences % self.world:
            raise TokalignError(f"the global batch of {self.global_sequences} sequences does not split evenly over "
                                f"{self.world} processes; pick --batch-tokens giving a multiple of {self.world} sequences")
        if len(self.train_items) < self.global_sequences:
            raise TokalignError(f"the training split holds {len(self.train_items)} pairs, fewer than one global batch of "
                                f"{self.global_sequences} sequences; lower --batch-tokens or --holdout, or use a larger corpus")

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_items) // self.global_sequences

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def global_batch(self, step: int) -> np.ndarray:
        """Corpus indices of step ``step``'s global batch (0-based step)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        positions = np.arange(position * self.global_sequences, (position + 1) * self.global_sequences)
        ranks = permute(positions, len(self.train_items), round_keys(self.seed, epoch, GENERATOR_TAG))
        return self.train_items[ranks]

    def local_micro_batches(self, step: int) -> list[np.ndarray]:
        """This process's share of the global batch, cut into micro-batches."""
        share = self.global_sequences // self.world
        mine = self.global_batch(step)[self.rank * share:(self.rank + 1) * share]
        return [mine[i:i + self.micro_batch] for i in range(0, share, self.micro_batch)]


# ------------------------------------------------------------------ what the loop asks of the sequences
class SequenceSource(Protocol):
    pad_id: int

    def arrays(self, indices: np.ndarray, epoch: int, train: bool) -> tuple[np.ndarray, np.ndarray]:
        """(tokens (n, T) integer ids, buckets (n, T) integer: 0 text, 1 image, 2 structure, -1 not a target) for
        corpus items ``indices``; ``train`` applies the seeded caption dropout of ``epoch``."""


def micro_batch(source: SequenceSource, indices: np.ndarray, epoch: int, device: torch.device,
                train: bool = True) -> MicroBatch:
    tokens, buckets = source.arrays(np.asarray(indices), epoch, train)
    tokens_t = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
    buckets_t = torch.from_numpy(np.ascontiguousarray(buckets, dtype=np.int64))
    useful = int((tokens_t != source.pad_id).sum())
    targets = count_targets(buckets_t)  # on the host: no device sync per micro-batch
    if device.type == "cuda":
        tokens_t, buckets_t = tokens_t.pin_memory(), buckets_t.pin_memory()
    return MicroBatch(tokens_t.to(device, non_blocking=True), buckets_t.to(device, non_blocking=True), useful, targets)


class DatasetSource:
    """The :class:`SequenceSource` over two datasets: with and without dropout."""

    def __init__(self, sequences, caption_dropout: float, seed: int) -> None:
        self.layout = sequences.layout
        self.pad_id = self.layout.pad_id
        self.train = SequenceDataset(sequences, caption_dropout=caption_dropout, seed=seed)
        self.plain = SequenceDataset(sequences)
        self.buckets = bucket_table(self.layout)  # id -> bucket, built once

    def arrays(self, indices: np.ndarray, epoch: int, train: bool) -> tuple[np.ndarray, np.ndarray]:
        dataset = self.train if train else self.plain
        dataset.set_epoch(epoch)
        tokens = dataset.rows(indices)
        return tokens, self.buckets[tokens]
