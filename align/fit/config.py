"""Configuration of a fit, validated when it is built."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokalign.align.defaults import DEFAULT_LM, INIT_LOGIT_SCALE, MAX_LOGIT_SCALE
from tokalign.align.errors import TokalignError
from tokalign.align.training.accelerator import DEVICES
from tokalign.align.training.seeds import check_seed
from tokalign.align.training.settings import check_adamw, nonnegative_int, positive_int
from tokalign.align.training.settings import option_help as _help


@dataclass(frozen=True)
class FitConfig:
    """Everything that determines a fit.  Paths are stored as given.

    ``stop_after`` ends this invocation after that many optimizer steps, as
    if interrupted (a checkpoint is written first); ``--resume`` continues.
    ``eval_every`` is the number of steps between held-out evaluations (``None``:
    four per run, see :attr:`eval_interval`; 0: none but the final one).
    """

    corpus: Path = field(metadata=_help("Corpus folder (see the corpus format in README.md; `tokalign demo-corpus` "
                                       "builds one)."))
    run_dir: Path = field(metadata=_help("Run folder to write (or continue with --resume)."))
    lm: str = field(default=DEFAULT_LM, metadata=_help("Frozen LM: the default alias, an HF model id, a local folder "
                                                       "or a .gguf file."))
    steps: int = field(default=1000, metadata=_help("Optimizer steps."))
    batch_size: int = field(default=1024, metadata=_help("Pairs per global batch (split across processes)."))
    lr: float = field(default=5e-2, metadata=_help("Peak learning rate (AdamW)."))
    warmup_steps: int = field(default=40, metadata=_help("Linear warm-up steps before the cosine decay."))
    min_lr_ratio: float = field(default=0.05, metadata=_help("Cosine floor as a fraction of the peak."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay on the table."))
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    init_logit_scale: float = INIT_LOGIT_SCALE
    max_logit_scale: float = MAX_LOGIT_SCALE
    holdout: int = field(default=1024, metadata=_help("Pairs held out for retrieval evaluation."))
    seed: int = field(default=0, metadata=_help("Seed of the initialization, split and data order."))
    log_every: int = field(default=10, metadata=_help("Steps between metrics.jsonl rows."))
    eval_every: int | None = field(default=None, metadata=_help(
        "Steps between held-out loss/recall evaluations written to metrics.jsonl; 0: only the final one "
        "[default: steps // 4]."))
    checkpoint_every: int = field(default=250, metadata=_help("Steps between checkpoints."))
    keep_checkpoints: int = field(default=2, metadata=_help("How many recent checkpoints to keep."))
    device: str = field(default="auto", metadata=_help("Where to train (multi-process: `accelerate launch`)."))
    resume: bool = field(default=False, metadata=_help("Continue the run in --run from its last checkpoint."))
    stop_after: int | None = field(default=None, metadata=_help(
        "End this invocation after N steps (checkpointed), e.g. on time-limited jobs."))
    cache_root: Path | None = field(default=None, metadata=_help(
        "Cache for derived LM weights [default: $TOKALIGN_CACHE or ~/.cache/tokalign]."))
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "corpus", Path(self.corpus))
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        if self.cache_root is not None:
            object.__setattr__(self, "cache_root", Path(self.cache_root))
        _positive_int(self, "steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints")
        _nonnegative_int(self, "holdout")
        check_seed(self.seed)
        if self.batch_size < 2:
            raise TokalignError(f"--batch-size {self.batch_size} is too small: a contrastive batch needs at least 2 pairs")
        object.__setattr__(self, "betas", check_adamw(lr=self.lr, warmup_steps=self.warmup_steps,
                                                      min_lr_ratio=self.min_lr_ratio, weight_decay=self.weight_decay,
                                                      betas=self.betas, eps=self.eps))
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
        positive_int(f"--{name.replace('_', '-')}", getattr(cfg, name))


def _nonnegative_int(cfg: FitConfig, *names: str) -> None:
    for name in names:
        nonnegative_int(f"--{name.replace('_', '-')}", getattr(cfg, name))
