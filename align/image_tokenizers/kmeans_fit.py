"""Weighted, hierarchical k-means for the patch tokenizer's codebook (FAISS).

The tokenizer hands over unique patches with their counts as weights.  Up to
``_LEAF`` centroids are clustered flat; more are clustered in two levels:
about sqrt(K) coarse centroids first, then each coarse cell receives a share
of the K codes proportional to its weighted squared error and is clustered on
its own.  That costs ~sqrt(K) instead of K distance computations per point and
iteration, which is what makes 16,384 codes affordable on a CPU.
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)

_LEAF = 256  # largest k clustered flat; larger ones are split hierarchically
_SMALL_CLUSTERING = 4_000_000  # points x centroids below which k-means runs single-threaded


def pad_codebook(unique: np.ndarray, counts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Every unique patch, then jittered copies of the most frequent ones up to k rows."""
    order = np.argsort(-counts, kind="stable")
    extra = unique[order[np.arange(k - len(unique)) % len(unique)]].astype(np.float32)
    extra += rng.normal(0.0, 2.0, size=extra.shape).astype(np.float32)
    return np.concatenate([unique.astype(np.float32), np.clip(extra, 0, 255)])


def priority_sample(x: np.ndarray, w: np.ndarray, cap: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Exactly ``cap`` weighted rows by priority sampling (Duffield, Lund & Thorup, 2007).

    Row i has priority w_i / u_i (u_i uniform in (0, 1]); the ``cap`` highest
    are kept with weight max(w_i, tau), tau being the next priority.  Weighted
    sums over the sample estimate those over all rows without bias, and rows
    heavier than tau (frequent patches) are always kept.
    """
    if len(x) <= cap:
        return x, w
    priority = w / (1.0 - rng.random(len(x)))
    order = np.argpartition(-priority, cap)
    keep = np.sort(order[:cap])
    return x[keep], np.maximum(w[keep], priority[order[cap]])


def kmeans(x: np.ndarray, w: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """k weighted centroids of centred float32 rows x (len(x) >= k)."""
    if k == len(x):
        return x.copy()
    if k == 1:
        return (w @ x / w.sum())[None].astype(np.float32)
    if k <= _LEAF:
        return _flat_kmeans(x, w, k, iterations, int(rng.integers(2**30)))
    return _two_level_kmeans(x, w, k, iterations, rng)


def _flat_kmeans(x: np.ndarray, w: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    import faiss

    clustering = faiss.Clustering(x.shape[1], k)
    clustering.niter = iterations
    clustering.seed = seed
    clustering.verbose = False
    clustering.min_points_per_centroid = 1  # few points per centroid is expected here; no warning
    # Small problems run on one thread: with two cores, OpenMP barriers stall
    # for whole time slices while BLAS threads spin, making them 10-100x slower.
    threads = faiss.omp_get_max_threads()
    if len(x) * k < _SMALL_CLUSTERING:
        faiss.omp_set_num_threads(1)
    try:
        clustering.train(x, faiss.IndexFlatL2(x.shape[1]), w)
    finally:
        faiss.omp_set_num_threads(threads)
    return faiss.vector_to_array(clustering.centroids).reshape(k, x.shape[1])


def _two_level_kmeans(x: np.ndarray, w: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """~sqrt(k) coarse cells, then each cell's share of the k codes clustered within it."""
    import faiss

    coarse = _flat_kmeans(x, w, math.isqrt(k - 1) + 1, iterations, int(rng.integers(2**30)))
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(coarse)
    dist, cell = index.search(x, 1)
    cell = cell[:, 0]
    sizes = np.bincount(cell, minlength=len(coarse))
    error = np.bincount(cell, weights=w * np.maximum(dist[:, 0], 0), minlength=len(coarse))
    shares = _allocate(error, sizes, k)
    order = np.argsort(cell, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    parts = []
    for j in np.flatnonzero(shares):
        members = order[bounds[j] : bounds[j + 1]]
        parts.append(kmeans(x[members], w[members], int(shares[j]), iterations, rng))
    return np.concatenate(parts)


def _allocate(score: np.ndarray, sizes: np.ndarray, k: int) -> np.ndarray:
    """Integer shares summing to k: >= 1 per non-empty cell, <= its size, else by score."""
    shares = (sizes > 0).astype(np.int64)
    room = sizes - shares
    left = k - int(shares.sum())
    while left > 0:
        weight = np.where(room > 0, score, 0.0)
        if weight.sum() <= 0:
            weight = (room > 0).astype(np.float64)
        add = np.minimum(np.floor(left * weight / weight.sum()).astype(np.int64), room)
        if add.sum() == 0:  # fewer codes left than cells wanting one: the top scores get them
            add[np.argsort(-weight, kind="stable")[:left]] = 1
        shares += add
        room -= add
        left -= int(add.sum())
    return shares
