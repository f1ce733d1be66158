"""``--resume`` continues an interrupted study: finished arms are kept as they are, an interrupted arm resumes from
its checkpoint, and a changed configuration is refused naming the option."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from tokalign.align.errors import TokalignError
from tokalign.generate.experiment import run as study_run
from tokalign.generate.experiment.run import run_study

from cli_run import refused


def _contents(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _kill_during(monkeypatch, victim: str) -> None:
    """The study dies while training ``victim``: after its first step (checkpointed), before the rest."""
    real = study_run.run_arm

    def run_arm(config):
        if config.run.run_dir.name != victim:
            return real(config)
        with pytest.raises(TokalignError, match="stopped at step 1"):
            real(replace(config, run=replace(config.run, stop_after=1)))  # leaves step_1
        raise RuntimeError("killed")

    monkeypatch.setattr(study_run, "run_arm", run_arm)


@pytest.mark.slow
def test_resume_keeps_finished_arms_and_continues_the_interrupted_one(study_config, monkeypatch):
    _kill_during(monkeypatch, "scratch")
    with pytest.raises(RuntimeError, match="killed"):
        run_study(study_config())
    out = study_config().out
    finished = _contents(out / "arms" / "random-rows")
    assert "summary.json" in finished and (out / "arms" / "scratch" / "checkpoints" / "step_1").is_dir()
    assert not (out / "arms" / "scratch" / "model").exists()
    monkeypatch.undo()

    with pytest.raises(TokalignError, match="already holds a init study; pass --resume"):
        run_study(study_config())
    result = run_study(study_config(resume=True))
    assert result.arms == {"random-rows": "skipped", "scratch": "resumed"}
    assert _contents(out / "arms" / "random-rows") == finished  # not retrained, not rewritten
    assert (out / "arms" / "scratch" / "model" / "tokalign_generator.json").is_file()
    assert (out / "curves.png").is_file() and "| `scratch` |" in (out / "results.md").read_text()
    again = run_study(study_config(resume=True))  # a finished study resumes to nothing
    assert again.arms == {"random-rows": "skipped", "scratch": "skipped"}


def test_a_changed_configuration_is_refused_on_resume(study_config, tiny_preset, study_lm, study_corpus, capsys):
    config = study_config(arms=("random-rows",))
    run_study(config)
    before = _contents(config.out)
    with pytest.raises(TokalignError, match=r"--resume with --seed differing"):
        run_study(study_config(arms=("random-rows",), resume=True, seed=1))
    with pytest.raises(TokalignError, match=r"--preset \(steps\)"):
        run_study(study_config(arms=("random-rows",), resume=True, preset=replace(tiny_preset, steps=3)))
    with pytest.raises(TokalignError, match=r"--arms"):
        run_study(study_config(arms=("random-rows", "mean"), resume=True))
    line = refused(capsys, "experiment", "init", "--corpus", study_corpus, "--out", config.out, "--lm", study_lm,
                   "--arms", "random-rows", "--resume", "--no-progress")
    assert "--preset (" in line and "differing from the study" in line  # the CLI's small preset is not tiny
    assert _contents(config.out) == before


def test_resume_of_nothing_and_bad_arms_are_one_line(study_config, study_corpus, capsys, tmp_path):
    with pytest.raises(TokalignError, match="nothing to resume"):
        run_study(study_config(resume=True))
    assert not (tmp_path / "study").exists()
    line = refused(capsys, "experiment", "init", "--corpus", study_corpus, "--out", tmp_path / "x", "--arms", "bogus")
    assert "not an arm of study init" in line
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    line = refused(capsys, "experiment", "init", "--corpus", study_corpus, "--out", tmp_path / "mine",
                   "--arms", "mean", "--lm", "nowhere-lm")
    assert "tokalign never replaces files it did not write" in line
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
