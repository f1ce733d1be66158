"""Each arm of a study is an ordinary generator run: one base config, the arm's overrides, the library's ``train``.

:func:`base_config` turns the preset into a :class:`~tokalign.generate.config.GeneratorTrainConfig` every arm
shares (corpus, split, seed, data order, token budget); :func:`arm_config` applies one arm's overrides with
``dataclasses.replace`` (so the generator's own validation runs); :func:`run_arm` trains it, resumes an interrupted
one from its checkpoint, and leaves a finished one untouched.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from tokalign.generate.config import DataConfig, GeneratorTrainConfig, ModelConfig, OptimConfig, RunConfig
from tokalign.generate.experiment.config import ExperimentConfig
from tokalign.generate.experiment.studies import Arm, Study

log = logging.getLogger(__name__)
ARMS = "arms"
_IMAGE_ONLY_EXTRA = 8  #: structure tokens of an image-only row, rounded up


def arm_dir(out: Path, arm: Arm) -> Path:
    return Path(out) / ARMS / arm.name


def seq_len(config: ExperimentConfig, mode: str) -> int:
    """The preset's sequence length, or one fitted to the corpus's image tokens (:class:`Preset`)."""
    if config.preset.seq_len is not None:
        return config.preset.seq_len
    extra = config.preset.caption_tokens if mode == "text-to-image" else _IMAGE_ONLY_EXTRA
    return config.tokens_per_image + extra


def base_config(config: ExperimentConfig, study: Study) -> GeneratorTrainConfig:
    """The generator config every arm of ``study`` starts from (the arm then overrides its fields)."""
    p = config.preset
    model = ModelConfig(**{"init": "mean", "lm": config.lm, "num_layers": p.num_layers,
                           "cache_root": config.cache_root, **study.shared_model})
    data = replace(DataConfig(corpus=config.corpus, holdout=p.holdout), **study.shared_data)
    data = replace(data, seq_len=seq_len(config, data.mode))
    checkpoints = p.checkpoint_every
    keep = 2
    if study.probe:  # every probed checkpoint must survive the run
        checkpoints = max(1, p.steps // p.probe_points)
        keep = p.steps // checkpoints + 1
    optim = OptimConfig(steps=p.steps, batch_tokens=p.batch_sequences * data.seq_len, micro_batch=p.micro_batch,
                        lr=p.lr, warmup_steps=p.warmup_steps)
    optim = replace(optim, **study.shared_optim)
    run = RunConfig(run_dir=config.out / ARMS, seed=config.seed, device=p.device, log_every=1,
                    eval_every=p.eval_every, eval_batches=p.eval_batches, checkpoint_every=checkpoints,
                    keep_checkpoints=keep, progress=config.progress)
    return GeneratorTrainConfig(model=model, data=data, optim=optim, run=run)


def arm_config(base: GeneratorTrainConfig, arm: Arm, out: Path, init_from: Path | None,
               resume: bool = False) -> GeneratorTrainConfig:
    """``base`` with the arm's overrides, its own run folder, and the export when the arm is ``aligned``."""
    model_fields: dict[str, Any] = dict(arm.model)
    if arm.aligned:
        model_fields["init_from"] = init_from
    model = replace(base.model, **model_fields)
    data = replace(base.data, **arm.data)
    return replace(base, model=model, data=data, run=replace(base.run, run_dir=arm_dir(out, arm), resume=resume))


def finished(run_dir: Path, steps: int) -> bool:
    """Has the run in ``run_dir`` saved its model after all ``steps``?"""
    from tokalign.generate.model_folder import is_generator_folder
    from tokalign.generate.train import run_folder as rf

    summary = rf.read_summary(Path(run_dir)) or {}
    return summary.get("steps") == steps and is_generator_folder(Path(run_dir) / rf.MODEL)


def has_checkpoint(run_dir: Path) -> bool:
    from tokalign.align.training.checkpoint import list_checkpoints
    from tokalign.generate.train import run_folder as rf

    return bool(list_checkpoints(Path(run_dir) / rf.CHECKPOINTS))


def run_arm(config: GeneratorTrainConfig) -> str:
    """Train one arm; "skipped" when it had finished, "resumed" or "trained" otherwise."""
    run_dir = config.run.run_dir
    if finished(run_dir, config.optim.steps):
        log.info("arm %s finished earlier; not retrained", run_dir.name)
        return "skipped"
    from tokalign.generate.train.loop import train

    resume = has_checkpoint(run_dir)
    log.info("arm %s: %s", run_dir.name, "resuming from its checkpoint" if resume else "training")
    result = train(replace(config, run=replace(config.run, resume=resume)))
    if not result.finished:
        from tokalign.align.errors import TokalignError

        raise TokalignError(f"arm {run_dir.name} stopped at step {result.steps}; continue the study with --resume")
    return "resumed" if resume else "trained"
