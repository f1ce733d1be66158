"""Held-out evaluation of an image-token table: the one function behind ``fit``'s ``eval.json`` and ``report``.

The held-out images become normalized bag means of the table (exactly the training forward), the held-out
captions come as the caller's normalized caption vectors (the frozen LM side), and recall@k is computed both
ways against chance.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

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
def evaluate_holdout(weight: torch.Tensor, corpus, indices: np.ndarray, caption_vecs: torch.Tensor,
                     ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@k both ways (with chance) of held-out items ``indices`` against their caption vectors."""
    images = holdout_image_vectors(weight, corpus, indices)
    return recall_at_k(images, caption_vecs.to(images.device), ks=tuple(ks))
