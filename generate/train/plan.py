"""Which sequences each process trains on at each step: a pure function of (seed, step), so resume is exact.

The global batch of step ``s`` is a slice of a seeded bijection of the training items for epoch
``s // steps_per_epoch`` (the fit's keyed permutation, :mod:`tokalign.align.fit.data_order`: O(batch) work per step,
never a permutation of the whole split); process ``r`` of ``world`` takes the ``r``-th equal share of it, cut into micro-batches of
at most ``micro_batch`` sequences. Every process therefore runs the same number of micro-batches, and the union
over processes is the same global batch whatever the number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tokalign.align.errors import TokalignError
from tokalign.align.fit.data_order import permute, round_keys
from tokalign.align.training.seeds import GENERATOR_TAG


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

