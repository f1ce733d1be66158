"""Symmetric InfoNCE (CLIP) loss with a learnable temperature.

Semantics follow open_clip's ``ClipLoss`` with ``local_loss=True`` and
``gather_with_grad=True``: each process scores its own rows against the
features of *all* processes, gathered with gradient, so N processes holding
B/N pairs each produce the same loss and gradients as one process holding B.
Tests check parity with ``open_clip.loss.ClipLoss`` and across processes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from tokalign.align.defaults import INIT_LOGIT_SCALE, MAX_LOGIT_SCALE  # noqa: F401  (re-exported)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's features in rank order, keeping the gradient path."""
    _, world = _world()
    if world == 1:
        return features
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(features.contiguous()), dim=0)


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean of the image->text and text->image cross-entropies.

    Features must already be L2-normalized; ``logit_scale`` is the log of the
    inverse temperature (the logits are ``exp(logit_scale) * cos``).
    """
    rank, world = _world()
    scale = logit_scale.exp()
    if world == 1:  # one process: text->image logits are the transpose
        logits_per_image = scale * image_features @ text_features.T
        logits_per_text = logits_per_image.T
    else:
        logits_per_image = scale * image_features @ gather_with_grad(text_features).T
        logits_per_text = scale * text_features @ gather_with_grad(image_features).T
    local = image_features.shape[0]
    labels = torch.arange(local, device=image_features.device) + rank * local
    return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))


def normalize(features: torch.Tensor) -> torch.Tensor:
    return F.normalize(features, dim=-1)
