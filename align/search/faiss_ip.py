"""Exact cosine nearest neighbours with FAISS, the one search of ``neighbors``, ``report`` and the generator probe.

Torch-free. Both sides are L2-normalized and a FAISS ``IndexFlatIP`` returns the top k inner products
(= cosines), moved to all GPUs when ``faiss.get_num_gpus() > 0`` and never otherwise
(``index_cpu_to_all_gpus`` with no GPU silently returns an empty index). An all-zero row has cosine 0 with
everything.
"""

from __future__ import annotations

import numpy as np

from tokalign.align.errors import TokalignError


def normalized(rows: np.ndarray) -> np.ndarray:
    """A float32 C-contiguous copy of ``rows`` (n, d) with unit L2 rows (zero rows stay zero)."""
    import faiss

    out = np.array(rows, dtype=np.float32, order="C", copy=True, ndmin=2)
    faiss.normalize_L2(out)
    return out


def exact_ip_search(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Top-``k`` cosine similarities of each query row against ``database`` rows: (scores, ids, device)."""
    import faiss

    if not 1 <= k <= len(database):
        raise TokalignError(f"-k {k} is out of range: there are {len(database)} rows to search")
    base = normalized(database)
    index = faiss.IndexFlatIP(base.shape[1])
    device = "cpu"
    if faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
        device = "gpu"
    index.add(base)
    scores, ids = index.search(normalized(queries), k)
    return scores, ids, device
