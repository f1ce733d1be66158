"""Image tokenizers by name: build one for ``tokalign tokenize``, and reload the one a corpus manifest names.

Every image tokenizer has the same surface (``PatchKMeansTokenizer``,
``MoVQTokenizer``, :class:`Pretokenized`): ``kind``, ``codebook_size``,
``grid``, ``tokens_per_image``, ``image_size``, ``encode(images uint8
(N, S, S, 3)) -> uint16 (N, L)``, ``decode(tokens) -> uint8 images`` and
``identity()``, the JSON a manifest records (kind, codebook size, grid and a
sha256 of the weights), so a corpus cannot later be decoded, or mixed, with
the wrong tokenizer.

Kinds (``--image-tokenizer``):

* ``movq``: MoVQGAN as in the paper (diffusers ``VQModel``, Kandinsky 2.2
  configuration), weights from ``--image-tokenizer-path`` (a local folder, or
  a hub id where a network exists);
* ``kmeans``: the built-in patch k-means tokenizer, loaded from a saved
  codebook file (or a corpus folder that keeps one), or fitted on the input
  (``--fit-codebook``; done by the pipeline, which sees the images);
* ``pretokenized``: token ids made elsewhere.  ``encode`` validates them;
  with ``--image-tokenizer-path`` naming the tokenizer that made them (a
  k-means file or a MoVQ folder) the corpus records that tokenizer, so its
  tokens can be decoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tokalign.align.errors import TokalignError

KINDS = ("movq", "kmeans", "pretokenized")
KMEANS_FILE = "image_tokenizer.safetensors"  # where a corpus keeps its k-means codebook


def token_array_problem(tokens: np.ndarray, tokens_per_image: int, codebook_size: int) -> str | None:
    """Why a token array cannot be one image's tokens (wrong dtype, length or id range), or None."""
    tokens = np.asarray(tokens)
    if tokens.dtype.kind not in "iu":
        return f"holds {tokens.dtype} values, not integer token ids"
    if tokens.size != tokens_per_image:
        return f"holds {tokens.size} token ids, but the image tokenizer makes {tokens_per_image} per image"
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= codebook_size):
        return f"holds token ids {int(tokens.min())}..{int(tokens.max())}, outside the codebook of {codebook_size}"
    return None


def pretokenized_mismatch(item: str, problem: str) -> str:
    """The one-line error for a pretokenized ``item`` whose token array has ``problem``."""
    return (f"pretokenized item {item} {problem}; pass the --grid/--codebook-size (or --image-tokenizer-path) "
            "the tokens were made with")


class Pretokenized:
    """Token ids made elsewhere: ``encode`` checks them against the codebook and the grid."""

    kind = "pretokenized"

    def __init__(self, codebook_size: int = 16384, grid: int = 32, decoder: Any = None) -> None:
        if decoder is not None:
            codebook_size, grid = decoder.codebook_size, decoder.grid[0]
        if not 1 <= codebook_size <= 65536:
            raise TokalignError(f"--codebook-size {codebook_size} must lie in 1..65536 (tokens are stored as uint16)")
        if grid < 1:
            raise TokalignError(f"--grid {grid} must be at least 1")
        self.codebook_size, self.grid, self.decoder = int(codebook_size), (int(grid), int(grid)), decoder
        self.image_size = decoder.image_size if decoder is not None else None

    @property
    def tokens_per_image(self) -> int:
        return self.grid[0] * self.grid[1]

    def check(self, tokens: np.ndarray) -> str | None:
        """Why one item's token array does not fit this tokenizer, or None when it does."""
        return token_array_problem(tokens, self.tokens_per_image, self.codebook_size)

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        """Validated (N, L) uint16 ids from N token arrays (each of L ids, any integer shape)."""
        arrays = [np.asarray(t) for t in (tokens if isinstance(tokens, (list, tuple)) else np.asarray(tokens))]
        for i, array in enumerate(arrays):
            problem = self.check(array)
            if problem:
                raise TokalignError(pretokenized_mismatch(str(i), problem))
        return np.stack([a.reshape(-1) for a in arrays]).astype(np.uint16) if arrays else \
            np.zeros((0, self.tokens_per_image), np.uint16)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        if self.decoder is None:
            raise TokalignError("these tokens were made elsewhere and no decoder is known; pass --image-tokenizer "
                                "kmeans|movq with --image-tokenizer-path of the tokenizer that made them")
        return self.decoder.decode(tokens)

    def identity(self) -> dict:
        if self.decoder is not None:
            return dict(self.decoder.identity(), pretokenized=True)
        return {"kind": self.kind, "codebook_size": self.codebook_size, "grid": list(self.grid), "sha256": None}


