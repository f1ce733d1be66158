"""The generator's optimizer: AdamW over trainable parameters only, weight decay on matrices only.

The groups come from :func:`tokalign.generate.model.freeze.optimizer_groups`: frozen parameters (``requires_grad``
False, set by a freeze preset) are left out of the optimizer entirely, so weight decay can never move them;
parameters with two or more dimensions (linear weights, embedding tables) are decayed, vectors (norm scales,
biases) are not. The fused kernel is used on GPU.
"""

from __future__ import annotations

import logging

import torch

from tokalign.align.errors import TokalignError
from tokalign.generate.config import OptimConfig
from tokalign.generate.model.freeze import optimizer_groups

log = logging.getLogger(__name__)


def build_optimizer(model: torch.nn.Module, config: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (betas, eps, decay from ``config``; the learning rate is set every step by the schedule)."""
    groups = optimizer_groups(model, config.weight_decay)
    if not groups:
        raise TokalignError("no parameter is trainable: the freeze preset left nothing to train; choose another --train-only")
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                             fused=device.type == "cuda" or None)


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared tensor once."""
    seen: dict[int, torch.nn.Parameter] = {}
    for param in model.parameters():
        seen.setdefault(id(param), param)
    total = sum(p.numel() for p in seen.values())
    return sum(p.numel() for p in seen.values() if p.requires_grad), total
