"""A study trains its arms as ordinary generator runs that differ in one field, and writes curves and verdicts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tokalign.generate.experiment.run import run_study

VERDICT = re.compile(r"^- \*\*.+\*\* \(.+\): \*\*(agrees|disagrees|inconclusive)\*\*\. .+$", re.M)


def test_a_two_arm_study_writes_its_curves_and_results(study_config):
    result = run_study(study_config())
    assert result.arms == {"random-rows": "trained", "scratch": "trained"}
    png = (result.out / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    text = (result.out / "results.md").read_text()
    assert "| `random-rows` |" in text and "| `scratch` |" in text and "| `aligned` |" not in text
    verdicts = VERDICT.findall(text)
    assert len(verdicts) == 3 == len(result.verdicts)  # one sentence per claim of the init study
    assert "arm aligned was not run" in text  # the claim that needs the aligned arm says why it is undecided
    records = {}
    for arm in ("random-rows", "scratch"):
        run = result.out / "arms" / arm
        assert json.loads((run / "summary.json").read_text())["steps"] == 2
        assert (run / "model" / "tokalign_generator.json").is_file()
        heldout = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in heldout if r["split"] == "heldout"] == [0, 1, 2]
        records[arm] = json.loads((run / "run.json").read_text())
    # same corpus, split, seed, data order and budget: the trajectories differ in the init alone
    a, b = records["random-rows"]["trajectory"], records["scratch"]["trajectory"]
    assert {k: v for k, v in a["model"].items() if k != "init"} == {k: v for k, v in b["model"].items() if k != "init"}
    assert (a["model"]["init"], b["model"]["init"]) == ("random-rows", "scratch")
    assert {k: v for k, v in a.items() if k != "model"} == {k: v for k, v in b.items() if k != "model"}
    assert records["random-rows"]["identities"] == records["scratch"]["identities"]
    study = json.loads((result.out / "study.json").read_text())
    assert study["config"]["arms"] == ["random-rows", "scratch"] and study["config"]["preset"]["steps"] == 2


@pytest.mark.parametrize("name", ["init", "freeze", "forgetting"])
def test_every_arm_of_every_study_is_a_valid_generator_config(study_config, name):
    from tokalign.generate.experiment.arms import arm_config, base_config
    from tokalign.generate.experiment.studies import STUDIES

    config = study_config(study=name, arms=())
    base = base_config(config, STUDIES[name])
    for arm in STUDIES[name].arms:
        arm_config(base, arm, config.out, Path("init.safetensors") if arm.aligned else None)


def test_arm_overrides_go_through_the_generator_config(study_config):
    """An arm is ``dataclasses.replace`` of one base config: the generator's own validation runs on it."""
    from tokalign.generate.experiment.arms import arm_config, base_config
    from tokalign.generate.experiment.studies import STUDIES

    config = study_config(study="freeze", arms=())
    base = base_config(config, STUDIES["freeze"])
    built = {arm.name: arm_config(base, arm, config.out, None) for arm in STUDIES["freeze"].arms}
    assert {(c.data.mode, c.data.caption_dropout) for c in built.values()} == {("image-only", 0.0)}
    assert built["embeddings+norms+ffn"].model.train_only == "embeddings+norms+ffn"
    assert built["embeddings+norms+ffn"].model.init == "mean" and built["scratch"].model.init == "scratch"
    assert len({c.run.run_dir for c in built.values()}) == len(built)
    assert len({(c.optim, c.run.seed, c.data.seq_len, c.data.holdout) for c in built.values()}) == 1


def test_forgetting_runs_the_whole_lm_at_the_papers_lr_in_any_preset(study_config):
    """The small preset's 2 layers know nothing to forget, and the whole LM at its 3e-3 is knocked over, not taught."""
    from tokalign.generate.experiment.arms import arm_config, base_config
    from tokalign.generate.experiment.config import PRESETS
    from tokalign.generate.experiment.studies import STUDIES

    small = PRESETS["small"]
    config = study_config(study="forgetting", arms=(), preset=small)
    arm = arm_config(base_config(config, STUDIES["forgetting"]), STUDIES["forgetting"].arms[0], config.out, None)
    assert arm.model.num_layers is None and arm.optim.lr == 3e-4
    init = base_config(study_config(study="init", arms=(), preset=small), STUDIES["init"])
    assert (init.optim.lr, init.model.num_layers) == (small.lr, small.num_layers) == (3e-3, 2)
