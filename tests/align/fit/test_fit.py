"""``fit``: what it trains, what it leaves frozen, what it writes, how it resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tokalign.align.fit.loop import fit
from tokalign.align.fit.config import FitConfig
from tokalign.align.lm.load import load_frozen_lm
from tokalign.align.fit.table import ImageTokenTable, load_table


def _config(corpus, run, tiny_lm, lm_cache, **kw):
    defaults = dict(lm=tiny_lm, cache_root=lm_cache, steps=6, batch_size=16, holdout=16, warmup_steps=2,
                    log_every=1, checkpoint_every=3, progress=False, lr=1e-2)
    defaults.update(kw)
    return FitConfig(corpus=corpus, run_dir=run, **defaults)


def test_fit_trains_the_table_and_leaves_the_lm_embeddings_bit_identical(synthetic_corpus, tmp_path, tiny_lm, lm_cache):
    corpus = synthetic_corpus()
    lm = load_frozen_lm(tiny_lm, lm_cache)
    before = lm.embeddings.clone()
    result = fit(_config(corpus, tmp_path / "run", tiny_lm, lm_cache))

    after = load_frozen_lm(tiny_lm, lm_cache)
    assert torch.equal(after.embeddings, before) and after.embedding_sha256 == lm.embedding_sha256
    stored = load_file(str(tmp_path / "run" / "lm" / "embeddings.safetensors"))
    assert any(torch.equal(t, before) for t in stored.values())

    table, meta = load_table(tmp_path / "run" / "table.safetensors")
    init = ImageTokenTable(64, lm.d_model, init_row_norm=float(before.norm(dim=1).mean()),
                           init_logit_scale=result.logit_scale, seed=0).weight.detach()
    assert table.shape == (64, lm.d_model)
    assert not torch.allclose(table, init)
    assert meta["lm_embedding_sha256"] == lm.embedding_sha256
    assert int(meta["codebook_size"]) == 64 and int(meta["d_model"]) == lm.d_model and int(meta["steps"]) == 6
    assert meta["image_tokenizer"]["kind"] == "synthetic"
    assert float(meta["final_loss"]) == pytest.approx(result.final_loss)


def test_temperature_learns_and_never_exceeds_the_clamp(synthetic_corpus, tmp_path, tiny_lm, lm_cache):
    corpus = synthetic_corpus(items=160)
    fit(_config(corpus, tmp_path / "run", tiny_lm, lm_cache, steps=30, lr=0.05, warmup_steps=1, min_lr_ratio=1.0,
                init_logit_scale=0.5, max_logit_scale=1.0))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]  # training rows (held-out rows carry heldout_* keys)
    scales = [r["logit_scale"] for r in rows]
    assert len(rows) == 30
    assert max(scales) <= 1.0 + 1e-6
    assert scales[-1] == pytest.approx(1.0, abs=1e-6)  # it learned its way up to the clamp and stays there
    assert all(r["temperature"] == pytest.approx(np.exp(-r["logit_scale"])) for r in rows)


def test_resumed_run_ends_where_the_uninterrupted_run_ends(synthetic_corpus, tmp_path, tiny_lm, lm_cache):
    corpus = synthetic_corpus()
    fit(_config(corpus, tmp_path / "whole", tiny_lm, lm_cache))
    first = fit(_config(corpus, tmp_path / "split", tiny_lm, lm_cache, stop_after=4))
    assert not first.finished and first.steps == 4
    assert not (tmp_path / "split" / "table.safetensors").exists()
    # a stray metrics row past the checkpoint, as an interruption can leave, must not survive
    with open(tmp_path / "split" / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 123.0}\n{"step": 6, "lo')
    second = fit(_config(corpus, tmp_path / "split", tiny_lm, lm_cache, resume=True))
    assert second.finished and second.steps == 6

    whole, _ = load_table(tmp_path / "whole" / "table.safetensors")
    split, _ = load_table(tmp_path / "split" / "table.safetensors")
    assert torch.equal(whole, split)
    rows = lambda run: [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    drop = lambda r: {k: v for k, v in r.items() if k != "pairs_per_s"}  # noqa: E731
    assert [drop(r) for r in rows("whole")] == [drop(r) for r in rows("split")]


def test_checkpoints_are_complete_and_pruned(synthetic_corpus, tmp_path, tiny_lm, lm_cache):
    corpus = synthetic_corpus()
    fit(_config(corpus, tmp_path / "run", tiny_lm, lm_cache, steps=9, checkpoint_every=2, keep_checkpoints=2))
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step_8", "step_9"]
    for name in names:
        assert {p.name for p in (tmp_path / "run" / "checkpoints" / name).iterdir()} == {"state.safetensors", "trainer.json"}


def test_fit_on_shapes_reaches_heldout_recall_far_above_chance(shapes_corpus, tmp_path, tiny_lm, lm_cache):
    result = fit(FitConfig(corpus=shapes_corpus, run_dir=tmp_path / "run", lm=tiny_lm, cache_root=lm_cache,
                           steps=200, batch_size=256, holdout=256, lr=5e-2, warmup_steps=20, progress=False))
    r = result.retrieval
    assert r["pairs"] == 256 and r["chance"]["R@1"] == pytest.approx(1 / 256)
    assert r["i2t"]["R@1"] > 10 * r["chance"]["R@1"]
    assert r["t2i"]["R@1"] > 10 * r["chance"]["R@1"]
    assert r["t2i"]["R@5"] > 10 * r["chance"]["R@5"]
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved == r


def test_a_fit_stopped_before_its_first_checkpoint_can_simply_start_again(synthetic_corpus, tmp_path, tiny_lm, lm_cache):
    corpus = synthetic_corpus()
    run = tmp_path / "run"
    run.mkdir()
    from tokalign.align.formats import outputs

    outputs.write_marker(run, outputs.FIT_RUN)  # what an interruption before the first checkpoint leaves:
    (run / "config.json").write_text("{}")  # the fit's marker and its config, no checkpoint
    result = fit(_config(corpus, run, tiny_lm, lm_cache))
    assert result.finished and (run / "table.safetensors").is_file()


def test_resume_refuses_a_corpus_of_another_size(synthetic_corpus, tmp_path, tiny_lm, lm_cache):
    from tokalign.align.errors import TokalignError

    fit(_config(synthetic_corpus("a", items=96), tmp_path / "run", tiny_lm, lm_cache, stop_after=3))
    other = synthetic_corpus("b", items=120)  # same image tokenizer identity, other pairs
    with pytest.raises(TokalignError, match="96 pairs, this one has 120"):
        fit(_config(other, tmp_path / "run", tiny_lm, lm_cache, resume=True))
