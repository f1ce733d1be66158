"""Token-count batches: the image side of a fit on a GPU, as two dense matrix products.

The image vector is ``u = h @ E`` with ``h`` the image's token histogram divided by its token count
(:mod:`tokalign.align.fit.bags`).  On a GPU the sparse structure does not pay: the dense (batch x codebook)
count matrix ``C`` of a batch is one scatter-add of its tokens into zeros (no sort, no host round trip), and
the products are tensor-core matrix multiplications (19 GFLOP each at batch 1,024, codebook 16,384, d 576):

* forward:  ``U = (C @ E) / L``
* backward: ``dE = C^T @ (dU / L)``

``C`` holds integer counts up to ``L``, exact in TF32 (10-bit mantissa) up to 2,048.  Precision
(:data:`PRECISIONS`):

* ``"split"`` (default): each product is two TF32 passes over a hi/lo split of the float operand,
  ``x = hi + lo`` with ``hi`` rounded to TF32 so tensor cores read it exactly and ``lo`` the float32
  remainder; the error is ~2^-21 relative, float32's order (one TF32 pass errs by ~2^-11);
* ``"tf32"``: one TF32 pass;
* ``"float32"``: the plain float32 product (no tensor cores on a GPU).

TF32 is switched on only around these products and only for CUDA tensors; on a CPU every product is plain
float32 (the split then just adds its two halves).  Counts above 2,048 (``L > 2048``) take ``"float32"``.
Tables of another dtype (bfloat16) take one product in their dtype.  ``tests/align/fit/test_token_counts.py``
checks every precision against the plain reference ``E[tokens].mean(1)``, forward and backward.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = {"split": 2, "tf32": 1, "float32": 0}  # name -> TF32 passes per product
TF32_EXACT_COUNTS = 2048  # integers up to this are exact in TF32
_TF32_DROP = 13  # float32 mantissa bits TF32 leaves out


@dataclass(frozen=True)
class TokenCounts:
    """A batch of images as a dense (batch, codebook) matrix of token counts, ``length`` tokens per image."""

    counts: torch.Tensor  # (batch, codebook), integer values in the table's dtype
    length: int

    @property
    def batch_size(self) -> int:
        return self.counts.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.counts.shape[1]

    def to(self, device: torch.device | str) -> "TokenCounts":
        return TokenCounts(self.counts.to(device, non_blocking=True), self.length)

    def image_vectors(self, table: torch.Tensor, precision: str = "split") -> torch.Tensor:
        return counts_image_vectors(table, self, precision)


def token_counts(tokens: torch.Tensor, codebook_size: int, dtype: torch.dtype = torch.float32) -> TokenCounts:
    """Count each image's tokens where ``tokens`` (batch, L; ids in ``[0, codebook_size)``, unchecked) lives."""
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        raise ValueError(f"tokens must be (batch, tokens_per_image), got shape {tuple(tokens.shape)}")
    counts = torch.zeros(tokens.shape[0], codebook_size, dtype=dtype, device=tokens.device)
    counts.scatter_add_(1, tokens.long(), torch.ones(tokens.shape, dtype=dtype, device=tokens.device))
    return TokenCounts(counts, int(tokens.shape[1]))


def tf32_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hi, lo)`` with ``hi + lo == x`` exactly, ``hi`` rounded to TF32 (its low 13 mantissa bits zero)."""
    bits = x.contiguous().view(torch.int32)
    hi = ((bits + (1 << (_TF32_DROP - 1))) & -(1 << _TF32_DROP)).view(torch.float32)
    return hi, x - hi


@contextlib.contextmanager
def _tf32(on: bool):
    """TF32 matrix products inside the block (CUDA only), the caller's setting restored after."""
    try:
        before = torch.get_float32_matmul_precision() if on else None
    except RuntimeError:  # the process mixed torch's old and new precision settings: leave them alone
        before = None
    if before is None:
        yield
        return
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _product(counts: torch.Tensor, x: torch.Tensor, passes: int) -> torch.Tensor:
    """``counts @ x`` with ``passes`` TF32 passes (0: the operands' own precision)."""
    if passes == 0 or x.dtype != torch.float32:
        return torch.mm(counts.to(x.dtype), x)
    with _tf32(x.is_cuda):
        if passes == 1:
            return torch.mm(counts, x)
        hi, lo = tf32_split(x)
        return torch.mm(counts, hi).addmm_(counts, lo)


class _CountsMean(torch.autograd.Function):
    """``U = C @ E / L`` with the gradient ``dE = C^T @ dU / L``."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, counts: torch.Tensor, length: int, passes: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(counts)
        ctx.length, ctx.passes = length, passes
        return _product(counts, table.detach(), passes).div_(length)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        grad_table = None
        if ctx.needs_input_grad[0]:
            (counts,) = ctx.saved_tensors
            grad_table = _product(counts.T, grad_out.contiguous() / ctx.length, ctx.passes)
        return grad_table, None, None, None


def counts_image_vectors(table: torch.Tensor, batch: TokenCounts, precision: str = "split") -> torch.Tensor:
    """Mean image-token embedding per image, (batch, d), differentiable in ``table`` (module docstring)."""
    if batch.codebook_size != table.shape[0]:
        raise ValueError(f"counts over a codebook of {batch.codebook_size}, the table has {table.shape[0]} rows")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {tuple(PRECISIONS)}")
    passes = PRECISIONS[precision] if batch.length <= TF32_EXACT_COUNTS else 0
    return _CountsMean.apply(table, batch.counts, batch.length, passes)
