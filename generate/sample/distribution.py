"""From one step's logits to one token per row: temperature, top-k, top-p, then a seeded inverse-CDF draw.

Every row brings its own uniform number ``u`` in [0, 1) (from :mod:`.seeds`), so a row's token depends only on
its own logits and its own ``u``, never on the other rows of the batch. The draw picks the first id whose
cumulative probability exceeds ``u`` times the total; ids of probability 0 (masked, or cut by top-k/top-p)
are never picked.
"""

from __future__ import annotations

import torch


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """(B, V) float logits -> (B, V) probabilities after temperature, top-k (0 = off) and top-p (1 = off).

    top-k keeps ties with the k-th value; top-p keeps the smallest prefix of the sorted distribution whose mass
    reaches ``top_p`` (always at least the most likely id).
    """
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass strictly before each id
        sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return probs


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(B, V) non-negative weights and (B,) uniforms in [0, 1) -> (B,) int64 ids with weight > 0."""
    cdf = torch.cumsum(probs, dim=-1)
    target = (u.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    ids = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    # float rounding can put the target on the total (or, in a blocked scan, a step on an id of weight 0): then
    # the draw is the last id of positive weight, so an id of weight 0 is never returned
    last = probs.shape[-1] - 1 - torch.argmax((probs > 0).flip(-1).to(torch.uint8), dim=-1)
    ids = torch.minimum(ids, last)
    return torch.where(probs.gather(-1, ids.unsqueeze(-1)).squeeze(-1) > 0, ids, last)


def sample_next(logits: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """One token per row of ``logits`` (already constrained), drawn with the row's uniform ``u``."""
    return draw(filter_logits(logits, temperature, top_k, top_p), u)
