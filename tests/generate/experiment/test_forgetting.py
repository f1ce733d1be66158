"""The forgetting study probes the base LM and checkpoints along one run, as models of their own."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tokalign.generate.experiment.run import run_study


@pytest.mark.slow
def test_forgetting_probes_the_base_and_each_checkpoint(study_config):
    result = run_study(study_config(study="forgetting", arms=()))
    assert result.arms == {"mean": "trained"}
    assert [p["name"] for p in result.probes] == ["base LM", "step 1", "step 2"]
    assert [p["tokens"] for p in result.probes] == [0, 8 * 32, 16 * 32]
    base = result.probes[0]
    assert base["knowledge_same"].split("/")[0] == base["knowledge_same"].split("/")[1]  # the base equals itself
    assert base["image_mass"] == 0.0 and all(p["image_mass"] > 0 for p in result.probes[1:])
    # the step-1 model holds the checkpoint's weights, not the final ones
    step1 = load_file(str(result.out / "probes" / "step_1" / "model" / "model.safetensors"))
    final = load_file(str(result.out / "arms" / "mean" / "model" / "model.safetensors"))
    ckpt = load_file(str(result.out / "arms" / "mean" / "checkpoints" / "step_1" / "state.safetensors"))
    assert step1.keys() == final.keys()
    for key, value in step1.items():  # a table trained as split rows is saved whole
        split = key.endswith(".weight") and f"model.{key[:-7]}.base" in ckpt
        want = (torch.cat([ckpt[f"model.{key[:-7]}.base"], ckpt[f"model.{key[:-7]}.new"]]) if split
                else ckpt[f"model.{key}"])
        assert (value == want).all(), key
    assert any((step1[k] != final[k]).any() for k in step1)
    text = result.results.read_text()
    assert "## Forgetting along the run" in text and "| step 2 |" in text and "paper, after 5B tokens" in text
    assert result.verdicts[0].verdict in ("agrees", "disagrees", "inconclusive")
