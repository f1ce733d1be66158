"""Configuration of a fit, validated when it is built."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokalign.align.defaults import DEFAULT_LM, INIT_LOGIT_SCALE, MAX_LOGIT_SCALE
from tokalign.align.errors import TokalignError
from tokalign.align.training.accelerator import DEVICES


@dataclass(frozen=True)
class FitConfig:
    """Everything that determines a fit.  Paths are stored as given.

    ``stop_after`` ends this invocation after that many optimizer steps, as
    if interrupted (a checkpoint is written first); ``--resume`` continues.
    ``eval_every`` is the number of steps between held-out evaluations (``None``:
    four per run, see :attr:`eval_interval`; 0: none but the final one).
    """

    corpus: Path
    run_dir: Path
    lm: str = DEFAULT_LM
    steps: int = 1000
    batch_size: int = 1024
    lr: float = 5e-2
    warmup_steps: int = 40
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    init_logit_scale: float = INIT_LOGIT_SCALE
    max_logit_scale: float = MAX_LOGIT_SCALE
    holdout: int = 1024
    seed: int = 0
    log_every: int = 10
    eval_every: int | None = None
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    device: str = "auto"
    resume: bool = False
    stop_after: int | None = None
    cache_root: Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "corpus", Path(self.corpus))
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        if self.cache_root is not None:
            object.__setattr__(self, "cache_root", Path(self.cache_root))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        _positive_int(self, "steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints")
        _nonnegative_int(self, "warmup_steps", "holdout", "seed")
        if self.batch_size < 2:
            raise TokalignError(f"--batch-size {self.batch_size} is too small: a contrastive batch needs at least 2 pairs")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TokalignError(f"--lr {self.lr} must be a positive number")
        if not 0 <= self.min_lr_ratio <= 1:
            raise TokalignError(f"--min-lr-ratio {self.min_lr_ratio} must lie in [0, 1]")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise TokalignError(f"--weight-decay {self.weight_decay} must be a finite number >= 0")
        if not all(0 <= b < 1 for b in self.betas) or self.eps <= 0:
            raise TokalignError("AdamW betas must lie in [0, 1) and eps must be > 0")
        if self.init_logit_scale > self.max_logit_scale:
            raise TokalignError(f"initial logit scale {self.init_logit_scale:.3f} exceeds its clamp {self.max_logit_scale:.3f}")
        if self.device not in DEVICES:
            raise TokalignError(f"--device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.eval_every is not None:
            _nonnegative_int(self, "eval_every")
        if self.stop_after is not None and self.stop_after < 1:
            raise TokalignError(f"--stop-after {self.stop_after} must be >= 1")

    @property
    def eval_interval(self) -> int:
        """Steps between held-out evaluations (0: off): ``eval_every``, else ``max(1, steps // 4)``."""
        return self.eval_every if self.eval_every is not None else max(1, self.steps // 4)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("corpus", "run_dir", "cache_root"):
            out[key] = None if out[key] is None else str(out[key])
        out["betas"] = list(self.betas)
        return out

    def trajectory(self) -> dict[str, Any]:
        """The settings that decide the trained values; a resumed run must match them.

        The LM and corpus are checked by identity (hashes), not by how they were named.
        """
        keep = ("steps", "batch_size", "lr", "warmup_steps", "min_lr_ratio", "weight_decay", "betas",
                "eps", "init_logit_scale", "max_logit_scale", "holdout", "seed")
        out = {k: getattr(self, k) for k in keep}
        out["betas"] = list(self.betas)
        return out


def _positive_int(cfg: FitConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise TokalignError(f"--{name.replace('_', '-')} {value!r} must be a positive integer")


def _nonnegative_int(cfg: FitConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 0:
            raise TokalignError(f"--{name.replace('_', '-')} {value!r} must be a non-negative integer")
