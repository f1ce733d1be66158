"""The built-in image tokenizer: k-means vector quantization of RGB patches.

No weights need downloading: the codebook is learned from the corpus images.
An image of ``image_size`` x ``image_size`` pixels is cut into non-overlapping
``patch`` x ``patch`` RGB patches (8 x 8 on 256 x 256 gives a 32 x 32 grid of
1,024 tokens, the layout of MoVQGAN); each patch becomes the index of its
nearest centroid (exact L2), tokens in row-major grid order.  A patch is a
vector of ``patch * patch * 3`` values in (row, column, channel) order, and a
centroid is a float32 vector of the same layout in pixel units (0..255).

Fitting (see :meth:`PatchKMeansTokenizer.fit`):

* identical patches are counted once and weighted by their count (shape
  scenes repeat flat patches a lot: ~4,000 scenes give ~190k unique patches
  out of 4.1M);
* beyond ``max_training_patches`` unique patches, a priority sample of that
  many is drawn (frequent patches are always kept, rare ones are sampled and
  re-weighted), so the weighted objective stays unbiased;
* the k-means is hierarchical: about sqrt(K) coarse centroids first, then
  each coarse cell gets a share of the K codes proportional to its weighted
  squared error and is clustered on its own (recursively while a share is
  large).  This costs ~sqrt(K) instead of K distance computations per patch
  and iteration, which is what makes 16,384 codes affordable on a CPU;
* with fewer unique patches than ``codebook_size`` the codebook is every
  unique patch, padded up to ``codebook_size`` with copies of the most
  frequent patches jittered by a little noise: the codebook always has the
  size asked for.

Encoding searches only the unique patches of each batch with an exact flat
index (centred coordinates for float32 accuracy), then re-ranks the best few
candidates in float64, so the result is the exact nearest centroid, ties
going to the lowest index (as ``numpy.argmin`` does).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from tokalign.align.formats.atomic import save_safetensors
from tokalign.align.errors import TokalignError
from tokalign.align.image_tokenizers.kmeans_fit import kmeans, pad_codebook, priority_sample

log = logging.getLogger(__name__)

__all__ = ["PatchKMeansTokenizer"]

_FORMAT = "tokalign.kmeans_tokenizer.v1"
_CENTRE = np.float32(127.5)  # patches and centroids are searched centred, for float32 accuracy
_CANDIDATES = 4  # float32 search candidates re-ranked exactly in float64
_ENCODE_BATCH = 256  # images per encode chunk: bounds memory
_SEARCH_BLOCK = 32768  # unique patches searched at once: bounds memory
_HASH_WORDS = np.random.default_rng(20261122).integers(1, 2**63, size=1024, dtype=np.uint64) | np.uint64(1)


class PatchKMeansTokenizer:
    """k-means codebook over ``patch`` x ``patch`` RGB patches of square images."""

    kind = "kmeans"

    def __init__(self, codebook: np.ndarray, patch: int = 8, image_size: int = 256) -> None:
        codebook = np.asarray(codebook)
        if patch < 1 or image_size < patch or image_size % patch:
            raise TokalignError(f"image size {image_size} is not a multiple of the patch size {patch}; use e.g. patch=8, image_size=256")
        dim = patch * patch * 3
        if codebook.ndim != 2 or codebook.shape[1] != dim or not 1 <= codebook.shape[0] <= 65536:
            raise TokalignError(f"k-means codebook has shape {codebook.shape}; expected (K, {dim}) with 1 <= K <= 65536 for {patch}x{patch} RGB patches")
        if not np.isfinite(codebook).all():
            raise TokalignError("k-means codebook contains NaN or infinite values; fit the tokenizer again")
        self._codebook = np.ascontiguousarray(codebook, dtype=np.float32)
        self._codebook.flags.writeable = False
        self.patch = int(patch)
        self.image_size = int(image_size)
        self._sha256 = hashlib.sha256(self._codebook.astype("<f4").tobytes()).hexdigest()
        self._index = None  # faiss index over centred centroids, built on first encode,
        self._centred64 = self._norms64 = None  # with these float64 copies for re-ranking
        self._pixels = np.clip(np.rint(self._codebook), 0, 255).astype(np.uint8)  # for decode

    # ------------------------------------------------------------ properties

    @property
    def codebook(self) -> np.ndarray:
        """The (K, patch*patch*3) float32 centroids, read-only."""
        return self._codebook

    @property
    def codebook_size(self) -> int:
        return int(self._codebook.shape[0])

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.patch
        return (side, side)

    @property
    def tokens_per_image(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def sha256(self) -> str:
        """sha256 of the codebook's float32 little-endian bytes."""
        return self._sha256

    def identity(self) -> dict:
        """What a corpus manifest records to tie its tokens to this tokenizer."""
        return {
            "kind": self.kind,
            "codebook_size": self.codebook_size,
            "grid": list(self.grid),
            "patch": self.patch,
            "image_size": self.image_size,
            "sha256": self.sha256,
        }

    def __repr__(self) -> str:
        return f"PatchKMeansTokenizer(codebook_size={self.codebook_size}, patch={self.patch}, image_size={self.image_size})"

    # ------------------------------------------------------------ fitting

    @classmethod
    def fit(
        cls,
        images: np.ndarray,
        codebook_size: int = 16384,
        patch: int = 8,
        iterations: int = 10,
        seed: int = 0,
        max_training_patches: int = 500_000,
    ) -> "PatchKMeansTokenizer":
        """Learn a codebook from ``images`` (N, S, S, 3) uint8; deterministic for a seed.

        ``iterations`` is the number of Lloyd iterations at each level of the
        hierarchical k-means; ``max_training_patches`` caps the number of
        unique patches clustered (a priority sample beyond it).  The unique
        patches of all images are held in memory while counting them (192
        bytes each; ~36 MB for 4,000 shape scenes, up to N * 192 KB for
        photographs, so subsample photographs before fitting).
        """
        images = _check_images(images)
        if not 1 <= codebook_size <= 65536:
            raise TokalignError(f"codebook size {codebook_size} is out of range; use 1..65536 (tokens are stored as uint16)")
        if iterations < 1:
            raise TokalignError(f"iterations is {iterations}; use at least 1")
        if max_training_patches < codebook_size:
            raise TokalignError(f"max_training_patches ({max_training_patches}) is below the codebook size ({codebook_size}); raise it")
        size = images.shape[1]
        if patch < 1 or size % patch:
            raise TokalignError(f"image size {size} is not a multiple of the patch size {patch}; use a patch size that divides it")
        rng = np.random.default_rng([int(seed), 0x6B6D])
        unique, counts = _unique_patches(images, patch)
        log.info("k-means fit: %d images, %d unique patches of %d", len(images), len(unique), len(images) * (size // patch) ** 2)
        if len(unique) <= codebook_size:
            codebook = pad_codebook(unique, counts, codebook_size, rng)
        else:
            x, w = priority_sample(unique, counts.astype(np.float64), max_training_patches, rng)
            x = x.astype(np.float32) - _CENTRE
            codebook = kmeans(x, w.astype(np.float32), codebook_size, iterations, rng) + _CENTRE
        return cls(codebook, patch=patch, image_size=size)

    # ------------------------------------------------------------ encode / decode

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Tokens (N, grid*grid) uint16 of images (N, image_size, image_size, 3) uint8 (or one image)."""
        images = _check_images(images, self.image_size)
        out = np.empty((len(images), self.tokens_per_image), dtype=np.uint16)
        for start in range(0, len(images), _ENCODE_BATCH):
            chunk = images[start : start + _ENCODE_BATCH]
            unique, inverse, _ = _unique_rows(_to_patches(chunk, self.patch))
            out[start : start + len(chunk)] = self._nearest(unique)[inverse].reshape(len(chunk), -1)
        return out

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Images (N, image_size, image_size, 3) uint8 pasted from the centroids of ``tokens`` (N, grid*grid)."""
        tokens = np.asarray(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2 or tokens.shape[1] != self.tokens_per_image or tokens.dtype.kind not in "iu":
            raise TokalignError(f"image tokens have shape {tokens.shape} and dtype {tokens.dtype}; expected integers of shape (N, {self.tokens_per_image})")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.codebook_size):
            raise TokalignError(f"image token ids span {tokens.min()}..{tokens.max()} but the codebook has {self.codebook_size} codes; use the tokenizer the tokens were made with")
        return _from_patches(self._pixels[tokens.astype(np.intp)], self.patch, self.grid[0])

    def _nearest(self, patches: np.ndarray) -> np.ndarray:
        """Exact nearest centroid (lowest index on ties) of each uint8 patch row."""
        if self._index is None:
            self._build_index()
        if len(patches) > _SEARCH_BLOCK:  # bounds the float32/float64 copies below
            blocks = range(0, len(patches), _SEARCH_BLOCK)
            return np.concatenate([self._nearest(patches[s : s + _SEARCH_BLOCK]) for s in blocks])
        queries = patches.astype(np.float32) - _CENTRE
        _, candidates = self._index.search(queries, min(_CANDIDATES, self.codebook_size))
        candidates.sort(axis=1)  # so argmin below breaks exact ties by the lowest index
        q = queries.astype(np.float64)
        dist = np.empty(candidates.shape)
        for j in range(candidates.shape[1]):  # float64 ||q - c||^2 of each candidate
            rows = candidates[:, j]
            dist[:, j] = self._norms64[rows] - 2 * np.einsum("ij,ij->i", q, self._centred64[rows])
        return np.take_along_axis(candidates, np.argmin(dist, axis=1)[:, None], 1)[:, 0]

    def _build_index(self) -> None:
        import faiss

        self._centred64 = self._codebook.astype(np.float64) - float(_CENTRE)
        self._norms64 = np.einsum("ij,ij->i", self._centred64, self._centred64)
        self._index = faiss.IndexFlatL2(self._codebook.shape[1])
        self._index.add(self._codebook - _CENTRE)

    # ------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> None:
        """Write the codebook and its description to one safetensors file, atomically."""
        metadata = {
            "format": _FORMAT,
            "kind": self.kind,
            "patch": str(self.patch),
            "image_size": str(self.image_size),
            "codebook_size": str(self.codebook_size),
            "sha256": self.sha256,
        }
        save_safetensors(path, {"codebook": np.array(self._codebook)}, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PatchKMeansTokenizer":
        """Read a file written by :meth:`save`, checking its description and hash."""
        path = Path(path)
        fix = "fit the k-means tokenizer again or point to the file it was saved to"
        if not path.is_file():
            raise TokalignError(f"k-means tokenizer file {path} does not exist; {fix}")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                codebook = f.get_tensor("codebook") if "codebook" in f.keys() else None
        except Exception as exc:  # safetensors raises several types for a damaged file
            raise TokalignError(f"k-means tokenizer file {path} is damaged or not safetensors ({type(exc).__name__}); {fix}") from None
        if meta.get("kind") != cls.kind or codebook is None:
            raise TokalignError(f"{path} is not a k-means tokenizer file (kind={meta.get('kind')!r}); {fix}")
        try:
            patch, size, k = int(meta["patch"]), int(meta["image_size"]), int(meta["codebook_size"])
        except (KeyError, ValueError):
            raise TokalignError(f"k-means tokenizer file {path} lacks patch/image_size/codebook_size metadata; {fix}") from None
        if codebook.shape != (k, patch * patch * 3) or codebook.dtype != np.float32:
            raise TokalignError(f"k-means tokenizer file {path} holds a {codebook.dtype} codebook of shape {codebook.shape}, not ({k}, {patch * patch * 3}) float32; {fix}")
        tokenizer = cls(codebook, patch=patch, image_size=size)
        if tokenizer.sha256 != meta.get("sha256"):
            raise TokalignError(f"k-means tokenizer file {path} fails its sha256 check (damaged or edited); {fix}")
        return tokenizer


# ---------------------------------------------------------------- patches


def _check_images(images: np.ndarray, size: int | None = None) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    square = images.ndim == 4 and images.shape[1] == images.shape[2] and images.shape[3] == 3
    if not square or images.dtype != np.uint8 or len(images) == 0 or (size is not None and images.shape[1] != size):
        want = f"{size}, {size}" if size else "S, S"
        raise TokalignError(f"images have shape {images.shape} and dtype {images.dtype}; expected uint8 RGB of shape (N, {want}, 3) with N >= 1")
    return images


def _to_patches(images: np.ndarray, patch: int) -> np.ndarray:
    """(N, S, S, 3) -> (N * g * g, patch * patch * 3), rows in row-major grid order."""
    n, size = images.shape[0], images.shape[1]
    g = size // patch
    cut = images.reshape(n, g, patch, g, patch, 3).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(cut).reshape(n * g * g, patch * patch * 3)


def _from_patches(patches: np.ndarray, patch: int, grid: int) -> np.ndarray:
    """(N, g * g, patch * patch * 3) -> (N, S, S, 3)."""
    n = patches.shape[0]
    cut = patches.reshape(n, grid, grid, patch, patch, 3).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(cut).reshape(n, grid * patch, grid * patch, 3)


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact (unique rows, inverse, counts) of a uint8 matrix, via a 64-bit hash.

    The hash is checked against the rows themselves; on a collision (never
    seen in practice) it falls back to sorting the raw bytes.
    """
    rows = np.ascontiguousarray(rows)
    width = rows.shape[1]
    if width % 8 == 0 and width // 8 <= len(_HASH_WORDS):
        keys = rows.view(np.uint64) @ _HASH_WORDS[: width // 8]
        _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
        if np.array_equal(rows, rows[first][inverse]):
            return rows[first], inverse.ravel(), counts
    raw = rows.view(np.dtype((np.void, width))).ravel()
    _, first, inverse, counts = np.unique(raw, return_index=True, return_inverse=True, return_counts=True)
    return rows[first], inverse.ravel(), counts


def _unique_patches(images: np.ndarray, patch: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Unique patches of all images and how often each occurs, chunk by chunk."""
    parts, weights = [], []
    for start in range(0, len(images), chunk):
        unique, _, counts = _unique_rows(_to_patches(images[start : start + chunk], patch))
        parts.append(unique)
        weights.append(counts)
    unique, inverse, _ = _unique_rows(np.concatenate(parts))
    counts = np.bincount(inverse, weights=np.concatenate(weights), minlength=len(unique))
    return unique, counts.astype(np.int64)
