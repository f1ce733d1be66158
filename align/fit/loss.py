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
    if world == 1:  # one process: text->image logits are the transpose, fused in one function
        return _SymmetricInfoNCE.apply(image_features, text_features, logit_scale)
    scale = logit_scale.exp()
    logits_per_image = scale * image_features @ gather_with_grad(text_features).T
    logits_per_text = scale * text_features @ gather_with_grad(image_features).T
    local = image_features.shape[0]
    labels = torch.arange(local, device=image_features.device) + rank * local
    return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))


class _SymmetricInfoNCE(torch.autograd.Function):
    """One process's loss with a hand-written backward: one (n x n) logit matrix, two matmuls in all.

    ``L = (mean_i [lse_row_i - l_ii] + mean_j [lse_col_j - l_jj]) / 2`` with ``l = exp(s) I T^T``;
    ``dL/dl = (softmax_rows + softmax_cols) / 2n - diag / n``.  Autograd's version of the same formula
    spends more time in strided adds of transposed gradients than in its matmuls on a CPU.
    """

    @staticmethod
    def forward(ctx, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        scale = logit_scale.exp()
        logits = torch.mm(image, text.T).mul_(scale)
        lse_rows, lse_cols = torch.logsumexp(logits, dim=1), torch.logsumexp(logits, dim=0)
        diag = logits.diagonal()
        ctx.save_for_backward(image, text, scale, logits, lse_rows, lse_cols)
        return 0.5 * ((lse_rows - diag).mean() + (lse_cols - diag).mean())

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        image, text, scale, logits, lse_rows, lse_cols = ctx.saved_tensors
        n = logits.shape[0]
        g = torch.exp(logits - lse_rows[:, None]).add_(torch.exp(logits - lse_cols[None, :]))
        g.mul_(grad * (0.5 / n))
        g.diagonal().sub_(grad / n)
        grad_image = torch.mm(g, text).mul_(scale) if ctx.needs_input_grad[0] else None
        grad_text = torch.mm(g.T, image).mul_(scale) if ctx.needs_input_grad[1] else None
        grad_scale = torch.dot(g.reshape(-1), logits.reshape(-1)).reshape(()) if ctx.needs_input_grad[2] else None
        return grad_image, grad_text, grad_scale


def normalize(features: torch.Tensor) -> torch.Tensor:
    return F.normalize(features, dim=-1)
