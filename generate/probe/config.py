"""What ``tokalign generator probe`` measures and where it writes: one frozen dataclass, validated when built.

Torch-free at import; the one home of the probe's defaults (the CLI reads them with ``default_of``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokalign.align.errors import TokalignError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ProbeConfig:
    """A probe of one generator folder against the LM it started from.

    ``base`` is what ``fit --lm`` takes (``None``: the spec the generator's record names); ``out`` defaults to
    ``MODEL/probe``; ``init_from`` is the generator-init file the image rows started from when the record does
    not name one; ``text_file`` replaces the packaged held-out text (UTF-8, plain English).
    """

    model: Path
    base: str | None = None
    out: Path | None = None
    init_from: Path | None = None
    clip_model: Path | None = None
    text_file: Path | None = None
    max_text_tokens: int = 1024  #: the held-out text is cut to its first N tokens
    window: int = 512  #: perplexity windows (non-overlapping; the first token of each is context only)
    max_new_tokens: int = 16  #: greedy completion length of the knowledge prompts
    k: int = 10  #: nearest text tokens per image row
    image_rows: int = 0  #: image rows probed (an evenly spaced subset); 0: all
    clip_samples: int = 8  #: held-out captions sampled and scored with --clip-model
    cfg_scale: float = 1.0  #: guidance of the CLIP samples
    seed: int = 0
    device: str = "auto"
    cache_root: Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("model", "out", "init_from", "clip_model", "text_file", "cache_root"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).expanduser())
        if self.device not in DEVICES:
            raise TokalignError(f"--device {self.device!r} is not one of {', '.join(DEVICES)}")
        for name in ("max_text_tokens", "window", "max_new_tokens", "k", "clip_samples"):
            _positive(f"--{name.replace('_', '-')}", getattr(self, name))
        if self.window < 2:
            raise TokalignError(f"--window {self.window} must be at least 2 tokens (one context, one scored)")
        if not isinstance(self.image_rows, int) or self.image_rows < 0:
            raise TokalignError(f"--image-rows {self.image_rows!r} must be a non-negative integer (0: all)")
        if not (isinstance(self.cfg_scale, (int, float)) and math.isfinite(self.cfg_scale) and self.cfg_scale >= 0):
            raise TokalignError(f"--cfg-scale {self.cfg_scale} must be a finite number >= 0")
        if self.init_from is not None and not self.init_from.is_file():
            raise TokalignError(f"--init-from {self.init_from}: no such file; pass the generator-init file "
                                "(`tokalign export --to generator-init`) the generator started from")
        if self.text_file is not None and not self.text_file.is_file():
            raise TokalignError(f"--text-file {self.text_file}: no such file; pass a UTF-8 text file")
        if self.clip_model is not None:
            from tokalign.generate.probe.clip_score import check_clip_folder

            check_clip_folder(self.clip_model)

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else self.model / "probe"

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def _positive(option: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TokalignError(f"{option} {value!r} must be a positive integer")
