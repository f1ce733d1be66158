"""Where a fit's batches come from: prepared on the host for a CPU, on the device for a GPU.

Every source hands step ``s`` its local batch as ``(image batch, caption vectors)``, the image batch being
whatever the table's forward takes (``batch.image_vectors(table)``):

* :class:`HostBatches` (CPU): token bags built with NumPy and the captions embedded on a worker thread one
  step ahead (:mod:`tokalign.align.fit.bags`, products in the compiled kernel);
* :class:`~tokalign.align.fit.device_batches.ResidentBatches` (GPU, corpus within the device budget) and
  :class:`~tokalign.align.fit.device_batches.StreamedBatches` (GPU, larger corpora): dense token counts
  built on the device (:mod:`tokalign.align.fit.token_counts`).

All read the same indices, ``local_batches(first, count)``, so the trajectory is the same whichever is used.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from tokalign.align.fit.bags import TokenBags, bags_from_tokens
from tokalign.align.fit.device_batches import (LocalBatches, ResidentBatches, StreamedBatches, Prefetch,
                                               fits_on_device, resident_bytes)

log = logging.getLogger(__name__)


class HostBatches:
    """Bags and caption vectors of step ``s+1`` prepared on a worker thread while step ``s`` trains."""

    def __init__(self, corpus, captions, embeddings: torch.Tensor, local_batches: LocalBatches, start: int,
                 end: int) -> None:
        self.corpus, self.captions, self.embeddings = corpus, captions, embeddings
        self.local_batches, self.end = local_batches, end
        self.prefetch = Prefetch()

    def _load(self, step: int) -> tuple[TokenBags, torch.Tensor]:
        indices = self.local_batches(step, 1)[0]
        bags = bags_from_tokens(self.corpus.image_tokens(indices), self.corpus.codebook_size)
        return bags.to(self.embeddings.device), self.captions.vectors(self.embeddings, indices)

    def get(self, step: int) -> tuple[TokenBags, torch.Tensor]:
        batch = self.prefetch.take(step, self._load, step)
        if step + 1 < self.end:
            self.prefetch.ask(step + 1, self._load, step + 1)
        return batch

    def close(self) -> None:
        self.prefetch.close()


def open_batches(corpus, captions, embeddings: torch.Tensor, local_batches: LocalBatches, start: int, end: int):
    """The source for ``embeddings.device`` (module docstring); the caller closes it."""
    device = embeddings.device
    if device.type != "cuda":
        return HostBatches(corpus, captions, embeddings, local_batches, start, end)
    resident = fits_on_device(corpus, int(embeddings.shape[1]), device)
    size = resident_bytes(corpus.items, corpus.tokens_per_image, int(embeddings.shape[1])) / 2 ** 20
    log.info("fit batches: %s (corpus tokens + caption vectors: %.0f MB)",
             "held on the device" if resident else "streamed from the host on a side stream", size)
    kind = ResidentBatches if resident else StreamedBatches
    return kind(corpus, captions, embeddings, local_batches, start, end)


def local_slice(batches: np.ndarray, process: int, processes: int) -> np.ndarray:
    """This process's columns of a ``(steps, global batch)`` index array."""
    share = batches.shape[1] // processes
    return batches[:, process * share:(process + 1) * share]
