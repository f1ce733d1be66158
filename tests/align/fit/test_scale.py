"""The scale path (per-batch captions from memory-mapped ids, per-epoch bijection) trains what the in-memory
path trains; held-out curves land in metrics.jsonl; memory does not grow with the corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tokalign.align.fit.config import FitConfig
from tokalign.align.fit.loop import fit
from tokalign.align.fit.table import load_table


def _config(corpus, run, tiny_lm, lm_cache, **kw):
    defaults = dict(lm=tiny_lm, cache_root=lm_cache, steps=8, batch_size=16, holdout=16, warmup_steps=2,
                    log_every=1, checkpoint_every=4, progress=False, lr=1e-2, eval_every=2)
    defaults.update(kw)
    return FitConfig(corpus=corpus, run_dir=run, **defaults)


def _in_memory_reference(cfg: FitConfig, lm) -> torch.Tensor:
    """Today's path, spelled out: every caption vector up front, the training index and each epoch's
    permutation materialized as arrays, the same bag product, optimizer, schedule and clamp."""
    from tokalign.align.fit.bags import bags_from_tokens
    from tokalign.align.fit.data_order import EpochOrder, permute
    from tokalign.align.fit.loss import clip_loss
    from tokalign.align.fit.split import make_split
    from tokalign.align.fit.table import ImageTokenTable
    from tokalign.align.formats.corpus import open_corpus
    from tokalign.align.lm.captions import caption_vectors
    from tokalign.align.training.schedule import lr_at

    corpus = open_corpus(cfg.corpus)
    split = make_split(corpus.items, cfg.holdout, cfg.seed)
    train = np.setdiff1d(np.arange(corpus.items), split.holdout)
    text = caption_vectors(lm.embeddings, *corpus.all_caption_ids())
    order = EpochOrder(len(train), cfg.batch_size, cfg.seed)
    model = ImageTokenTable(corpus.codebook_size, lm.d_model, seed=cfg.seed, init_row_norm=float(lm.embeddings.norm(dim=1).mean()),
                            init_logit_scale=cfg.init_logit_scale)
    opt = torch.optim.AdamW([{"params": [model.weight], "weight_decay": cfg.weight_decay},
                             {"params": [model.logit_scale], "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas,
                            eps=cfg.eps, fused=True)
    for step in range(cfg.steps):
        epoch, position = divmod(step, order.steps_per_epoch)
        epoch_order = train[permute(np.arange(len(train)), len(train), order.epoch_keys(epoch))]
        idx = epoch_order[position * cfg.batch_size:(position + 1) * cfg.batch_size]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, peak=cfg.lr, warmup=cfg.warmup_steps, total=cfg.steps, floor_ratio=cfg.min_lr_ratio)
        image, scale = model(bags_from_tokens(corpus.image_tokens(idx), corpus.codebook_size))
        clip_loss(image, text[torch.from_numpy(idx)], scale).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            model.logit_scale.clamp_(min=0.0, max=cfg.max_logit_scale)
    return model.weight.detach()


def test_the_scale_path_trains_the_in_memory_reference_table_bit_for_bit(synthetic_corpus, tmp_path, tiny_lm, lm_cache, lm):
    corpus = synthetic_corpus(items=120, shard_size=50)
    cfg = _config(corpus, tmp_path / "run", tiny_lm, lm_cache, steps=14)  # 6 steps per epoch: crosses two epochs
    fit(cfg)
    table, _ = load_table(tmp_path / "run" / "table.safetensors")
    assert torch.equal(table, _in_memory_reference(cfg, lm))


def test_a_corpus_tokenized_for_another_lm_trains_from_a_cache_equal_to_its_stored_ids(synthetic_corpus, tmp_path, tiny_lm, lm_cache):
    corpus = synthetic_corpus(items=120, shard_size=50)
    fit(_config(corpus, tmp_path / "stored", tiny_lm, lm_cache))
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["text_tokenizer"]["sha256"] = "f" * 64  # as if another tokenizer had made the stored ids
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    fit(_config(corpus, tmp_path / "cached", tiny_lm, lm_cache))
    cache = tmp_path / "cached" / "caption_ids"
    meta = json.loads((cache / "meta.json").read_text())
    offsets = np.fromfile(cache / "offsets.bin", dtype=np.int64)
    assert len(offsets) == 121 and meta["caption_tokens"] == offsets[-1]
    a, _ = load_table(tmp_path / "stored" / "table.safetensors")
    b, _ = load_table(tmp_path / "cached" / "table.safetensors")
    assert torch.equal(a, b)


def test_heldout_rows_are_logged_every_n_steps_and_the_last_equals_eval_json(synthetic_corpus, tmp_path, tiny_lm, lm_cache):
    corpus = synthetic_corpus(items=120)
    result = fit(_config(corpus, tmp_path / "run", tiny_lm, lm_cache, steps=7, eval_every=3))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    held = [r for r in rows if "heldout_loss" in r]
    assert [r["step"] for r in held] == [3, 6, 7]
    evaluation = json.loads((tmp_path / "run" / "eval.json").read_text())
    last = held[-1]
    assert last["heldout_loss"] == evaluation["loss"] and last["heldout_pairs"] == evaluation["pairs"] == 16
    assert all(last[f"heldout_{d}_{k}"] == evaluation[d][k] for d in ("i2t", "t2i") for k in ("R@1", "R@5", "R@10"))
    best = min(held, key=lambda r: r["heldout_loss"])
    assert result.best_heldout["step"] == best["step"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best_heldout"] == result.best_heldout and summary["heldout_verdict"]["verdict"] in (
        "overfitted", "plateaued", "improving")


def test_eval_every_zero_logs_no_heldout_rows_but_still_writes_eval_json(synthetic_corpus, tmp_path, tiny_lm, lm_cache):
    corpus = synthetic_corpus()
    result = fit(_config(corpus, tmp_path / "run", tiny_lm, lm_cache, steps=4, eval_every=0))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in rows if "heldout_loss" in r] and result.best_heldout is None
    assert "loss" in json.loads((tmp_path / "run" / "eval.json").read_text())


def test_the_cli_summary_names_the_best_heldout_step(synthetic_corpus, tmp_path, tiny_lm, lm_cache, capsys):
    from cli_run import run_main

    corpus = synthetic_corpus()
    code, out, err = run_main(capsys, "fit", "--corpus", corpus, "--run", tmp_path / "run", "--lm", tiny_lm,
                              "--cache-dir", lm_cache, "--steps", "6", "--batch-size", "16", "--holdout", "16",
                              "--eval-every", "2", "--no-progress")
    assert code == 0, err
    best = json.loads((tmp_path / "run" / "summary.json").read_text())["best_heldout"]
    assert f"best held-out step {best['step']}: loss {best['heldout_loss']:.4f}" in out


_DRIVER = r"""
import sys
from tokalign.align.fit.config import FitConfig
from tokalign.align.fit.loop import fit
fit(FitConfig(corpus=sys.argv[1], run_dir=sys.argv[2], lm=sys.argv[3], cache_root=sys.argv[4], steps=30, batch_size=256,
              holdout=256, log_every=10, checkpoint_every=1000, eval_every=15, progress=False))
