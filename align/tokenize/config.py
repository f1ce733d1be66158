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
from tokalign.align.training.settings import option_help as _help


def default_workers() -> int:
    """Loader processes: every core but one (which encodes), at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class TokenizeConfig:
    source: SourceSpec
    out: Path = field(metadata=_help("Corpus folder to write."))
    image_tokenizer: str = field(default="movq", metadata=_help("Image tokenizer."))
    image_tokenizer_path: str | None = field(default=None, metadata=_help(
        "movq: weights folder (or hub id); kmeans: saved codebook file or corpus; pretokenized: the tokenizer that "
        "made the tokens."))
    fit_codebook: bool = field(default=False, metadata=_help(
        "kmeans: fit the codebook on the first --codebook-images usable images of this input."))
    codebook_size: int = field(default=16384, metadata=_help("kmeans --fit-codebook / pretokenized: codebook size."))
    codebook_images: int = field(default=1024, metadata=_help("kmeans --fit-codebook: images to fit on."))
    kmeans_iterations: int = field(default=8, metadata=_help("kmeans --fit-codebook: k-means iterations."))
    grid: int = field(default=32, metadata=_help("pretokenized without a path: tokens per image = grid x grid."))
    image_size: int = 256
    # shorter side below min_side: skipped as too_small; between it and image_size: upscaled
    min_side: int = field(default=64, metadata=_help(
        "Skip images whose shorter side is below this; upscale those between it and 256."))
    lm: str = field(default=DEFAULT_LM, metadata=_help("LM whose tokenizer encodes the captions."))
    cache_root: Path | None = field(default=None, metadata=_help("Cache for derived LM weights."))
    batch_size: int = field(default=32, metadata=_help("Images per encode call."))
    workers: int = field(default_factory=default_workers, metadata=_help(
        "Data-loading processes [default: cores - 1, at most 8; 0 = in this process]."))
    device: str | None = field(default=None, metadata=_help(
        "Encode on this device (cpu, cuda, cuda:1) [default: cuda when available]."))
    dtype: str = field(default="float32", metadata=_help("movq compute precision."))
    resume: bool = field(default=False, metadata=_help(
        "Continue an interrupted run in --out (finished shards are kept)."))
    force: bool = field(default=False, metadata=_help("Replace what --out holds."))
    stop_after_parts: int | None = field(default=None, metadata=_help(
        "End after N shards (resumable), e.g. on time-limited jobs."))
    seed: int = field(default=0, metadata=_help("Seed of the k-means fit."))
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
