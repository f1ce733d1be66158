"""Bag-of-image-tokens vectors: the fast path and its plain reference.

The paper's image vector is the mean of the learnable image-token embeddings
over the image's 1,024 tokens: ``u = mean_i E[t_i]``.  That is linear in the
table: ``u = h @ E`` with ``h`` the image's token histogram divided by the
token count.  Real images repeat tokens, so each image becomes a short *bag*
of distinct ids with weights, and a batch of bags is a sparse matrix ``H``
(batch x codebook) in CSR form.

* forward:  ``U = H @ E``            (CSR sparse x dense)
* backward: ``dE = H^T @ dU``        (the transposed bags, also CSR)

Two backends compute them: ``"kernel"``, the compiled CPU kernel of :mod:`tokalign.align.fit.bag_kernel`
(both directions from the transposed bags: each table row read once forward, each gradient row written once
backward), and ``"sparse"``, PyTorch's sparse CSR products (any device).  ``"auto"`` takes the kernel for CPU
float32/float64 tables where it compiles, else the sparse products.

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

from tokalign.align.fit import bag_kernel


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

    def image_vectors(self, table: torch.Tensor) -> torch.Tensor:
        """:func:`image_vectors` of these bags (the method every batch kind offers the table)."""
        return image_vectors(table, self)

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

    keys = ids.astype(np.uint16) if codebook_size <= 1 << 16 else ids
    order = np.argsort(keys, kind="stable")  # group the bags by token id (a radix sort for 16-bit keys)
    rows = np.repeat(np.arange(batch, dtype=np.int64), per_image)
    crow_t = np.zeros(codebook_size + 1, dtype=np.int64)
    np.cumsum(np.bincount(ids, minlength=codebook_size), out=crow_t[1:])
    return TokenBags(
        crow=torch.from_numpy(crow), ids=torch.from_numpy(ids), weights=torch.from_numpy(weights),
        crow_t=torch.from_numpy(crow_t), rows_t=torch.from_numpy(rows[order]),
        weights_t=torch.from_numpy(weights[order]), codebook_size=codebook_size,
    )


def bags_from_token_tensor(tokens: torch.Tensor, codebook_size: int, dtype: torch.dtype = torch.float32) -> TokenBags:
    """:func:`bags_from_tokens` on a (batch, L) integer tensor, built where it lives (on a GPU: no CPU work).

    Equal to the NumPy builder's bags, element for element (a test checks it); ids are not range-checked.
    """
    batch, length = tokens.shape
    ordered = torch.sort(tokens.long(), dim=1).values
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ids = ordered[starts]
    run_starts = torch.nonzero(starts.reshape(-1)).squeeze(1)
    ends = torch.cat([run_starts[1:], run_starts.new_full((1,), ordered.numel())])
    weights = ((ends - run_starts).double() / length).to(dtype)
    per_image = starts.sum(dim=1)
    crow = torch.zeros(batch + 1, dtype=torch.long, device=tokens.device)
    crow[1:] = torch.cumsum(per_image, dim=0)
    order = torch.argsort(ids, stable=True)
    rows = torch.repeat_interleave(torch.arange(batch, device=tokens.device), per_image)
    crow_t = torch.zeros(codebook_size + 1, dtype=torch.long, device=tokens.device)
    crow_t[1:] = torch.cumsum(torch.bincount(ids, minlength=codebook_size), dim=0)
    return TokenBags(crow=crow, ids=ids, weights=weights, crow_t=crow_t, rows_t=rows[order], weights_t=weights[order],
                     codebook_size=codebook_size)


class _BagMean(torch.autograd.Function):
    """``U = H @ E`` with the gradient ``dE = H^T @ dU`` from the transposed bags."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, bags: TokenBags, kernel: bool) -> torch.Tensor:  # type: ignore[override]
        ctx.bags, ctx.kernel = bags, kernel
        if kernel:
            return bag_kernel.forward(table.detach(), bags.crow_t, bags.rows_t, bags.weights_t, bags.batch_size)
        return torch.sparse.mm(bags.matrix(), table)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        grad_table = None
        if ctx.needs_input_grad[0]:
            bags = ctx.bags
            if ctx.kernel:
                grad_table = bag_kernel.backward(grad_out, bags.crow_t, bags.rows_t, bags.weights_t, bags.codebook_size)
            else:
                grad_table = torch.sparse.mm(bags.matrix_t(), grad_out.contiguous())
        return grad_table, None, None


BACKENDS = ("auto", "kernel", "sparse")


def image_vectors(table: torch.Tensor, bags: TokenBags, backend: str = "auto") -> torch.Tensor:
    """Mean image-token embedding per image, (batch, d), differentiable in ``table``.

    ``backend`` picks the product (module docstring); ``"kernel"`` raises where the kernel cannot run.
    """
    if bags.codebook_size != table.shape[0]:
        raise ValueError(f"bags built for a codebook of {bags.codebook_size}, the table has {table.shape[0]} rows")
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
    kernel = backend != "sparse" and bag_kernel.supports(table)
    if backend == "kernel" and not kernel:
        raise ValueError("the compiled bag kernel needs a CPU float32/float64 table and a C compiler")
    return _BagMean.apply(table, bags, kernel)


def naive_image_vectors(table: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The plain reference ``E[tokens].mean(1)``; materializes (batch, L, d)."""
    return table[tokens.long()].mean(dim=1)
