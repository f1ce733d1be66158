"""Did image training keep the image rows where the init put them? (paper, end of section 3.2)

For each image token: the cosine between its input row in the generator and in the init it started from, and the
overlap of their top-k nearest text tokens (exact cosine search, :mod:`tokalign.align.search.faiss_ip`, the search
of ``tokalign neighbors``). Each side searches its own text rows: the generator's image rows among the
generator's text rows, the init's among the base LM's. Overlap = |A ∩ B| / k.

Chance: two independent uniformly random k-subsets of V text tokens share k²/V tokens on average (overlap k/V),
and share at least one with probability 1 - C(V-k, k) / C(V, k) (hypergeometric), about k²/V when k² << V.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tokalign.align.search.faiss_ip import exact_ip_search, normalized

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def probe_rows(count: int, limit: int) -> np.ndarray:
    """Which image rows to probe: all (``limit`` 0 or >= count), else ``limit`` evenly spaced ones."""
    if limit <= 0 or limit >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(np.int64))


def row_retention(generator_rows: np.ndarray, generator_text: np.ndarray, init_rows: np.ndarray,
                  init_text: np.ndarray, k: int) -> dict[str, Any]:
    """The summary (see the module docstring) for matching rows of ``generator_rows`` and ``init_rows``."""
    if generator_rows.shape != init_rows.shape:
        raise ValueError(f"row blocks differ: {generator_rows.shape} vs {init_rows.shape}")
    cosine = np.einsum("nd,nd->n", normalized(generator_rows), normalized(init_rows))
    _, gen_ids, device = exact_ip_search(generator_rows, generator_text, k)
    _, init_ids, _ = exact_ip_search(init_rows, init_text, k)
    overlap = (gen_ids[:, :, None] == init_ids[:, None, :]).any(-1).sum(-1) / k
    vocab = min(len(generator_text), len(init_text))
    return {"rows": int(len(cosine)), "k": k, "text_rows": vocab, "search_device": device,
            "cosine": summary(cosine), "overlap": summary(overlap),
            "kept_any_neighbour": float((overlap > 0).mean()), "kept_top1": float((gen_ids[:, 0] == init_ids[:, 0]).mean()),
            "chance": chance_overlap(k, vocab)}


def summary(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    out = {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}
    out.update({f"q{int(round(q * 100)):02d}": float(np.quantile(values, q)) for q in QUANTILES})
    return out


def chance_overlap(k: int, vocab: int) -> dict[str, Any]:
    """Overlap of two random top-k sets among ``vocab`` tokens: mean fraction k/V, P(any shared)."""
    if 2 * k > vocab:
        p_none = 0.0
    else:  # C(V-k, k) / C(V, k)
        p_none = math.exp(math.lgamma(vocab - k + 1) * 2 - math.lgamma(vocab - 2 * k + 1) - math.lgamma(vocab + 1))
    return {"overlap": k / vocab, "shared_tokens": k * k / vocab, "kept_any_neighbour": 1.0 - p_none,
            "formula": "random top-k sets of V tokens: E|A∩B| = k²/V (overlap k/V); P(|A∩B| > 0) = 1 - C(V-k,k)/C(V,k)"}
