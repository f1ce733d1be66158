"""The studies ``tokalign experiment`` runs: each a registry entry naming its arms, the buckets it plots and the
paper's claims it checks.

An :class:`Arm` is a set of field overrides of the generator config (:class:`~tokalign.generate.config.ModelConfig`
and :class:`~tokalign.generate.config.DataConfig`), applied with ``dataclasses.replace`` to one base config that
every arm of the study shares: same corpus, split, seed, data order and token budget. A new option of the
generator is compared by adding an arm that sets its field. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Arm:
    """One generator run of a study: its name (its folder, ``OUT/arms/<name>``) and its config overrides."""

    name: str
    model: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def aligned(self) -> bool:
        """Does the arm start from a generator-init export (``--init aligned``)?"""
        return self.model.get("init") == "aligned"


@dataclass(frozen=True)
class Study:
    """A comparison of the paper: its arms, what they share, what is plotted, which claims are checked."""

    name: str
    figure: str  #: where the paper shows it
    arms: tuple[Arm, ...]
    buckets: tuple[str, ...]  #: held-out loss buckets plotted ("" is the total)
    claims: tuple[str, ...]  #: names in :data:`tokalign.generate.experiment.claims.CLAIMS`
    shared_model: Mapping[str, Any] = field(default_factory=dict)  #: ModelConfig fields every arm shares
    shared_data: Mapping[str, Any] = field(default_factory=dict)  #: DataConfig fields every arm shares
    shared_optim: Mapping[str, Any] = field(default_factory=dict)  #: OptimConfig fields every arm shares
    probe: bool = False  #: probe the base LM and checkpoints along the run (language forgetting)


def _init_arms() -> tuple[Arm, ...]:
    return tuple(Arm(name, model={"init": name}) for name in ("aligned", "random-rows", "mean", "scratch"))


def _freeze_arms() -> tuple[Arm, ...]:
    presets = ("all", "embeddings", "embeddings+norms", "embeddings+norms+first-half", "embeddings+norms+ffn")
    return (*(Arm(p, model={"train_only": p}) for p in presets), Arm("scratch", model={"init": "scratch"}))


STUDIES: dict[str, Study] = {
    "init": Study(name="init", figure="Figures 3 and 4 (and section 3.2 for the aligned init)", arms=_init_arms(),
                  buckets=("", "image", "text"),
                  claims=("pretrained-no-image-advantage", "pretrained-text-advantage-fades", "aligned-no-help")),
    "freeze": Study(name="freeze", figure="Figure 6 (unconditional: image tokens only)", arms=_freeze_arms(),
                    buckets=("image",), claims=("freezing-hurts", "pretrained-no-image-advantage"),
                    shared_model={"init": "mean"}, shared_data={"mode": "image-only", "caption_dropout": 0.0}),
    # every layer of the LM at the paper's peak LR, whatever the preset: a truncated LM (the small preset's first 2
    # layers) knows nothing to forget (text perplexity in the millions, no knowledge prompt answered), and the whole
    # LM at the small preset's 3e-3 is knocked over in a few steps rather than taught images
    "forgetting": Study(name="forgetting", figure="Table 1", arms=(Arm("mean", model={"init": "mean"}),),
                        buckets=("", "image", "text"), claims=("text-forgotten",), probe=True,
                        shared_model={"num_layers": None}, shared_optim={"lr": 3e-4}),
}
