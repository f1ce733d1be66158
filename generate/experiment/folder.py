"""The study folder: claimed, locked and marked with the shared output rules, and its record ``study.json``.

::

    study.json        the study's configuration (what ``--resume`` must find unchanged)
    arms/<name>/      one ordinary generator run folder per arm
    align/            the fit and generator-init export of the ``aligned`` arm, when none was given
    probes/step_N/    the forgetting study's checkpoint models and their probe reports
    curves.png        held-out loss curves of every arm
    results.md        each arm's figures beside the paper's, and a verdict per claim

The folder goes through the shared run lifecycle (:class:`StudyRun`, a
:class:`tokalign.align.training.run_lifecycle.RunLifecycle`): written only when it is new, empty or a study, by
one process at a time; a folder holding a study is continued only with ``--resume``, and only with the
configuration it was started with.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from tokalign.align.training.run_lifecycle import RunLifecycle
from tokalign.generate.experiment.config import ExperimentConfig, changed_options

KIND = "generator-study"
RECORD = "study.json"
FORMAT = "tokalign-study"
CURVES = "curves.png"
RESULTS = "results.md"


class StudyRun(RunLifecycle):
    """A study's folder: no checkpoints of its own (its arms keep theirs); continued with ``--resume`` once its
    record is written, and only with the configuration the record holds."""

    kind, what, record_name, option = KIND, "experiment", RECORD, "--out"
    header, version = {"format": FORMAT}, 1
    trajectory_key = "config"
    products = (RECORD,)
    resumable, fresh = "study", "one"

    @classmethod
    def of(cls, config: ExperimentConfig) -> "StudyRun":
        return cls(config.out, resume=config.resume, trajectory=config.record(),
                   inputs=(config.corpus, config.init_from))

    def held(self, saved: dict[str, Any]) -> str:
        return f"a {saved.get('config', {}).get('study')} study"

    def changes(self, saved: dict[str, Any], trajectory: dict[str, Any], identities: dict[str, Any]) -> str | None:
        changed = changed_options(saved.get("config", {}), trajectory)
        if not changed:
            return None
        return (f"--resume with {', '.join(changed)} differing from the study in {self.folder}; resume with the "
                "options it started with, or choose another --out")


def check_resume(config: ExperimentConfig) -> None:
    """Refuse a fresh start over a study, a resume of nothing, or a resume with another configuration."""
    life = StudyRun.of(config)
    if life.resume_point() is not None:
        life.check(life.trajectory, {})


@contextlib.contextmanager
def writing_study(config: ExperimentConfig) -> Iterator[Path]:
    """Claim, lock and mark ``config.out`` for the block; its record is written before any arm starts."""
    life = StudyRun.of(config)
    with life.writing() as resume_from:
        if resume_from is None:
            life.write_record({})
        yield config.out
