"""Fixtures of the study tests: a tiny tied LLaMA, a small synthetic corpus, a tiny preset and a config factory."""

from __future__ import annotations

from pathlib import Path

import pytest
from threads import one_thread


_one_thread = one_thread  # tiny models on one torch thread (tests/helpers/threads.py)


@pytest.fixture(autouse=True)
def _cache_in_tmp(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("TOKALIGN_CACHE", str(tmp_path_factory.getbasetemp() / "experiment-cache"))


@pytest.fixture(scope="session")
def study_lm(gen_lm) -> str:
    """The generator tests' tiny tied LLaMA (tests/generate/conftest.py)."""
    return gen_lm


@pytest.fixture(scope="session")
def study_corpus(gen_corpus) -> Path:
    """The generator tests' corpus: 96 pairs, 64 codes, 16 image tokens each."""
    return gen_corpus


@pytest.fixture(scope="session")
def tiny_preset():
    from tokalign.generate.experiment.config import Preset

    return Preset(name="tiny", num_layers=None, seq_len=32, caption_tokens=8, steps=2, batch_sequences=8,
                  micro_batch=4, lr=1e-2, warmup_steps=1, holdout=16, eval_every=1, eval_batches=1,
                  checkpoint_every=1, ema=0.5, fit_steps=2, fit_batch_size=16, probe_points=2, probe_text_tokens=48,
                  probe_image_rows=8, device="cpu")


@pytest.fixture
def study_config(study_lm, study_corpus, tiny_preset, tmp_path):
    """``study_config(study="init", arms=(...), out="study", **fields)`` -> ExperimentConfig."""
    from tokalign.generate.experiment.config import ExperimentConfig

    def make(study="init", arms=("random-rows", "scratch"), out="study", **fields):
        values = {"preset": tiny_preset, "lm": study_lm, "progress": False, **fields}
        return ExperimentConfig(study=study, corpus=study_corpus, out=tmp_path / out, arms=tuple(arms), **values)

    return make
