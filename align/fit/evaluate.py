"""Held-out evaluation of an image-token table: the one function behind ``fit``'s curves, its ``eval.json``
and ``report``.

The held-out images become normalized bag means of the table (exactly the training forward), the held-out
captions come as the caller's normalized caption vectors (the frozen LM side).  Recall@k is computed both
ways against chance and, given the logit scale, the symmetric contrastive loss the training minimizes:
scored in consecutive chunks of ``loss_batch`` pairs (the training batch size, so held-out and training loss
see the same number of negatives; a remainder shorter than a chunk is left out unless it is the only one)
and averaged over the chunks.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tokalign.align.fit.bags import bags_from_tokens, image_vectors
from tokalign.align.fit.loss import normalize
from tokalign.align.fit.retrieval import recall_at_k


@torch.no_grad()
def holdout_image_vectors(weight: torch.Tensor, corpus, indices: np.ndarray, chunk: int = 1024) -> torch.Tensor:
    """Normalized image vectors (len(indices), d) of corpus items ``indices`` under table ``weight``."""
    out = []
    indices = np.asarray(indices, dtype=np.int64)
    for lo in range(0, len(indices), chunk):
        bags = bags_from_tokens(corpus.image_tokens(indices[lo:lo + chunk]), int(weight.shape[0]))
        out.append(normalize(image_vectors(weight, bags.to(weight.device))))
    return torch.cat(out) if out else weight.new_zeros((0, weight.shape[1]))


@torch.no_grad()
def contrastive_loss(images: torch.Tensor, captions: torch.Tensor, logit_scale: float,
                     loss_batch: int | None = None) -> float:
    """Mean symmetric InfoNCE of matched rows, over chunks of ``loss_batch`` pairs (module docstring)."""
    n = images.shape[0]
    size = n if loss_batch is None else min(int(loss_batch), n)
    starts = list(range(0, n - size + 1, size))
    scale = torch.tensor(float(logit_scale), dtype=images.dtype, device=images.device).exp()
    losses = []
    for lo in starts:
        logits = scale * images[lo:lo + size] @ captions[lo:lo + size].T
        labels = torch.arange(size, device=images.device)
        losses.append(0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)))
    return float(torch.stack(losses).mean())


@torch.no_grad()
def evaluate_holdout(weight: torch.Tensor, corpus, indices: np.ndarray, caption_vecs: torch.Tensor,
                     ks: Sequence[int] = (1, 5, 10), logit_scale: float | None = None,
                     loss_batch: int | None = None) -> dict:
    """Recall@k both ways (with chance) of held-out items ``indices`` against their caption vectors.

    With ``logit_scale`` the result also holds ``"loss"``: :func:`contrastive_loss` at that scale.
    """
    images = holdout_image_vectors(weight, corpus, indices)
    captions = caption_vecs.to(images.device)
    result = recall_at_k(images, captions, ks=tuple(ks))
    if logit_scale is not None and len(images):
        result["loss"] = contrastive_loss(images, captions.to(images.dtype), logit_scale, loss_batch)
    return result


class HeldOut:
    """The held-out pairs of a fit: their indices, caption vectors and loss chunk, evaluated on demand."""

    def __init__(self, corpus, indices: np.ndarray, caption_vecs: torch.Tensor, loss_batch: int) -> None:
        self.corpus, self.indices, self.caption_vecs, self.loss_batch = corpus, indices, caption_vecs, loss_batch

    def evaluate(self, weight: torch.Tensor, logit_scale: float) -> dict:
        return evaluate_holdout(weight, self.corpus, self.indices, self.caption_vecs, logit_scale=logit_scale,
                                loss_batch=self.loss_batch)
