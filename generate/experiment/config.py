"""What ``tokalign experiment`` runs: a study's scale (a :class:`Preset`) and the study's inputs, frozen and validated.

Torch-free at import (the CLI reads the preset and study names from here). A preset is data: the few settings that
make the same study a 20-minute CPU check (``small``) or the paper's run (``paper``, sections 2 and 3: 30 layers,
sequences of 1,152 tokens, AdamW with a cosine schedule after 2K warm-up steps, peak LR 3e-4, about 1M tokens per
step). Every arm of a study gets the same preset, so arms differ only in the field their override names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tokalign.align.defaults import DEFAULT_LM
from tokalign.align.errors import TokalignError
from tokalign.align.formats.corpus import MANIFEST, read_manifest


@dataclass(frozen=True)
class Preset:
    """The scale of every arm of a study.

    ``seq_len`` None fits the sequence to the corpus: its image tokens plus ``caption_tokens`` (text-to-image) or
    plus the structure tokens (image-only). ``ema`` is the smoothing weight of the plotted curves (the paper's
    figures: 0.95 over many evaluations; fewer evaluations need less). ``fit_*`` size the alignment fit the
    ``aligned`` arm starts from when no ``--init-from`` is given; ``probe_points`` is how many checkpoints along
    the run the forgetting study probes.
    """

    name: str
    num_layers: int | None
    seq_len: int | None
    caption_tokens: int
    steps: int
    batch_sequences: int
    micro_batch: int
    lr: float
    warmup_steps: int
    holdout: int
    eval_every: int
    eval_batches: int
    checkpoint_every: int
    ema: float
    fit_steps: int
    fit_batch_size: int
    probe_points: int
    probe_text_tokens: int
    probe_image_rows: int
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_sequences", "micro_batch", "eval_every", "checkpoint_every", "fit_steps",
                     "fit_batch_size", "probe_points", "probe_text_tokens", "caption_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TokalignError(f"preset {self.name}: {name} {value!r} must be a positive integer")
        if not 0.0 <= self.ema < 1.0:
            raise TokalignError(f"preset {self.name}: ema {self.ema} must lie in [0, 1)")
        if self.probe_points > self.steps:
            raise TokalignError(f"preset {self.name}: probe_points {self.probe_points} exceeds its {self.steps} steps")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    # 2 of the LM's decoder layers, the corpus's own sequence length, 24 steps of 2 sequences: minutes per arm on
    # two CPU cores, enough to separate inits whose step-0 losses differ by nats
    "small": Preset(name="small", num_layers=2, seq_len=None, caption_tokens=64, steps=24, batch_sequences=2,
                    micro_batch=2, lr=3e-3, warmup_steps=2, holdout=32, eval_every=4, eval_batches=2,
                    checkpoint_every=4, ema=0.5, fit_steps=300, fit_batch_size=256, probe_points=3,
                    probe_text_tokens=256, probe_image_rows=256, device="cpu"),
    # the paper's setting (sections 2.1 and 3.1): all layers, 1,152 tokens, 910 sequences (~1.05M tokens) per
    # step, 100K steps (~100B tokens), AdamW 3e-4 cosine after 2K warm-up steps
    "paper": Preset(name="paper", num_layers=None, seq_len=1152, caption_tokens=128, steps=100_000,
                    batch_sequences=910, micro_batch=8, lr=3e-4, warmup_steps=2000, holdout=2048, eval_every=500,
                    eval_batches=16, checkpoint_every=1000, ema=0.95, fit_steps=1000, fit_batch_size=1024,
                    probe_points=10, probe_text_tokens=1024, probe_image_rows=0),
}


@dataclass(frozen=True)
class ExperimentConfig:
    """One study: which, on what corpus and LM, at which preset, into which folder.

    ``arms`` picks a subset of the study's arms (empty: all). ``init_from`` is the generator-init export the
    ``aligned`` arm starts from; without one the study fits and exports it into ``OUT/align`` itself.
    """

    study: str
    corpus: Path
    out: Path
    preset: Preset
    lm: str = DEFAULT_LM
    init_from: Path | None = None
    arms: tuple[str, ...] = ()
    seed: int = 0
    resume: bool = False
    cache_root: Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        from tokalign.generate.experiment.studies import STUDIES

        for name in ("corpus", "out", "init_from", "cache_root"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)).expanduser())
        object.__setattr__(self, "arms", tuple(self.arms))
        if self.study not in STUDIES:
            raise TokalignError(f"unknown study {self.study!r}; choose one of {', '.join(STUDIES)}")
        known = [arm.name for arm in STUDIES[self.study].arms]
        unknown = [a for a in self.arms if a not in known]
        if unknown:
            raise TokalignError(f"--arms {','.join(unknown)}: not an arm of study {self.study} "
                                f"(its arms: {', '.join(known)})")
        if len(set(self.arms)) != len(self.arms):
            raise TokalignError(f"--arms {','.join(self.arms)} names an arm twice; name each once")
        if not (self.corpus / MANIFEST).is_file():
            raise TokalignError(f"--corpus {self.corpus} holds no {MANIFEST}; pass a corpus folder "
                                "(`tokalign tokenize` or `tokalign demo-corpus`)")
        if self.init_from is not None and not self.init_from.is_file():
            raise TokalignError(f"--init-from {self.init_from}: no such file; pass a `tokalign export --to "
                                "generator-init` file, or drop --init-from to let the study fit one")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise TokalignError(f"--seed {self.seed!r} must be a non-negative integer")

    @property
    def tokens_per_image(self) -> int:
        return int(read_manifest(self.corpus)["tokens_per_image"])

    def record(self) -> dict[str, Any]:
        """What ``--resume`` must find unchanged, keyed by the option that sets it (see :data:`OPTION_OF`)."""
        return {"study": self.study, "corpus": str(self.corpus.resolve()), "lm": self.lm,
                "init_from": str(self.init_from.resolve()) if self.init_from is not None else None,
                "arms": list(self.arms), "seed": self.seed, "preset": self.preset.to_json()}


OPTION_OF = {"study": "STUDY", "corpus": "--corpus", "lm": "--lm", "init_from": "--init-from", "arms": "--arms",
             "seed": "--seed", "preset": "--preset"}


def changed_options(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The options whose values differ between a study's saved record and this invocation's (preset fields named)."""
    changed = []
    for key, value in wanted.items():
        old = saved.get(key)
        if key == "preset" and isinstance(old, dict) and old != value:
            fields_ = [f.name for f in fields(Preset) if old.get(f.name) != value.get(f.name)]
            changed.append(f"--preset ({', '.join(fields_)})")
        elif old != value:
            changed.append(OPTION_OF.get(key, key))
    return changed
