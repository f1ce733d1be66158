"""What ``tokalign generator probe`` measures and where it writes: one frozen dataclass, validated when built.

Torch-free at import; the one home of the probe's defaults and option help (the CLI builds its options with
``config_option``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tokalign.align.errors import TokalignError
from tokalign.align.training.settings import option_help as _help

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ProbeConfig:
    """A probe of one generator folder against the LM it started from.

    ``base`` is what ``fit --lm`` takes (``None``: the spec the generator's record names); ``out`` defaults to
    ``MODEL/probe``; ``init_from`` is the generator-init file the image rows started from when the record does
    not name one; ``text_file`` replaces the packaged held-out text (UTF-8, plain English).
    """

    model: Path = field(metadata=_help("Generator folder `tokalign generator train` wrote."))
    base: str | None = field(default=None, metadata=_help(
        "The LM to compare with (what `fit --lm` takes) [default: the one the generator started from]."))
    out: Path | None = field(default=None, metadata=_help("Folder for probe.json and probe.md [default: MODEL/probe]."))
    init_from: Path | None = field(default=None, metadata=_help(
        "The generator-init file the image rows started from, if the record's is gone or its init cannot be rebuilt."))
    clip_model: Path | None = field(default=None, metadata=_help(
        "Local open_clip folder (open_clip_config.json + safetensors): CLIP score of samples of held-out captions."))
    text_file: Path | None = field(default=None, metadata=_help(
        "Held-out English text to score instead of the packaged one (UTF-8)."))
    #: the held-out text is cut to its first N tokens
    max_text_tokens: int = field(default=1024, metadata=_help("Score the first N tokens of the held-out text."))
    #: perplexity windows (non-overlapping; the first token of each is context only)
    window: int = field(default=512, metadata=_help("Perplexity window in tokens."))
    max_new_tokens: int = field(default=16, metadata=_help("Greedy completion length of the knowledge prompts."))
    k: int = field(default=10, metadata=_help("Nearest text tokens per image row."))
    #: image rows probed (an evenly spaced subset); 0: all
    image_rows: int = field(default=0, metadata=_help("Probe N evenly spaced image rows (0 = all)."))
    #: held-out captions sampled and scored with --clip-model
    clip_samples: int = field(default=8, metadata=_help("Held-out captions to sample for the CLIP score."))
    cfg_scale: float = field(default=1.0, metadata=_help("Guidance of the CLIP samples (1 = off)."))
    seed: int = field(default=0, metadata=_help("Seed of the CLIP samples."))
    device: str = field(default="auto", metadata=_help("Where the models run."))
    cache_root: Path | None = field(default=None, metadata=_help(
        "Cache of the base LM's figures and frozen rows [default: $TOKALIGN_CACHE or ~/.cache/tokalign]."))
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
