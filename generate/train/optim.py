"""The generator's optimizer: AdamW over trainable parameters only, weight decay on matrices only.

The groups come from :func:`tokalign.generate.model.freeze.optimizer_groups`: frozen parameters (``requires_grad``
False, set by a freeze preset) are left out of the optimizer entirely, so weight decay can never move them;
parameters with two or more dimensions (linear weights, embedding tables) are decayed, vectors (norm scales,
biases) are not. The fused kernel is used on GPU and CPU (:func:`fused_adamw`; on a CPU it is several times
faster than the per-tensor loop over a 65,600-row table, with the same updates).
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
                             fused=fused_adamw(device) or None)


def fused_adamw(device: torch.device) -> bool:
    """Whether torch's fused AdamW kernel serves ``device`` (CUDA, and CPU in torch >= 2.4)."""
    return device.type == "cuda" or (device.type == "cpu" and _torch_at_least(2, 4))


def _torch_at_least(major: int, minor: int) -> bool:
    parts = torch.__version__.split("+")[0].split(".")
    return (int(parts[0]), int(parts[1])) >= (major, minor)


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared tensor once."""
    seen: dict[int, torch.nn.Parameter] = {}
    for param in model.parameters():
        seen.setdefault(id(param), param)
    total = sum(p.numel() for p in seen.values())
    return sum(p.numel() for p in seen.values() if p.requires_grad), total
