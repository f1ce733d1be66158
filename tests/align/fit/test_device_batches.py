"""The GPU's batch sources hand every step the batch the host path hands it, and a fit they feed follows the
host path's trajectory (all run here on CPU tensors); the deferred loss check still names the failing step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tokalign.align.errors import TokalignError
from tokalign.align.fit import batches as batch_sources
from tokalign.align.fit import device_batches
from tokalign.align.fit.caption_ids import CaptionIds
from tokalign.align.fit.data_order import EpochOrder
from tokalign.align.fit.guards import LossWatch
from tokalign.align.formats.corpus import open_corpus
from tokalign.align.lm.load import load_frozen_lm


@pytest.mark.parametrize("items,batch,start,count", [(100, 16, 0, 20), (97, 8, 5, 31), (40, 40, 3, 4), (1000, 7, 141, 1)])
def test_epoch_order_batches_are_its_batches_stacked(items, batch, start, count):
    order = EpochOrder(items, batch, seed=4, rank_to_item=lambda r: 2 * r + 1)
    stacked = np.stack([order.batch(s) for s in range(start, start + count)])
    assert np.array_equal(order.batches(start, count), stacked)


def _sources(corpus, lm, captions, local, start, end):
    return {kind.__name__: kind(corpus, captions, lm.embeddings, local, start, end)
            for kind in (batch_sources.HostBatches, device_batches.ResidentBatches, device_batches.StreamedBatches)}


def test_every_source_hands_a_step_the_same_images_and_caption_vectors(synthetic_corpus, tiny_lm, lm_cache, monkeypatch):
    monkeypatch.setattr(device_batches, "CHUNK", 4)  # several index chunks, a start inside one
    corpus = open_corpus(synthetic_corpus(items=90, shard_size=37))
    lm = load_frozen_lm(tiny_lm, lm_cache)
    order = EpochOrder(90, 12, seed=1)
    local = lambda first, n: batch_sources.local_slice(order.batches(first, n), 1, 2)  # noqa: E731  (process 1 of 2)
    sources = _sources(corpus, lm, CaptionIds(corpus), local, 3, 17)
    try:
        for step in range(3, 17):
            got = {name: source.get(step) for name, source in sources.items()}
            bags, text = got.pop("HostBatches")
            assert bags.batch_size == 6
            for counts, vectors in got.values():
                assert torch.equal(vectors, text)
                assert torch.equal(counts.counts / counts.length, bags.matrix().to_dense())
    finally:
        for source in sources.values():
            source.close()


def test_all_caption_vectors_equal_the_per_batch_ones(synthetic_corpus, tiny_lm, lm_cache):
    corpus = open_corpus(synthetic_corpus(items=70, shard_size=30))
    lm = load_frozen_lm(tiny_lm, lm_cache)
    from_shards = CaptionIds(corpus)
    from_cache = CaptionIds(corpus, *corpus.all_caption_ids())  # the run folder's re-tokenized cache
    indices = np.array([69, 0, 31, 30, 29, 5])
    for captions in (from_shards, from_cache):
        every = captions.all_vectors(lm.embeddings)
        assert every.shape == (70, lm.d_model)
        assert torch.equal(every[torch.from_numpy(indices)], captions.vectors(lm.embeddings, indices))


@pytest.mark.parametrize("kind", ["ResidentBatches", "StreamedBatches"])
def test_a_fit_fed_by_a_device_source_follows_the_host_trajectory(kind, synthetic_corpus, tmp_path, tiny_lm, lm_cache,
                                                                  monkeypatch):
    from tokalign.align.fit import loop
    from tokalign.align.fit.config import FitConfig
    from tokalign.align.fit.table import load_table

    corpus = synthetic_corpus(items=100)
    config = lambda run: FitConfig(corpus=corpus, run_dir=tmp_path / run, lm=tiny_lm, cache_root=lm_cache,  # noqa: E731
                                   steps=7, batch_size=16, holdout=16, warmup_steps=2, log_every=1, checkpoint_every=4,
                                   progress=False, lr=1e-2)
    host = loop.fit(config("host"))
    monkeypatch.setattr(loop, "open_batches", getattr(device_batches, kind))
    device = loop.fit(config("device"))
    rows = lambda run: [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    losses = lambda run: [r["loss"] for r in rows(run) if "loss" in r]  # noqa: E731
    assert len(losses("device")) == 7
    np.testing.assert_allclose(losses("device"), losses("host"), rtol=1e-5)
    torch.testing.assert_close(load_table(tmp_path / "device" / "table.safetensors")[0],
                               load_table(tmp_path / "host" / "table.safetensors")[0], rtol=1e-4, atol=1e-6)
    assert device.steady_pairs_per_s > 0 and device.pairs_per_s > 0


def test_the_deferred_loss_check_names_the_first_failing_step():
    watch = LossWatch(every_step=False, peak_lr=0.1)
    for step, value in enumerate([1.0, 2.0, float("nan"), float("inf")], start=4):
        watch.record(torch.tensor(value), step, lr=0.05)  # nothing read yet
    with pytest.raises(TokalignError, match=r"nan at step 6 \(learning rate 0.05\).*lower --lr \(e.g. 0.01\)"):
        watch.flush()
    watch.record(torch.tensor(3.0), 8, lr=0.05)
    watch.flush()  # finite: passes, and nothing is left pending
    assert watch.pending == []
    with pytest.raises(TokalignError, match="inf at step 2"):
        LossWatch(every_step=True, peak_lr=0.1).record(torch.tensor(float("inf")), 2, lr=0.1)
