"""The bucket of each token as a target: ``text`` 0, ``image`` 1, ``structure`` 2, or ``-1`` (not a target).

By id, under a :class:`~tokalign.align.formats.generator_init.VocabLayout`: ids below ``text_rows`` are
``text`` (caption tokens), the codebook ids are ``image``, the structure tokens ``<doc> </doc> <text> </text>
<image> </image>`` are ``structure``; ``<pad>``, padding rows and anything out of range are ``-1`` and never
targets. :data:`BUCKET_NAMES` is the one list of bucket names, in id order; the loss
(:mod:`tokalign.generate.train.loss`) sums per bucket in it. Works on numpy arrays and torch tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tokalign.align.formats.generator_init import VocabLayout

TEXT, IMAGE, STRUCTURE, IGNORE = 0, 1, 2, -1
BUCKET_NAMES = ("text", "image", "structure")


def bucket_table(layout: VocabLayout) -> np.ndarray:
    """(total_rows,) int8: the bucket of every id."""
    table = np.full(layout.total_rows, IGNORE, dtype=np.int8)
    table[:layout.text_rows] = TEXT
    table[layout.image_offset:layout.special_offset] = IMAGE
    table[layout.special_offset:layout.used_rows] = STRUCTURE
    table[layout.pad_id] = IGNORE
    return table


def bucket_of(ids: Any, layout: VocabLayout) -> Any:
    """The bucket of each id in ``ids`` (numpy -> int8 array, torch -> int64 tensor on the same device)."""
    table = bucket_table(layout)
    if hasattr(ids, "detach"):
        import torch

        lookup = torch.from_numpy(table.astype(np.int64)).to(ids.device)
        inside = (ids >= 0) & (ids < layout.total_rows)
        return torch.where(inside, lookup[ids.clamp(0, layout.total_rows - 1)], torch.full_like(ids, IGNORE).long())
    ids = np.asarray(ids)
    inside = (ids >= 0) & (ids < layout.total_rows)
    return np.where(inside, table[np.clip(ids, 0, layout.total_rows - 1)], IGNORE).astype(np.int8)
