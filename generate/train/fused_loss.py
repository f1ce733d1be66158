"""Linear + cross-entropy over row chunks: the (rows, vocabulary) logits are never held whole.

:func:`linear_cross_entropy` takes final hidden states ``(n, d)``, the output layer's weight ``(V, d)`` (and
bias), and targets ``(n,)`` (``-100``: no target) and returns the summed loss (differentiable) and every row's
loss (float32, 0 where there is no target; not differentiable). Per chunk of rows it computes the logits in the
compute dtype, the log-sum-exp and the target logit in float32, and, when gradients are wanted, the gradient of
the summed loss with respect to the chunk's logits (``softmax - one-hot``), which it folds at once into the
gradients with respect to the hidden states and the weight (accumulated in float32). The backward pass only
scales those by the incoming gradient of the sum, so the head costs three matrix products as in the plain path,
but its memory is one chunk of logits instead of all of them (and their float32 copy and gradient). Rows of the
weight that are frozen (``frozen_rows``: the first rows of a split table, ``--train-only new-rows``) get no
gradient work: their block of the weight gradient stays zero and that matrix product covers the trainable rows
only (a quarter of them for a 65,600-row table with a 49,152-row frozen text block).

The per-chunk element-wise work (:func:`chunk_loss_grad`) can be replaced by a compiled version of itself
(:func:`compiled_chunk_math`); the plain one is the reference.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.autograd.function import once_differentiable

IGNORE_INDEX = -100
#: working memory per chunk (about 12 bytes per logit); on a CPU ~1,300 rows of a 65,600-row table: the weight-gradient
#: product of bf16 chunks runs ~1.3x faster at that depth than at 320 rows (benchmarks/bench_generator_step.py)
CHUNK_BYTES = {"cuda": 2 << 30, "cpu": 1 << 30}
BYTES_PER_LOGIT = 12

ChunkMath = Callable[[torch.Tensor, torch.Tensor, bool], "tuple[torch.Tensor, torch.Tensor | None]"]


def chunk_loss_grad(logits: torch.Tensor, target: torch.Tensor, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Row losses (float32, or float64 for float64 logits) of ``logits`` (c, V) against ``target`` (c,) and, if
    ``grad``, d(sum of losses)/d logits in the logits' dtype (zero rows where there is no target).

    Works in place on ``logits`` when they are already float32 (the caller's chunk buffer: no new (c, V) tensor)."""
    full = logits.to(torch.promote_types(logits.dtype, torch.float32))
    valid = target >= 0
    index = target.clamp(min=0).unsqueeze(1)
    picked = full.gather(1, index).squeeze(1)
    top = full.amax(dim=1, keepdim=True)
    probs = full.sub_(top).exp_()  # exp(logit - max), in place
    total = probs.sum(dim=1, keepdim=True)
    losses = torch.where(valid, (top + total.log()).squeeze(1) - picked, 0.0)
    if not grad:
        return losses, None
    weight = valid.to(probs.dtype).unsqueeze(1)
    probs.mul_(weight / total).scatter_add_(1, index, -weight)  # softmax - one-hot, zero rows without a target
    return losses, probs.to(logits.dtype)


def compiled_chunk_math() -> ChunkMath:
    """:func:`chunk_loss_grad` under ``torch.compile`` (one fused kernel per chunk; dynamic row count)."""
    return torch.compile(chunk_loss_grad, dynamic=True)


def chunk_rows(device: torch.device, vocab: int) -> int:
    """Rows per chunk for ``device``: :data:`CHUNK_BYTES` over the bytes of a row, a multiple of 64, at least 64."""
    budget = CHUNK_BYTES.get(device.type, CHUNK_BYTES["cpu"])
    return max(64, budget // (vocab * BYTES_PER_LOGIT) // 64 * 64)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target, dtype, chunk, wants, math, frozen):
        n, vocab = hidden.shape[0], weight.shape[0]
        h, w = hidden.to(dtype), weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        acc = torch.promote_types(dtype, torch.float32)  # float32 accumulators (float64 stays float64)
        losses = torch.empty(n, dtype=acc, device=hidden.device)
        grad_h = torch.empty_like(h) if wants[0] else None
        grad_w = torch.empty(weight.shape, dtype=acc, device=weight.device) if wants[1] else None
        if grad_w is not None:
            grad_w[:frozen].zero_()
            if n == 0:
                grad_w.zero_()
        grad_b = torch.zeros(vocab, dtype=acc, device=weight.device) if wants[2] else None
        grad = any(wants)
        buffer = torch.empty(min(chunk, n), vocab, dtype=dtype, device=hidden.device)  # reused by every chunk
        for lo in range(0, n, chunk):
            hc = h[lo:lo + chunk]
            out = buffer[:hc.shape[0]]
            logits = torch.mm(hc, w.t(), out=out) if b is None else torch.addmm(b, hc, w.t(), out=out)
            losses[lo:lo + chunk], dlogits = math(logits, target[lo:lo + chunk], grad)
            if grad_h is not None:
                torch.mm(dlogits, w, out=grad_h[lo:lo + chunk])
            if grad_w is not None:  # the first chunk writes the trainable rows (no zero fill), later ones add
                rows, part = grad_w[frozen:], dlogits[:, frozen:].t()
                if dlogits.dtype == acc:
                    rows.addmm_(part, hc, beta=1 if lo else 0)
                elif lo:
                    rows += (part @ hc).to(acc)
                else:
                    rows.copy_(part @ hc)
            if grad_b is not None:
                grad_b += dlogits.to(acc).sum(0)
        ctx.grads, ctx.dtypes = (grad_h, grad_w, grad_b), (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(losses)
        return losses.sum(), losses

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_sum, _grad_losses):
        out = [None if g is None else g.mul_(grad_sum).to(dtype) for g, dtype in zip(ctx.grads, ctx.dtypes)]
        ctx.grads = None  # the gradients are handed over once
        return out[0], out[1], out[2], None, None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor,
                         *, dtype: torch.dtype | None = None, chunk: int | None = None,
                         math: ChunkMath | None = None, frozen_rows: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, per-row losses) of ``hidden @ weight.T + bias`` against ``target`` (module docstring).

    ``dtype``: the compute dtype of the logits (default: the autocast dtype when autocast is on for the device,
    else the weight's); ``chunk``: rows per chunk (default :func:`chunk_rows`); ``math``: the per-chunk
    element-wise function (default :func:`chunk_loss_grad`); ``frozen_rows``: the first rows of ``weight`` whose
    gradient is not wanted (returned as zeros, never computed).
    """
    device = hidden.device
    if dtype is None:
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else weight.dtype
    enabled = torch.is_grad_enabled()
    wants = (enabled and hidden.requires_grad, enabled and weight.requires_grad,
             enabled and bias is not None and bias.requires_grad)
    with torch.autocast(device.type, enabled=False):
        return _LinearCrossEntropy.apply(hidden, weight, bias, target, dtype,
                                         chunk or chunk_rows(device, weight.shape[0]), wants, math or chunk_loss_grad,
                                         max(0, min(int(frozen_rows), weight.shape[0])))
