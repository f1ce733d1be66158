"""Configuration of a generator training run: nested frozen dataclasses, validated when built.

Torch-free at import (the CLI reads its defaults and choices from here). This module is the one home of the
generator's defaults, set to the paper's recipe (sections 2 and 3.1): AdamW with betas (0.9, 0.95), peak learning
rate 3e-4, 2K warm-up steps then cosine decay, a global batch of about 1M tokens, gradient clipping at 1.0,
sequences of 1,152 tokens (1,024 image tokens plus caption and structure tokens), caption dropout 0.1 so that
classifier-free guidance works later. Demos scale steps, warm-up and batch down on the command line.

The names of the init modes and freeze presets live here too, as tuples, so ``click.Choice`` can offer them
without importing torch; the registries in :mod:`tokalign.generate.model` assert that they match.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tokalign.align.defaults import DEFAULT_LM
from tokalign.align.errors import TokalignError
from tokalign.generate.model_folder import MODES

INIT_MODES = ("aligned", "random-rows", "mean", "scratch")
FREEZE_PRESETS = ("all", "embeddings", "embeddings+norms", "embeddings+norms+first-half", "embeddings+norms+ffn",
                  "new-rows")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")  #: auto: bf16 autocast on a GPU, fp32 on CPU
REPORT_TO = ("none", "tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive")


@dataclass(frozen=True)
class ModelConfig:
    """Which LM, how the expanded vocabulary is initialized, what trains.

    ``num_layers`` keeps only the first N decoder layers of the LM (reduced demos and tests); ``None`` keeps all.
    """

    init: str
    lm: str = DEFAULT_LM
    init_from: Path | None = None
    train_only: str = "all"
    untie: bool = False
    num_layers: int | None = None
    cache_root: Path | None = None

    def __post_init__(self) -> None:
        _choice("--init", self.init, INIT_MODES)
        _choice("--train-only", self.train_only, FREEZE_PRESETS)
        if self.init_from is not None:
            object.__setattr__(self, "init_from", Path(self.init_from))
        if self.cache_root is not None:
            object.__setattr__(self, "cache_root", Path(self.cache_root))
        if self.init == "aligned" and self.init_from is None:
            raise TokalignError("--init aligned needs --init-from FILE (a `tokalign export --to generator-init` file); "
                                "pass it, or choose --init random-rows, mean or scratch")
        if self.init != "aligned" and self.init_from is not None:
            raise TokalignError(f"--init-from is only read by --init aligned, not --init {self.init}; drop --init-from "
                                "or pass --init aligned")
        if self.num_layers is not None:
            _positive("--num-layers", self.num_layers)


@dataclass(frozen=True)
class DataConfig:
    """The corpus and how its pairs become sequences (``<doc> <text> caption </text> <image> ... </image> </doc>``)."""

    corpus: Path
    mode: str = "text-to-image"
    seq_len: int = 1152
    caption_dropout: float = 0.1
    holdout: int = 256  #: pairs held out for evaluation (seeded split)

    def __post_init__(self) -> None:
        object.__setattr__(self, "corpus", Path(self.corpus))
        _choice("--mode", self.mode, MODES)
        _positive("--seq-len", self.seq_len)
        _nonnegative("--holdout", self.holdout)
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise TokalignError(f"--caption-dropout {self.caption_dropout} must lie in [0, 1]")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, linear warm-up + cosine decay, a global batch given in tokens.

    A step sees ``batch_tokens // seq_len`` sequences (the global batch), split evenly across processes and, on
    each, into micro-batches of at most ``micro_batch`` sequences (gradient accumulation). The loss of a step is the
    sum of its token losses over the target-token count of the whole global batch.
    """

    steps: int = 100_000
    batch_tokens: int = 1_048_576
    micro_batch: int = 8
    lr: float = 3e-4
    warmup_steps: int = 2000
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0  #: max global gradient norm; 0 turns clipping off

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        _positive("--steps", self.steps)
        _positive("--batch-tokens", self.batch_tokens)
        _positive("--micro-batch", self.micro_batch)
        _nonnegative("--warmup-steps", self.warmup_steps)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TokalignError(f"--lr {self.lr} must be a positive number")
        if not 0 <= self.min_lr_ratio <= 1:
            raise TokalignError(f"--min-lr-ratio {self.min_lr_ratio} must lie in [0, 1]")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise TokalignError(f"--weight-decay {self.weight_decay} must be a finite number >= 0")
        if not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise TokalignError(f"--grad-clip {self.grad_clip} must be a finite number >= 0 (0: no clipping)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas) or not self.eps > 0:
            raise TokalignError("AdamW betas must be two numbers in [0, 1) and eps must be > 0")


@dataclass(frozen=True)
class RunConfig:
    """Where and how the run happens: folder, seed, device, precision, logging, checkpoints."""

    run_dir: Path
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    report_to: str = "none"
    log_every: int = 10
    eval_every: int = 500
    eval_batches: int = 4  #: held-out micro-batches per evaluation (0: the whole held-out split)
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    resume: bool = False
    stop_after: int | None = None  #: end this invocation after N steps (checkpointed); --resume continues
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        _choice("--device", self.device, DEVICES)
        _choice("--precision", self.precision, PRECISIONS)
        _choice("--report-to", self.report_to, REPORT_TO)
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 63:
            raise TokalignError(f"--seed {self.seed!r} must be an integer in [0, 2**63)")
        for name in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
            _positive(f"--{name.replace('_', '-')}", getattr(self, name))
        _nonnegative("--eval-batches", self.eval_batches)
        if self.stop_after is not None:
            _positive("--stop-after", self.stop_after)


@dataclass(frozen=True)
class GeneratorTrainConfig:
    """Everything that determines a generator training run."""

    model: ModelConfig
    data: DataConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(run_dir=Path("runs/generator")))

    @property
    def global_sequences(self) -> int:
        """Sequences per optimizer step (the global batch)."""
        return max(1, self.optim.batch_tokens // self.data.seq_len)

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def trajectory(self) -> dict[str, Any]:
        """The settings that decide the trained values; ``--resume`` must see the same ones.

        The LM, corpus and export are checked by identity (hashes) in the run record, not by how they were named.
        """
        model = {k: v for k, v in asdict(self.model).items() if k not in ("lm", "init_from", "cache_root")}
        data = {k: v for k, v in asdict(self.data).items() if k != "corpus"}
        return _jsonable({"model": model, "data": data, "optim": asdict(self.optim), "seed": self.run.seed,
                          "global_sequences": self.global_sequences})


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TokalignError(f"{option} {value!r} is not one of {', '.join(choices)}")


def _positive(option: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TokalignError(f"{option} {value!r} must be a positive integer")


def _nonnegative(option: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TokalignError(f"{option} {value!r} must be a non-negative integer")
