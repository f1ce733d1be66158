"""What the loop needs from the sequences: token ids and target buckets for a set of corpus items.

:class:`SequenceSource` is the protocol; :func:`micro_batch` turns one set of items into a
:class:`~tokalign.generate.train.step.MicroBatch` on the device. Positions that are not targets (``<pad>``, and
position 0 which nothing predicts) carry bucket ``-1``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from tokalign.generate.train.loss import count_targets
from tokalign.generate.train.step import MicroBatch


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