def build_image_tokenizer(kind: str, path: str | None = None, *, device: str | None = None, dtype: str = "float32",
                          batch_size: int = 16, codebook_size: int = 16384, grid: int = 32):
    """The tokenizer ``--image-tokenizer kind --image-tokenizer-path path`` names (k-means needs a path here)."""
    if kind not in KINDS:
        raise TokalignError(f"--image-tokenizer {kind!r} is unknown; use one of {', '.join(KINDS)}")
    if kind == "movq":
        if not path:
            raise TokalignError("--image-tokenizer movq needs --image-tokenizer-path: a folder with the MoVQ weights "
                                "(see README, 'Getting the MoVQ weights')")
        from tokalign.align.image_tokenizers.movq import MoVQTokenizer

        return MoVQTokenizer.from_pretrained(path, device=device, dtype=dtype, batch_size=batch_size)
    if kind == "kmeans":
        if not path:
            raise TokalignError("--image-tokenizer kmeans needs a saved codebook (--image-tokenizer-path FILE or a corpus "
                                "folder) or --fit-codebook to fit one on this input")
        return load_kmeans(path)
    decoder = None
    if path:
        decoder = _decoder_at(path, device=device, dtype=dtype, batch_size=batch_size)
    return Pretokenized(codebook_size, grid, decoder)


def load_kmeans(path: str | Path):
    """A k-means tokenizer from its file, or from a corpus folder that keeps one."""
    from tokalign.align.image_tokenizers.kmeans import PatchKMeansTokenizer

    path = Path(path)
    if path.is_dir():
        path = path / KMEANS_FILE
    return PatchKMeansTokenizer.load(path)


def _decoder_at(path: str, **kw):
    """The tokenizer stored at ``path``: a k-means file/corpus folder, or else MoVQ weights."""
    p = Path(path)
    if p.is_file() or (p / KMEANS_FILE).is_file():
        return load_kmeans(p)
    from tokalign.align.image_tokenizers.movq import MoVQTokenizer

    return MoVQTokenizer.from_pretrained(path, **kw)


def tokenizer_for_identity(identity: dict, corpus_root: str | Path | None = None, *, path: str | None = None,
                           device: str | None = None):
    """Reload the image tokenizer a manifest's ``image_tokenizer`` names and check it is the same one (sha256)."""
    kind = identity.get("kind")
    if kind == "kmeans":
        where = Path(path) if path else (Path(corpus_root) / identity["file"] if corpus_root and identity.get("file") else None)
        if where is None:
            raise TokalignError("the corpus does not keep its k-means codebook; pass --image-tokenizer-path FILE")
        tokenizer = load_kmeans(where)
        if tokenizer.sha256 != identity.get("sha256"):
            raise TokalignError(f"{where} is not the k-means tokenizer these tokens were made with (sha256 differs); "
                                "pass --image-tokenizer-path of the original codebook")
        return tokenizer
    if kind == "movq":
        from tokalign.align.image_tokenizers.movq import MoVQTokenizer

        return MoVQTokenizer.from_identity(identity, path=path, device=device)
    if kind == "pretokenized":
        raise TokalignError("the corpus holds tokens made elsewhere and names no tokenizer to decode them; pass "
                            "--image-tokenizer kmeans|movq with --image-tokenizer-path")
    raise TokalignError(f"image tokenizer kind {kind!r} cannot decode; only kmeans and movq tokens can be turned into images")
