"""The image-position constraint: an additive bias over the whole output layer, built once per run.

Inside the image segment only image ids (``layout.image_ids``) may be sampled: text ids, structure tokens and
the padding rows of the output layer get ``-inf`` added to their logits, so their probability is exactly 0.
Ids are never clamped into range; a sampled id outside the image block is a bug and raises.
"""

from __future__ import annotations

import torch

from tokalign.align.formats.generator_init import VocabLayout


def image_id_mask(layout: VocabLayout) -> torch.Tensor:
    """(total_rows,) bool: True exactly at the image ids."""
    mask = torch.zeros(layout.total_rows, dtype=torch.bool)
    mask[layout.image_offset:layout.special_offset] = True
    return mask


def image_bias(layout: VocabLayout, device: torch.device | str = "cpu") -> torch.Tensor:
    """(total_rows,) float32: 0 at image ids, ``-inf`` elsewhere; add it to float32 logits."""
    bias = torch.full((layout.total_rows,), float("-inf"), dtype=torch.float32)
    bias.masked_fill_(image_id_mask(layout), 0.0)
    return bias.to(device)


def check_image_ids(ids: torch.Tensor, layout: VocabLayout) -> None:
    """Raise ``RuntimeError`` unless every id lies in the image block (the mask makes this an internal check)."""
    if ids.numel() and (int(ids.min()) < layout.image_offset or int(ids.max()) >= layout.special_offset):
        raise RuntimeError(f"sampled id outside the image block {layout.image_offset}..{layout.special_offset - 1}: "
                           f"{int(ids.min())}..{int(ids.max())}")
