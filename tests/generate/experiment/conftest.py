"""Fixtures of the study tests: a tiny tied LLaMA, a small synthetic corpus, a tiny preset and a config factory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (the machine's cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _cache_in_tmp(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("TOKALIGN_CACHE", str(tmp_path_factory.getbasetemp() / "experiment-cache"))


@pytest.fixture(scope="session")
def study_lm(tmp_path_factory) -> str:
    from tiny_llama import make_tiny_llama

    return str(make_tiny_llama(tmp_path_factory.mktemp("study-lm"), tied=True, seed=0))


@pytest.fixture(scope="session")
def study_corpus(tmp_path_factory, lm) -> Path:
    """96 pairs, 64 codes, 16 image tokens each, captions in the tiny LM's (and tiny LLaMA's) tokenizer."""
    from synthetic_corpus import write_synthetic_corpus

    return write_synthetic_corpus(tmp_path_factory.mktemp("study-corpus") / "corpus", lm, items=96, codebook=64,
                                  length=16)


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
