"""A fit's batches on a GPU: image tokens and caption vectors on the device before the step asks for them.

Two sources, both handing the step ``(TokenCounts, caption vectors)`` built on the device
(:mod:`tokalign.align.fit.token_counts`) and neither waiting on the host per step:

* :class:`ResidentBatches`, when the corpus fits the device budget (:func:`fits_on_device`; 20k pairs at
  1,024 tokens and d 576 take 87 MB): every item's tokens (int16, read back as uint16) and normalized caption
  vector are copied to the device once; the data order's indices come in chunks of :data:`CHUNK` steps,
  computed a chunk ahead on a worker thread and copied from pinned memory without blocking; a step is two
  index-selects and a scatter-add.
* :class:`StreamedBatches` otherwise: a worker thread reads step ``s+1``'s tokens from the memory-mapped
  corpus while step ``s`` trains, copies them from pinned memory on a side stream and builds the counts and
  caption vectors there; the training stream waits on an event, not the host.

Both run on CPU tensors too (no streams, no pinning), which is how the tests compare them with the host path.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

from tokalign.align.fit.token_counts import TokenCounts, token_counts

CHUNK = 256  # steps of indices per host->device copy
LOAD_ITEMS = 65536  # items per chunk when copying the corpus to the device
RESIDENT_CAP = 8 << 30  # bytes: never hold more than this resident
RESIDENT_FREE_SHARE = 0.25  # ... nor more than this share of the device's free memory

LocalBatches = Callable[[int, int], np.ndarray]  # (first step, count) -> (count, local batch) corpus indices


def resident_bytes(items: int, tokens_per_image: int, d_model: int) -> int:
    return items * (2 * tokens_per_image + 4 * d_model)


def fits_on_device(corpus, d_model: int, device: torch.device) -> bool:
    """Whether the whole corpus (tokens + caption vectors) is held on ``device`` (module docstring)."""
    if device.type != "cuda":
        return False
    need = resident_bytes(corpus.items, corpus.tokens_per_image, d_model)
    free, _ = torch.cuda.mem_get_info(device)
    return need <= min(RESIDENT_CAP, RESIDENT_FREE_SHARE * free)


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    host = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)  # the caching host allocator keeps it until copied
    return host


class Prefetch:
    """One worker thread that runs ``load(step)`` one call ahead of the consumer."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fit-batches")
        self.pending: dict[int, Future] = {}

    def ask(self, key: int, load: Callable, *args) -> None:
        if key not in self.pending:
            self.pending[key] = self.pool.submit(load, *args)

    def take(self, key: int, load: Callable, *args):
        self.ask(key, load, *args)
        return self.pending.pop(key).result()

    def close(self) -> None:
        for future in self.pending.values():
            future.cancel()
        self.pool.shutdown(wait=True)


class ResidentBatches:
    """Every item's tokens and caption vector on the device; indices streamed ahead in chunks."""

    def __init__(self, corpus, captions, embeddings: torch.Tensor, local_batches: LocalBatches, start: int,
                 end: int) -> None:
        self.device, self.codebook = embeddings.device, corpus.codebook_size
        self.local_batches, self.end = local_batches, end
        self.tokens = torch.empty((corpus.items, corpus.tokens_per_image), dtype=torch.int16, device=self.device)
        for lo in range(0, corpus.items, LOAD_ITEMS):
            hi = min(lo + LOAD_ITEMS, corpus.items)
            chunk = corpus.image_tokens(np.arange(lo, hi)).view(np.int16)  # checked against the codebook there
            self.tokens[lo:hi].copy_(_to_device(chunk, self.device), non_blocking=True)
        self.text = captions.all_vectors(embeddings)
        self.prefetch = Prefetch()
        self.chunk_first, self.chunk = None, None

    def _indices(self, first: int) -> torch.Tensor:
        return _to_device(self.local_batches(first, min(CHUNK, self.end - first)), self.device)

    def get(self, step: int) -> tuple[TokenCounts, torch.Tensor]:
        first = step - (step % CHUNK)
        if first != self.chunk_first:
            self.chunk_first, self.chunk = first, self.prefetch.take(first, self._indices, first)
        if first + CHUNK < self.end:
            self.prefetch.ask(first + CHUNK, self._indices, first + CHUNK)
        index = self.chunk[step - first]
        tokens = self.tokens.index_select(0, index).long().bitwise_and_(0xFFFF)
        return token_counts(tokens, self.codebook), self.text.index_select(0, index)

    def close(self) -> None:
        self.prefetch.close()


class StreamedBatches:
    """Step ``s+1`` read from the mapped corpus and copied on a side stream while step ``s`` trains."""

    def __init__(self, corpus, captions, embeddings: torch.Tensor, local_batches: LocalBatches, start: int,
                 end: int) -> None:
        self.corpus, self.captions, self.embeddings = corpus, captions, embeddings
        self.device, self.local_batches, self.end = embeddings.device, local_batches, end
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.prefetch = Prefetch()

    def _load(self, step: int):
        indices = self.local_batches(step, 1)[0]
        tokens = self.corpus.image_tokens(indices).astype(np.int32)
        if self.stream is None:
            return token_counts(torch.from_numpy(tokens), self.corpus.codebook_size), \
                self.captions.vectors(self.embeddings, indices), None
        with torch.cuda.stream(self.stream):
            counts = token_counts(_to_device(tokens, self.device), self.corpus.codebook_size)
            text = self.captions.vectors(self.embeddings, indices)
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return counts, text, ready

    def get(self, step: int) -> tuple[TokenCounts, torch.Tensor]:
        counts, text, ready = self.prefetch.take(step, self._load, step)
        if step + 1 < self.end:
            self.prefetch.ask(step + 1, self._load, step + 1)
        if ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready)
            counts.counts.record_stream(current)
            text.record_stream(current)
        return counts, text

    def close(self) -> None:
        self.prefetch.close()
