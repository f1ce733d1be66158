"""Golden curves: what a 20-step fit and a 20-step generator run compute, pinned to fixed decimals.

The invariant tests pass whatever numbers a run produces; these do not. A tiny LLaMA (shared by the fit and the
generator), a 96-pair synthetic corpus, CPU, one thread, seed 0: every training loss and every held-out figure is
compared with the values below to 5 significant digits (a relative tolerance of 1e-4 absorbs float reordering, not a
change of what is computed). The generator starts from ``random-rows`` with the ``tied`` head (the new ids' output
rows are their input rows). A change that is meant to alter the trajectory re-records them and says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

STEPS = 20
REL = 1e-4

FIT_LOSS = [
    5.3653, 3.9968, 5.0031, 4.5508, 3.6693, 3.4373, 4.0126, 4.5459, 3.1071, 4.0427,
    3.5466, 3.1553, 3.2135, 3.7241, 3.3085, 3.2884, 3.0334, 2.5328, 2.7592, 3.2226,
]
FIT_HELDOUT = {
    "5/heldout_loss": 4.7948,
    "5/heldout_i2t_R@5": 0.25,
    "5/heldout_t2i_R@5": 0.1875,
    "10/heldout_loss": 4.3603,
    "10/heldout_i2t_R@5": 0.25,
    "10/heldout_t2i_R@5": 0.1875,
    "15/heldout_loss": 4.1468,
    "15/heldout_i2t_R@5": 0.25,
    "15/heldout_t2i_R@5": 0.25,
    "20/heldout_loss": 4.0896,
    "20/heldout_i2t_R@5": 0.3125,
    "20/heldout_t2i_R@5": 0.25,
}
GEN_LOSS = [
    9.3976, 8.2067, 7.2538, 6.6327, 5.6091, 5.5444, 5.2237, 5.2178, 4.9295, 5.0743,
    4.3203, 4.6323, 3.9461, 4.1088, 4.7015, 4.0459, 4.0941, 4.0457, 4.071, 4.3429,
]
GEN_IMAGE_LOSS = [
    9.7842, 8.4569, 7.8785, 7.7998, 6.3345, 6.4117, 6.0071, 6.1569, 5.5362, 6.0353,
    4.9956, 5.395, 4.4114, 4.8458, 5.6599, 4.6408, 4.6788, 4.6931, 4.7683, 4.9437,
]
GEN_HELDOUT = {
    "0/loss": 8.7202,
    "0/image_loss": 8.5676,
    "0/text_loss": 8.8452,
    "5/loss": 5.4826,
    "5/image_loss": 6.1728,
    "5/text_loss": 6.9053,
    "10/loss": 4.74,
    "10/image_loss": 5.3387,
    "10/text_loss": 6.3021,
    "15/loss": 4.4637,
    "15/image_loss": 5.0257,
    "15/text_loss": 6.1697,
    "20/loss": 4.3799,
    "20/image_loss": 4.9359,
    "20/text_loss": 6.1798,
}


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, one_thread):
    """(tiny LLaMA folder, LM cache, corpus folder)."""
    return build_inputs(tmp_path_factory.mktemp("golden"))


def build_inputs(root: Path) -> tuple[str, Path, Path]:
    from synthetic_corpus import write_synthetic_corpus
    from tiny_llama import make_tiny_llama

    from tokalign.align.lm.load import load_frozen_lm

    lm_dir = str(make_tiny_llama(root / "lm", tied=True, seed=0))
    cache = root / "cache"
    corpus = write_synthetic_corpus(root / "corpus", load_frozen_lm(lm_dir, cache), items=96, codebook=64, length=16)
    return lm_dir, cache, corpus


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def fit_curve(lm_dir: str, cache: Path, corpus: Path, run: Path) -> dict:
    """Training loss per step and held-out figures per evaluation of a 20-step fit."""
    from tokalign.align.fit.config import FitConfig
    from tokalign.align.fit.loop import fit

    fit(FitConfig(corpus=corpus, run_dir=run, lm=lm_dir, cache_root=cache, steps=STEPS, batch_size=16, holdout=16,
                  lr=1e-2, warmup_steps=2, log_every=1, eval_every=5, checkpoint_every=STEPS, device="cpu",
                  progress=False))
    rows = _rows(run)
    return {"loss": [r["loss"] for r in rows if "loss" in r],
            "heldout": {f"{r['step']}/{k}": r[k] for r in rows if "heldout_loss" in r
                        for k in ("heldout_loss", "heldout_i2t_R@5", "heldout_t2i_R@5")}}


def generator_curve(lm_dir: str, cache: Path, corpus: Path, run: Path) -> dict:
    """Training loss (all targets, image targets) per step and held-out loss per evaluation of a 20-step run."""
    from tokalign.generate.config import DataConfig, GeneratorTrainConfig, ModelConfig, OptimConfig, RunConfig
    from tokalign.generate.train.loop import train

    train(GeneratorTrainConfig(
        ModelConfig(init="random-rows", lm=lm_dir, cache_root=cache, head="tied"),
        DataConfig(corpus=corpus, seq_len=32, holdout=16, caption_dropout=0.25),
        OptimConfig(steps=STEPS, batch_tokens=8 * 32, micro_batch=4, warmup_steps=2, lr=1e-2),
        RunConfig(run_dir=run, log_every=1, eval_every=5, checkpoint_every=STEPS, device="cpu", progress=False)))
    rows = _rows(run)
    train_rows = [r for r in rows if r["split"] == "train"]
    return {"loss": [r["loss"] for r in train_rows], "image_loss": [r["image_loss"] for r in train_rows],
            "heldout": {f"{r['step']}/{k}": r[k] for r in rows if r["split"] == "heldout"
                        for k in ("loss", "image_loss", "text_loss")}}


def test_fit_curve_is_the_recorded_one(inputs, tmp_path):
    curve = fit_curve(*inputs, tmp_path / "fit")
    assert curve["loss"] == pytest.approx(FIT_LOSS, rel=REL)
    assert curve["heldout"] == pytest.approx(FIT_HELDOUT, rel=REL)


def test_generator_curve_is_the_recorded_one(inputs, tmp_path):
    curve = generator_curve(*inputs, tmp_path / "generator")
    assert curve["loss"] == pytest.approx(GEN_LOSS, rel=REL)
    assert curve["image_loss"] == pytest.approx(GEN_IMAGE_LOSS, rel=REL)
    assert curve["heldout"] == pytest.approx(GEN_HELDOUT, rel=REL)
