"""What ``tokalign tokenize`` does, as one validated dataclass (the CLI builds it; the library never parses argv)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tokalign.align.defaults import DEFAULT_LM
from tokalign.align.errors import TokalignError
from tokalign.align.fit.guards import check_seed
from tokalign.align.image_tokenizers.registry import KINDS
from tokalign.align.sources.spec import SourceSpec


def default_workers() -> int:
    """Loader processes: every core but one (which encodes), at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class TokenizeConfig:
    source: SourceSpec
    out: Path
    image_tokenizer: str = "movq"
    image_tokenizer_path: str | None = None
    fit_codebook: bool = False  # kmeans: fit the codebook on the first --codebook-images usable images
    codebook_size: int = 16384  # kmeans --fit-codebook, pretokenized without a decoder
    codebook_images: int = 1024
    kmeans_iterations: int = 8
    grid: int = 32  # pretokenized without a decoder: tokens per image = grid * grid
    image_size: int = 256
    min_side: int = 64  # shorter side below this: skipped as too_small; between this and image_size: upscaled
    lm: str = DEFAULT_LM
    cache_root: Path | None = None
    batch_size: int = 32  # images per encode call
    workers: int = field(default_factory=default_workers)
    device: str | None = None  # None: cuda when available
    dtype: str = "float32"  # movq compute precision
    resume: bool = False
    force: bool = False
    stop_after_parts: int | None = None  # stop (resumably) after this many parts: for tests and time-boxed jobs
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.image_tokenizer not in KINDS:
            raise TokalignError(f"--image-tokenizer {self.image_tokenizer!r} is unknown; use one of {', '.join(KINDS)}")
        if self.fit_codebook and self.image_tokenizer != "kmeans":
            raise TokalignError("--fit-codebook fits a k-means codebook; use it with --image-tokenizer kmeans")
        if self.fit_codebook and self.image_tokenizer_path:
            raise TokalignError("pass either --fit-codebook or --image-tokenizer-path for the k-means codebook, not both")
        if (self.image_tokenizer == "pretokenized") != self.source.tokens:
            raise TokalignError("internal: the source must read token arrays exactly when the tokenizer is pretokenized")
        if self.resume and self.force:
            raise TokalignError("--resume continues a run and --force starts over; pass one of them")
        checks = {"--batch-size": self.batch_size, "--codebook-images": self.codebook_images,
                  "--kmeans-iterations": self.kmeans_iterations, "--grid": self.grid}
        for name, value in checks.items():
            if value < 1:
                raise TokalignError(f"{name} {value} must be at least 1")
        if not 1 <= self.codebook_size <= 65536:
            raise TokalignError(f"--codebook-size {self.codebook_size} must lie in 1..65536 (tokens are stored as uint16)")
        if self.image_size < 8 or not 1 <= self.min_side <= self.image_size:
            raise TokalignError(f"--min-side {self.min_side} must lie in 1..{self.image_size} (the image size)")
        if self.workers < 0:
            raise TokalignError(f"--workers {self.workers} must be 0 (load in this process) or more")
        if self.stop_after_parts is not None and self.stop_after_parts < 1:
            raise TokalignError(f"--stop-after-parts {self.stop_after_parts} must be at least 1")
        check_seed(self.seed)
        if self.dtype not in DTYPES:
            raise TokalignError(f"--dtype {self.dtype!r} is unknown; use one of {', '.join(DTYPES)}")
