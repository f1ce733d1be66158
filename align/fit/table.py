"""The learnable image-token table and its on-disk format.

``table.safetensors`` holds ``image_embeddings`` (codebook_size, d_model)
float32 and ``logit_scale`` (1,), with header metadata (all strings):
``format`` ("tokalign-table"), ``version``, ``lm`` (JSON identity),
``lm_embedding_sha256``, ``d_model``, ``codebook_size``, ``image_tokenizer``
(JSON identity), ``steps``, ``final_loss``, ``final_logit_scale``,
``final_temperature`` and ``corpus``.  Rows live in the LM's embedding
space only up to direction: the loss sees normalized means.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tokalign.align.formats import atomic
from tokalign.align.fit.bags import TokenBags, image_vectors
from tokalign.align.errors import TokalignError
from tokalign.align.fit.loss import normalize

FORMAT = "tokalign-table"
VERSION = "1"
JSON_FIELDS = ("lm", "image_tokenizer")


class ImageTokenTable(nn.Module):
    """``codebook_size x d_model`` image-token embeddings plus the CLIP logit scale."""

    def __init__(self, codebook_size: int, d_model: int, *, init_row_norm: float, init_logit_scale: float,
                 seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        std = init_row_norm / d_model ** 0.5  # rows start with the LM embeddings' mean norm
        self.weight = nn.Parameter(torch.randn(codebook_size, d_model, generator=generator) * std)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    def forward(self, bags: TokenBags) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized image vectors for a batch of bags, and the logit scale."""
        return normalize(image_vectors(self.weight, bags)), self.logit_scale

    @torch.no_grad()
    def clamp_logit_scale_(self, maximum: float) -> None:
        self.logit_scale.clamp_(max=maximum)


def save_table(path: str | os.PathLike, weight: torch.Tensor, logit_scale: float, metadata: dict[str, Any]) -> None:
    meta = {"format": FORMAT, "version": VERSION}
    for key, value in metadata.items():
        meta[key] = json.dumps(value, sort_keys=True) if key in JSON_FIELDS else str(value)
    tensors = {"image_embeddings": weight.detach().float().cpu().contiguous(),
               "logit_scale": torch.tensor([float(logit_scale)])}
    atomic.save_safetensors(path, tensors, meta)


def load_table(path: str | os.PathLike) -> tuple[torch.Tensor, dict[str, Any]]:
    """(image_embeddings, metadata with JSON fields decoded); one-line errors on any defect."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise TokalignError(f"no table at {path}: run `tokalign fit` to completion first (or pass the right --run)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            weight = f.get_tensor("image_embeddings")
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise TokalignError(f"table {path} is damaged ({exc}); re-run `tokalign fit`") from None
    if meta.get("format") != FORMAT:
        raise TokalignError(f"{path} is not a tokalign table (format {meta.get('format')!r})")
    for key in JSON_FIELDS:
        if key in meta:
            meta[key] = json.loads(meta[key])
    return weight, meta
