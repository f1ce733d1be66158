"""The loading side of ``tokalign tokenize``: parts in, batches of ready-to-encode items out.

This runs in DataLoader worker processes (or in the main process with
``--workers 0``).  A worker takes whole parts (part ``i`` goes to worker
``i mod workers``), reads each with its source, checks every sample in the
order documented in ``tokalign.align.sources.samples``, decodes and preprocesses images
(``image_prep.py``), and yields :class:`PartBatch` es of at most
``batch_size`` kept items, each carrying the skip and adjust records of the
samples read since the previous batch.  The last batch of a part has
``last=True``, so the main process knows when a part is complete; batches of
different parts may interleave, but within a part their order is the source's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np
import torch

from tokalign.align.sources.image_prep import prepare_image
from tokalign.align.image_tokenizers.registry import pretokenized_mismatch, token_array_problem
from tokalign.align.sources.keys import escape_key, is_text
from tokalign.align.sources.samples import Part, RawSample


@dataclass(frozen=True)
class PrepSettings:
    image_size: int
    min_side: int
    batch_size: int
    tokens: bool  # pretokenized: items carry token arrays, checked against the two fields below
    codebook_size: int
    tokens_per_image: int


@dataclass
class PartBatch:
    part: int
    keys: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    pixels: torch.Tensor | None = None  # (b, S, S, 3) uint8
    tokens: np.ndarray | None = None  # (b, L) uint16, pretokenized input
    skipped: list[dict] = field(default_factory=list)
    adjusted: list[dict] = field(default_factory=list)
    read: int = 0  # samples read from the source for this batch (kept + skipped)
    last: bool = False
    fatal: str | None = None  # input that must stop the run (a mismatched pretokenized array)

    def pin_memory(self) -> "PartBatch":  # DataLoader(pin_memory=True) calls this
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


class PartStream(torch.utils.data.IterableDataset):
    """The batches of ``parts``, split over DataLoader workers by part."""

    def __init__(self, source: Any, parts: list[Part], settings: PrepSettings) -> None:
        super().__init__()
        self.source, self.parts, self.settings = source, parts, settings

    def __iter__(self) -> Iterator[PartBatch]:
        info = torch.utils.data.get_worker_info()
        mine = self.parts if info is None else self.parts[info.id::info.num_workers]
        for part in mine:
            yield from part_batches(self.source, part, self.settings)


def worker_init(_: int) -> None:
    torch.set_num_threads(1)  # a loader process decodes images; it must not fight the encoder for cores


def collate_none(batch: PartBatch) -> PartBatch:
    return batch


def safe_sample(sample: RawSample) -> RawSample:
    """``sample`` with a UTF-8 key and skip detail (``keys.escape_key``); an escaped key is noted ``escaped_key``."""
    key = escape_key(sample.key)
    skip = (sample.skip[0], escape_key(sample.skip[1])) if sample.skip is not None else None
    if key == sample.key and skip == sample.skip:
        return sample
    notes = sample.notes + (("escaped_key",) if key != sample.key else ())
    return replace(sample, key=key, skip=skip, notes=notes)


def part_batches(source: Any, part: Part, settings: PrepSettings) -> Iterator[PartBatch]:
    """Read one part; yield its batches, the last one flagged."""
    batch = PartBatch(part.index)
    items: list[np.ndarray] = []
    part = replace(part, name=escape_key(part.name))
    for sample in source.read(part):
        sample = safe_sample(sample)
        batch.read += 1
        payload = _check(sample, part, settings, batch)
        if batch.fatal:
            yield batch
            return
        if payload is not None:
            items.append(payload)
            batch.keys.append(sample.key)
            batch.captions.append(sample.caption.strip())
        if len(items) >= settings.batch_size:
            yield _seal(batch, items, settings)
            batch, items = PartBatch(part.index), []
    batch.last = True
    yield _seal(batch, items, settings)


def _seal(batch: PartBatch, items: list[np.ndarray], settings: PrepSettings) -> PartBatch:
    if items and settings.tokens:
        batch.tokens = np.stack(items).astype(np.uint16)
    elif items:
        batch.pixels = torch.from_numpy(np.stack(items))
    return batch


def _check(sample: RawSample, part: Part, settings: PrepSettings, batch: PartBatch) -> np.ndarray | None:
    """The sample's pixels (or tokens) when it is usable; otherwise record why not and return None."""
    def skip(reason: str, detail: str) -> None:
        batch.skipped.append({"key": sample.key, "part": part.name, "reason": reason, "detail": detail})

    if sample.skip is not None:
        return skip(*sample.skip)
    if sample.image is None:
        return skip("no_image", "caption without an image")
    if sample.caption is None:
        return skip("no_caption", "image without a caption")
    if not is_text(sample.caption):
        return skip("unreadable_caption", f"caption holds a lone surrogate ({escape_key(sample.caption)[:80]!r}), "
                                          "which is not text")
    if not sample.caption.strip():
        return skip("empty_caption", "caption is empty or white space")
    if settings.tokens:
        return _check_tokens(sample, part, settings, batch)
    prepared = prepare_image(sample.image, settings.image_size, settings.min_side) \
        if isinstance(sample.image, (bytes, bytearray, memoryview)) else None
    if prepared is None:
        return skip("unreadable_image", f"payload is {type(sample.image).__name__}, not image bytes")
    if prepared.skip is not None:
        return skip(*prepared.skip)
    _note(batch, sample, part, list(prepared.adjustments))
    return prepared.pixels


def _note(batch: PartBatch, sample: RawSample, part: Part, adjustments: list[str]) -> None:
    reasons = list(sample.notes) + adjustments
    if reasons:
        batch.adjusted.append({"key": sample.key, "part": part.name, "reasons": reasons})


def _check_tokens(sample: RawSample, part: Part, settings: PrepSettings, batch: PartBatch) -> np.ndarray | None:
    tokens = sample.image
    if not isinstance(tokens, np.ndarray):
        batch.skipped.append({"key": sample.key, "part": part.name, "reason": "unreadable_image",
                              "detail": f"payload is {type(tokens).__name__}, not a token array"})
        return None
    problem = token_array_problem(tokens, settings.tokens_per_image, settings.codebook_size)
    if problem:
        batch.fatal = pretokenized_mismatch(f"{sample.key!r} in {part.name}", problem)
        return None
    _note(batch, sample, part, [])
    return tokens.reshape(-1)