"""


def _peak_anonymous_rss(args, env) -> int:
    """Peak resident anonymous memory (bytes; mapped corpus pages are file-backed and not counted) of a child."""
    child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while child.poll() is None:
        try:
            status = open(f"/proc/{child.pid}/status").read()
            peak = max(peak, int(status.split("RssAnon:")[1].split()[0]) * 1024)
        except (OSError, IndexError):
            pass
        time.sleep(0.02)
    assert child.returncode == 0, child.stderr.read().decode()[-2000:]
    return peak


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_peak_memory_does_not_grow_with_the_number_of_pairs(tmp_path, tiny_lm, lm_cache, lm):
    from random_corpus import write_random_corpus

    from tokalign.align.lm.captions import text_tokenizer_identity

    identity = text_tokenizer_identity(lm)
    peaks = []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for items in (10_000, 100_000):
        corpus = write_random_corpus(tmp_path / f"c{items}", items, text_tokenizer=identity, vocab_size=lm.vocab_size,
                                     tokens_per_image=64, codebook=1024)
        peaks.append(_peak_anonymous_rss([sys.executable, "-c", _DRIVER, str(corpus), str(tmp_path / f"r{items}"),
                                          tiny_lm, str(lm_cache)], env))
    assert peaks[1] < 1.1 * peaks[0], peaks
