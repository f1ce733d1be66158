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
from tokalign.align.training.seeds import check_seed
from tokalign.align.training.settings import check_adamw
from tokalign.align.training.settings import option_help as _help
from tokalign.align.training.settings import nonnegative_int as _nonnegative
from tokalign.align.training.settings import positive_int as _positive
from tokalign.generate.model_folder import MODES

INIT_MODES = ("aligned", "random-rows", "mean", "scratch")
HEADS = ("calibrated", "zero", "tied")  #: how the new ids' output rows start (generate.model.heads)
MARKERS = ("auto", "none")  #: --init aligned: the shared image marker (generate.model.image_marker)
FREEZE_PRESETS = ("all", "embeddings", "embeddings+norms", "embeddings+norms+first-half", "embeddings+norms+ffn",
                  "new-rows")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")  #: auto: bf16 autocast on a GPU, and on a native-bf16 CPU for width >= 256
COMPILE = ("auto", "on", "off")  #: torch.compile of the decoder body; auto: on a GPU, off on CPU
REPORT_TO = ("none", "tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive")


@dataclass(frozen=True)
class ModelConfig:
    """Which LM, how the expanded vocabulary is initialized, what trains.

    ``num_layers`` keeps only the first N decoder layers of the LM (reduced demos and tests); ``None`` keeps all.
    """

    init: str = field(metadata=_help("How the new rows (or, for scratch, all weights) start."))
    lm: str = field(default=DEFAULT_LM, metadata=_help("Base LM: the default alias, an HF id, a folder or a .gguf file "
                                                       "(what `fit --lm` takes)."))
    init_from: Path | None = field(default=None, metadata=_help(
        "--init aligned: the `tokalign export --to generator-init` file."))
    train_only: str = field(default="all", metadata=_help("Freeze preset: what learns (paper, section 3.1)."))
    untie: bool = field(default=False, metadata=_help(
        "Give a tied LM its own output head (the paper's open_lm is untied)."))
    head: str = field(default="calibrated", metadata=_help(
        "How the new ids' output rows start: calibrated (fitted on the LM's hidden states: text predictions kept, "
        "image positions favour image ids), zero, or tied (output rows = input rows, the behaviour before)."))
    marker: str = field(default="none", metadata=_help(
        "--init aligned: none (the export's rows as they are) or auto: add one shared vector to the image rows so "
        "image positions stand out, the largest that keeps 90% of each row's top-10 text neighbours (a lower "
        "step-0 image loss, a slower start of training)."))
    num_layers: int | None = field(default=None, metadata=_help(
        "Keep only the first N decoder layers (reduced runs) [default: all]."))
    cache_root: Path | None = field(default=None, metadata=_help(
        "Cache for derived LM weights [default: $TOKALIGN_CACHE or ~/.cache/tokalign]."))

    def __post_init__(self) -> None:
        _choice("--init", self.init, INIT_MODES)
        _choice("--train-only", self.train_only, FREEZE_PRESETS)
        _choice("--head", self.head, HEADS)
        _choice("--marker", self.marker, MARKERS)
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

    corpus: Path = field(metadata=_help("Corpus folder (`tokalign tokenize` or `demo-corpus`)."))
    mode: str = field(default="text-to-image", metadata=_help("image-only drops the caption (unconditional runs)."))
    seq_len: int = field(default=1152, metadata=_help("Tokens per sequence (captions are truncated to fit)."))
    caption_dropout: float = field(default=0.1, metadata=_help(
        "Share of training captions replaced by an empty text segment (for guidance)."))
    holdout: int = field(default=256, metadata=_help("Pairs held out for evaluation."))

    def __post_init__(self) -> None:
        object.__setattr__(self, "corpus", Path(self.corpus))
        _choice("--mode", self.mode, MODES)
        _positive("--seq-len", self.seq_len)
        _nonnegative("--holdout", self.holdout)
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise TokalignError(f"--caption-dropout {self.caption_dropout} must lie in [0, 1]")
        if self.mode == "image-only" and self.caption_dropout > 0:
            raise TokalignError(f"--caption-dropout {self.caption_dropout} needs captions, but --mode image-only has "
                                "none; pass --caption-dropout 0")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, linear warm-up + cosine decay, a global batch given in tokens.

    A step sees ``batch_tokens // seq_len`` sequences (the global batch), split evenly across processes and, on
    each, into micro-batches of at most ``micro_batch`` sequences (gradient accumulation). The loss of a step is the
    sum of its token losses over the target-token count of the whole global batch.
    """

    steps: int = field(default=100_000, metadata=_help("Optimizer steps."))
    batch_tokens: int = field(default=1_048_576, metadata=_help(
        "Global batch in tokens (batch-tokens // seq-len sequences per step)."))
    micro_batch: int = field(default=8, metadata=_help(
        "Sequences per forward pass per process (gradient accumulation beyond it)."))
    lr: float = field(default=3e-4, metadata=_help("Peak learning rate (AdamW)."))
    warmup_steps: int = field(default=2000, metadata=_help("Linear warm-up steps before the cosine decay."))
    min_lr_ratio: float = field(default=0.1, metadata=_help("Cosine floor as a fraction of the peak."))
    weight_decay: float = field(default=0.1, metadata=_help("AdamW weight decay (matrices only)."))
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = field(default=1.0, metadata=_help("Max gradient norm (0: no clipping)."))

    def __post_init__(self) -> None:
        _positive("--steps", self.steps)
        _positive("--batch-tokens", self.batch_tokens)
        _positive("--micro-batch", self.micro_batch)
        object.__setattr__(self, "betas", check_adamw(lr=self.lr, warmup_steps=self.warmup_steps,
                                                      min_lr_ratio=self.min_lr_ratio, weight_decay=self.weight_decay,
                                                      betas=self.betas, eps=self.eps))
        if not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise TokalignError(f"--grad-clip {self.grad_clip} must be a finite number >= 0 (0: no clipping)")


@dataclass(frozen=True)
class RunConfig:
    """Where and how the run happens: folder, seed, device, precision, logging, checkpoints."""

    run_dir: Path = field(metadata=_help("Run folder to write (or continue with --resume)."))
    seed: int = field(default=0, metadata=_help("Seed of the init, split, data order and dropout."))
    device: str = field(default="auto", metadata=_help("Where to train (several processes: `accelerate launch`)."))
    precision: str = field(default="auto", metadata=_help(
        "auto: bf16 autocast on GPU, and on a CPU with native bf16 (AVX512-BF16/AMX) for models >= 256 wide; "
        "fp32 otherwise (weights, optimizer and loss stay float32)."))
    compile: str = field(default="auto", metadata=_help(
        "torch.compile the decoder body: auto (on a GPU, off on CPU), on or off."))
    report_to: str = field(default="none", metadata=_help(
        "Also log to this Accelerate tracker (e.g. tensorboard, when installed)."))
    log_every: int = field(default=10, metadata=_help("Steps between metrics.jsonl rows."))
    eval_every: int = field(default=500, metadata=_help("Steps between held-out evaluations."))
    eval_batches: int = field(default=4, metadata=_help("Held-out micro-batches per evaluation (0: all)."))
    checkpoint_every: int = field(default=1000, metadata=_help("Steps between checkpoints."))
    keep_checkpoints: int = field(default=2, metadata=_help("How many recent checkpoints to keep."))
    resume: bool = field(default=False, metadata=_help("Continue the run in --run from its last checkpoint."))
    stop_after: int | None = field(default=None, metadata=_help(
        "End this invocation after N steps (checkpointed); continue with --resume."))
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        _choice("--device", self.device, DEVICES)
        _choice("--precision", self.precision, PRECISIONS)
        _choice("--compile", self.compile, COMPILE)
        _choice("--report-to", self.report_to, REPORT_TO)
        check_seed(self.seed)
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
