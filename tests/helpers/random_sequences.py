"""Random rows shaped like the generator's sequences, for step and loss tests (seeded, no corpus)."""

from __future__ import annotations

import numpy as np
import torch


def random_sequences(layout, n: int, seq_len: int, seed: int = 0, image_len: int | tuple[int, int] = 8) -> torch.Tensor:
    """(n, seq_len) int64 rows ``<doc> <text> caption </text> <image> tokens </image> </doc> <pad>...``.

    Captions hold 1-5 random text ids; images ``image_len`` random codes, or a length drawn from
    ``[lo, hi)`` per row when it is a pair. Rows longer than ``seq_len`` are cut."""
    rng = np.random.default_rng(seed)
    s = layout.special_ids
    rows = np.full((n, seq_len), layout.pad_id)
    for i in range(n):
        caption = rng.integers(0, layout.text_rows, size=rng.integers(1, 6))
        length = image_len if isinstance(image_len, int) else rng.integers(*image_len)
        image = rng.integers(0, layout.codebook_size, size=length) + layout.image_offset
        row = [s["<doc>"], s["<text>"], *caption, s["</text>"], s["<image>"], *image, s["</image>"], s["</doc>"]]
        rows[i, :len(row)] = row[:seq_len]
    return torch.from_numpy(rows).long()
