"""``run_study(config)``: the one library entry point of ``tokalign experiment``.

Order: every arm's generator config is built (and so validated) before anything is written; the study folder is
claimed and locked; the ``aligned`` arm's export is fitted if none was given; then each arm is trained as an
ordinary generator run (a finished one is skipped, an interrupted one resumed), and after each arm ``curves.png``
and ``results.md`` are rewritten from every run's ``metrics.jsonl``, so an interrupted study still shows what it
has. The forgetting study then probes the base LM and the run's checkpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tokalign.align.formats import atomic
from tokalign.align.formats.corpus import MANIFEST
from tokalign.align.formats.faults import crash_point
from tokalign.generate.experiment import folder as sf
from tokalign.generate.experiment.arms import arm_config, base_config, run_arm
from tokalign.generate.experiment.claims import CLAIMS, Evidence, Verdict
from tokalign.generate.experiment.config import ExperimentConfig
from tokalign.generate.experiment.curves import Curve, plot_curves, read_curve
from tokalign.generate.experiment.results_md import markdown
from tokalign.generate.experiment.studies import STUDIES, Arm, Study

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyResult:
    out: Path
    arms: dict[str, str]  #: arm -> "trained" | "resumed" | "skipped"
    verdicts: list[Verdict] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)

    @property
    def curves(self) -> Path:
        return self.out / sf.CURVES

    @property
    def results(self) -> Path:
        return self.out / sf.RESULTS


def selected_arms(config: ExperimentConfig, study: Study) -> list[Arm]:
    return [a for a in study.arms if not config.arms or a.name in config.arms]


def run_study(config: ExperimentConfig) -> StudyResult:
    """Run (or ``--resume``) the study ``config.study`` into ``config.out`` (module docstring)."""
    study = STUDIES[config.study]
    arms = selected_arms(config, study)
    base = base_config(config, study)
    placeholder = config.init_from or config.corpus / MANIFEST  # validates the aligned arm's config early
    configs = {a.name: arm_config(base, a, config.out, placeholder) for a in arms}
    sf.check_resume(config)
    statuses: dict[str, str] = {}
    with sf.writing_study(config):
        init_from = config.init_from
        if init_from is None and any(a.aligned for a in arms):
            from tokalign.generate.experiment.aligned_init import aligned_init

            init_from = aligned_init(config)
        for arm in arms:
            statuses[arm.name] = run_arm(arm_config(base, arm, config.out, init_from))
            crash_point(f"experiment:arm:{arm.name}")
            _write_outputs(config, study, arms, configs, [])
        probes: list[dict] = []
        if study.probe:
            from tokalign.generate.experiment.forgetting import probe_checkpoints

            arm = configs[arms[0].name]
            probes = probe_checkpoints(config, arm.run.run_dir, arm.optim.steps, _tokens_per_step(arm))
        verdicts = _write_outputs(config, study, arms, configs, probes)
    return StudyResult(config.out, statuses, verdicts, probes)


def _tokens_per_step(arm) -> int:
    return arm.global_sequences * arm.data.seq_len


def _write_outputs(config: ExperimentConfig, study: Study, arms: list[Arm], configs: dict, probes: list[dict]):
    """Rewrite ``curves.png`` and ``results.md`` from the runs' metrics; return the verdicts."""
    curves: dict[str, Curve] = {}
    for arm in arms:
        cfg = configs[arm.name]
        curve = read_curve(arm.name, cfg.run.run_dir, _tokens_per_step(cfg), study.buckets)
        if curve.tokens:
            curves[arm.name] = curve
    ema = config.preset.ema
    plot_curves(config.out / sf.CURVES, list(curves.values()), study.buckets, ema,
                f"{study.name}: {study.figure} (preset {config.preset.name})")
    evidence = Evidence(curves, ema, probes)
    verdicts = [CLAIMS[name](evidence) for name in study.claims]
    first = configs[arms[0].name]
    context = {"preset": config.preset.name, "corpus": str(config.corpus), "lm": config.lm,
               "steps": first.optim.steps, "tokens_per_step": _tokens_per_step(first), "curves": sf.CURVES}
    atomic.write_text(config.out / sf.RESULTS, markdown(study, arms, curves, verdicts, ema, context, probes))
    return verdicts
