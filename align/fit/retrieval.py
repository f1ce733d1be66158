"""Cross-modal retrieval metrics: recall@k in both directions, beside chance.

Pair ``i`` is image ``i`` with caption ``i``; a query scores a hit at ``k``
when its own partner is among the ``k`` most similar items of the other side
(ties broken by the lower index).  Chance is ``k / n`` for a gallery of ``n``.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def recall_at_k(image_features: torch.Tensor, text_features: torch.Tensor,
                ks: tuple[int, ...] = (1, 5, 10), chunk: int = 4096) -> dict:
    """``{"i2t": {"R@1": ...}, "t2i": {...}, "chance": {...}, "pairs": n}`` on normalized features."""
    n = image_features.shape[0]
    assert text_features.shape[0] == n, "retrieval needs as many captions as images"
    ks = tuple(k for k in ks if k <= n)
    return {"pairs": n,
            "i2t": _recall(image_features, text_features, ks, chunk),
            "t2i": _recall(text_features, image_features, ks, chunk),
            "chance": {f"R@{k}": k / n for k in ks}}


def _recall(queries: torch.Tensor, gallery: torch.Tensor, ks: tuple[int, ...], chunk: int) -> dict:
    n = queries.shape[0]
    ranks = torch.empty(n, dtype=torch.long)
    for lo in range(0, n, chunk):
        sims = queries[lo:lo + chunk] @ gallery.T
        own = sims.gather(1, torch.arange(lo, lo + sims.shape[0], device=sims.device)[:, None])
        ahead = (sims > own).sum(1)
        # equal scores at a lower index also rank ahead
        cols = torch.arange(n, device=sims.device)[None, :]
        ahead += ((sims == own) & (cols < torch.arange(lo, lo + sims.shape[0], device=sims.device)[:, None])).sum(1)
        ahead[torch.isnan(own[:, 0])] = n  # a NaN score is a miss, never a tie
        ranks[lo:lo + sims.shape[0]] = ahead.cpu()
    return {f"R@{k}": float((ranks < k).float().mean()) for k in ks}
