"""The learnable image-token table, and saving/loading it as torch tensors.

The on-disk format (``table.safetensors``: names, metadata fields, checks) is owned by
:mod:`tokalign.align.formats.run_folder`. Rows live in the LM's embedding space only up to direction: the loss
sees normalized means.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from tokalign.align.fit.bags import TokenBags
from tokalign.align.fit.loss import normalize
from tokalign.align.fit.token_counts import TokenCounts
from tokalign.align.formats import atomic
from tokalign.align.formats import run_folder as rd


class ImageTokenTable(nn.Module):
    """``codebook_size x d_model`` image-token embeddings plus the CLIP logit scale."""

    def __init__(self, codebook_size: int, d_model: int, *, init_row_norm: float, init_logit_scale: float,
                 seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        std = init_row_norm / d_model ** 0.5  # rows start with the LM embeddings' mean norm
        self.weight = nn.Parameter(torch.randn(codebook_size, d_model, generator=generator) * std)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    def forward(self, batch: TokenBags | TokenCounts) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized image vectors for a batch (bags on a CPU, dense counts on a GPU), and the logit scale."""
        return normalize(batch.image_vectors(self.weight)), self.logit_scale


def save_table(path: str | os.PathLike, weight: torch.Tensor, logit_scale: float, metadata: dict[str, Any]) -> None:
    tensors = {"image_embeddings": weight.detach().float().cpu().contiguous(),
               "logit_scale": torch.tensor([float(logit_scale)])}
    atomic.save_safetensors(path, tensors, rd.table_header(metadata, tensors["image_embeddings"]))


def load_table(path: str | os.PathLike) -> tuple[torch.Tensor, dict[str, Any]]:
    """(image_embeddings, metadata with JSON fields decoded), read by :func:`run_folder.read_table`."""
    weight, meta = rd.read_table(path)
    return torch.from_numpy(weight.copy()), meta
