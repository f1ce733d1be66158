"""A map-style dataset over built sequences, with deterministic caption dropout.

:class:`SequenceDataset` reads rows of a :class:`~tokalign.generate.sequences.build.Sequences` folder (memory
mapped; nothing is rebuilt per step). Item ``k`` is corpus row ``indices[k]``; it yields ``int64`` tensors of
``seq_len``:

* ``input_ids``: the row; with caption dropout, a dropped row's caption is removed and the row re-packed as
  ``<doc> <text> </text> <image> ... </image> </doc> <pad> ...`` (the empty text segment classifier-free
  guidance conditions on);
* ``labels``: ``input_ids`` with ``-100`` where the token is not a target (``<pad>``); unshifted, as
  Hugging Face's ``labels`` (the model predicts position ``t`` from positions ``< t``);
* ``buckets``: :func:`~tokalign.generate.sequences.buckets.bucket_of` each token as a target (``-1`` at pad);
* ``attention_mask``: 1 except at ``<pad>``.

Whether corpus row ``i`` is dropped in epoch ``e`` is a pure function of ``(seed, e, i)`` (:func:`dropped`, a
counter-based hash, no RNG state), so a resumed run draws exactly what an uninterrupted one would. Call
:meth:`SequenceDataset.set_epoch` at each epoch. :func:`split` is the seeded held-out split.
"""

from __future__ import annotations

from typing import Sequence as Seq

import numpy as np
import torch

from tokalign.align.errors import TokalignError
from tokalign.align.fit.split import make_split
from tokalign.align.training.seeds import splitmix64
from tokalign.generate.sequences.buckets import IGNORE, bucket_of
from tokalign.generate.sequences.build import Sequences, pack_rows

IGNORE_INDEX = -100


def split(items: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows), sorted; seeded: the fit's split (:func:`tokalign.align.fit.split.make_split`)."""
    chosen = make_split(items, holdout, seed)
    return chosen.train_item(np.arange(chosen.train_items)), chosen.holdout


def dropped(seed: int, epoch: int, rows: Seq[int] | np.ndarray, p: float) -> np.ndarray:
    """Bool per corpus row: is its caption dropped in ``epoch``? A pure function of (seed, epoch, row)."""
    rows = np.asarray(rows, dtype=np.uint64)
    if p <= 0:
        return np.zeros(rows.shape, dtype=bool)
    seeds = np.full(rows.shape, int(seed) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    key = splitmix64(splitmix64(seeds) ^ np.uint64(int(epoch)))
    uniform = (splitmix64(key ^ rows) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return uniform < p


class SequenceDataset(torch.utils.data.Dataset):
    """Rows ``indices`` of ``sequences`` (all rows when ``None``); see the module docstring."""

    def __init__(self, sequences: Sequences, indices: Seq[int] | np.ndarray | None = None, *,
                 caption_dropout: float = 0.0, seed: int = 0, epoch: int = 0) -> None:
        if not 0.0 <= caption_dropout <= 1.0:
            raise TokalignError(f"--caption-dropout {caption_dropout} must lie in [0, 1]")
        if caption_dropout > 0 and sequences.mode != "text-to-image":
            raise TokalignError(f"--caption-dropout needs captions, but the sequences are {sequences.mode}; "
                                "pass --caption-dropout 0")
        self.sequences = sequences
        self.indices = np.arange(len(sequences)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.caption_dropout, self.seed, self.epoch = float(caption_dropout), int(seed), int(epoch)
        self.layout = sequences.layout

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return {name: value[0] for name, value in self.batch([k]).items()}

    def rows(self, ks: Seq[int] | np.ndarray) -> np.ndarray:
        """(B, seq_len) int64 input ids of items ``ks`` in this epoch (dropout applied)."""
        corpus_rows = self.indices[np.asarray(ks, dtype=np.int64)]
        tokens = np.array(self.sequences.tokens[corpus_rows], dtype=np.int64)
        drop = dropped(self.seed, self.epoch, corpus_rows, self.caption_dropout)
        for j in np.flatnonzero(drop):
            tokens[j] = drop_caption(tokens[j], int(self.sequences.caption_lengths[corpus_rows[j]]), self.layout.pad_id)
        return tokens

    def batch(self, ks: Seq[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """A collated batch of items ``ks``: ``input_ids``, ``labels``, ``buckets``, ``attention_mask``."""
        return as_batch(self.rows(ks), self.layout)


def as_batch(tokens: np.ndarray, layout) -> dict[str, torch.Tensor]:
    """The training tensors of (B, seq_len) rows (module docstring)."""
    ids = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
    buckets = bucket_of(ids, layout)
    labels = ids.masked_fill(buckets == IGNORE, IGNORE_INDEX)
    return {"input_ids": ids, "labels": labels, "buckets": buckets, "attention_mask": (ids != layout.pad_id).long()}


def drop_caption(row: np.ndarray, caption_length: int, pad_id: int) -> np.ndarray:
    """``row`` with its ``caption_length`` caption tokens (positions 2..) removed and ``<pad>`` appended."""
    if caption_length == 0:
        return row
    return np.concatenate([row[:2], row[2 + caption_length:], np.full(caption_length, pad_id, dtype=row.dtype)])


def swapped_caption_batch(sequences: Sequences, rows: Seq[int] | np.ndarray,
                          donors: Seq[int] | np.ndarray) -> dict[str, torch.Tensor]:
    """A batch of corpus ``rows``' image tokens, each after the caption of the matching ``donors`` row.

    What a generator's image loss is when the caption says nothing about the image (a wrong caption of the same
    kind); ``donors == rows`` gives the rows themselves. Text-to-image sequences only."""
    layout = sequences.layout
    rows, donors = np.asarray(rows, dtype=np.int64), np.asarray(donors, dtype=np.int64)
    tokens = np.asarray(sequences.tokens[rows], dtype=np.int64)
    images = np.stack([row[(row >= layout.image_offset) & (row < layout.special_offset)] for row in tokens])
    lengths = np.asarray(sequences.caption_lengths[donors], dtype=np.int64)
    donor_tokens = np.asarray(sequences.tokens[donors], dtype=np.int64)
    captions = np.concatenate([row[2:2 + n] for row, n in zip(donor_tokens, lengths)]).astype(np.int64)
    packed = pack_rows(layout, sequences.seq_len, "text-to-image", captions, lengths, images - layout.image_offset)
    return as_batch(packed.astype(np.int64), layout)


def caption_batch(sequences: Sequences, rows: Seq[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions of corpus ``rows`` alone (no structure tokens): right-padded (B, Lmax) ids and attention mask.

    What :func:`tokalign.generate.model.diagnostics.text_kl` reads; padding uses id 0 with mask 0.
    """
    rows = np.asarray(rows, dtype=np.int64)
    lengths = np.asarray(sequences.caption_lengths[rows], dtype=np.int64)
    width = max(int(lengths.max()) if lengths.size else 0, 1)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, (row, n) in enumerate(zip(rows, lengths)):
        ids[j, :n] = torch.from_numpy(np.asarray(sequences.tokens[row, 2:2 + n], dtype=np.int64))
        mask[j, :n] = 1
    return ids, mask
