"""Bag-of-image-tokens vectors: the fast path and its plain reference.

The paper's image vector is the mean of the learnable image-token embeddings
over the image's 1,024 tokens: ``u = mean_i E[t_i]``.  That is linear in the
table: ``u = h @ E`` with ``h`` the image's token histogram divided by the
token count.  Real images repeat tokens, so each image becomes a short *bag*
of distinct ids with weights, and a batch of bags is a sparse matrix ``H``
(batch x codebook) in CSR form.

* forward:  ``U = H @ E``            (CSR sparse x dense)
* backward: ``dE = H^T @ dU``        (the transposed bags, also CSR)

Neither direction ever materializes a (batch, 1024, d) tensor.  The bags are
built on the CPU with NumPy (a radix sort per row), so a data-loading thread
can prepare the next batch while the current one trains.

``naive_image_vectors`` is the reference ``E[tokens].mean(1)``; tests check
that both give the same values and gradients.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TokenBags:
    """A batch of images as weighted bags of distinct token ids.

    Row-major (per image) CSR: image ``b`` holds ``ids[crow[b]:crow[b+1]]``
    with ``weights`` (count / tokens per image).  The transposed arrays list,
    for each token id ``v``, the images that contain it:
    ``rows_t[crow_t[v]:crow_t[v+1]]`` with weights ``weights_t``.
    """

    crow: torch.Tensor       # (batch + 1,) int64
    ids: torch.Tensor        # (nnz,) int64, sorted within each image
    weights: torch.Tensor    # (nnz,) float32
    crow_t: torch.Tensor     # (codebook + 1,) int64
    rows_t: torch.Tensor     # (nnz,) int64
    weights_t: torch.Tensor  # (nnz,) float32
    codebook_size: int

    @property
    def batch_size(self) -> int:
        return self.crow.numel() - 1

    @property
    def nnz(self) -> int:
        return self.ids.numel()

    def to(self, device: torch.device | str) -> "TokenBags":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return TokenBags(move(self.crow), move(self.ids), move(self.weights), move(self.crow_t),
                         move(self.rows_t), move(self.weights_t), self.codebook_size)

    def matrix(self) -> torch.Tensor:
        """The (batch, codebook) sparse CSR matrix ``H``."""
        return _csr(self.crow, self.ids, self.weights, (self.batch_size, self.codebook_size))

    def matrix_t(self) -> torch.Tensor:
        """The (codebook, batch) sparse CSR matrix ``H^T``."""
        return _csr(self.crow_t, self.rows_t, self.weights_t, (self.codebook_size, self.batch_size))


def _csr(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # PyTorch's "CSR support is in beta" notice, scoped to this call only
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


def bags_from_tokens(tokens: np.ndarray, codebook_size: int, dtype: np.dtype = np.float32) -> TokenBags:
    """Deduplicate each image's tokens into a weighted bag.

    ``tokens`` is (batch, tokens_per_image) of non-negative ids below
    ``codebook_size``; every image must have the same token count.  Weights
    have ``dtype`` (the table's dtype).
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        raise ValueError(f"tokens must be (batch, tokens_per_image), got shape {tokens.shape}")
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= codebook_size):
        raise ValueError(f"token ids {int(tokens.min())}..{int(tokens.max())} fall outside the codebook of {codebook_size}")
    batch, length = tokens.shape
    ordered = np.sort(tokens, axis=1, kind="stable")  # radix sort for 16-bit ids
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ids = ordered[starts].astype(np.int64)
    run_starts = np.flatnonzero(starts)
    counts = np.diff(np.append(run_starts, ordered.size))
    weights = (counts / length).astype(dtype)
    per_image = starts.sum(axis=1)
    crow = np.zeros(batch + 1, dtype=np.int64)
    np.cumsum(per_image, out=crow[1:])

    order = np.argsort(ids, kind="stable")  # group the bags by token id
    rows = np.repeat(np.arange(batch, dtype=np.int64), per_image)
    crow_t = np.zeros(codebook_size + 1, dtype=np.int64)
    np.cumsum(np.bincount(ids, minlength=codebook_size), out=crow_t[1:])
    return TokenBags(
        crow=torch.from_numpy(crow), ids=torch.from_numpy(ids), weights=torch.from_numpy(weights),
        crow_t=torch.from_numpy(crow_t), rows_t=torch.from_numpy(rows[order]),
        weights_t=torch.from_numpy(weights[order]), codebook_size=codebook_size,
    )


class _BagMean(torch.autograd.Function):
    """``U = H @ E`` with the gradient ``dE = H^T @ dU`` from the transposed bags."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, bags: TokenBags) -> torch.Tensor:  # type: ignore[override]
        ctx.bags = bags
        return torch.sparse.mm(bags.matrix(), table)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        grad_table = None
        if ctx.needs_input_grad[0]:
            grad_table = torch.sparse.mm(ctx.bags.matrix_t(), grad_out.contiguous())
        return grad_table, None


def image_vectors(table: torch.Tensor, bags: TokenBags) -> torch.Tensor:
    """Mean image-token embedding per image, (batch, d), differentiable in ``table``."""
    if bags.codebook_size != table.shape[0]:
        raise ValueError(f"bags built for a codebook of {bags.codebook_size}, the table has {table.shape[0]} rows")
    return _BagMean.apply(table, bags)


def naive_image_vectors(table: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The plain reference ``E[tokens].mean(1)``; materializes (batch, L, d)."""
    return table[tokens.long()].mean(dim=1)
