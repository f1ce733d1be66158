"""The FLOPs estimate and the throughput figures the metrics report."""

from __future__ import annotations

import json

import pytest
import torch

from tokalign.generate.train.loop import train
from tokalign.generate.train.throughput import ModelShape, Throughput, device_peak_flops, model_shape


def test_flops_per_token_counts_the_expanded_head_and_attention():
    from tiny_llama import tiny_llama_model

    model = tiny_llama_model(128, tied=True)
    shape = model_shape(model)
    total = sum(p.numel() for p in model.parameters())  # tied: the table once
    assert shape.output_params == 128 * 32 and shape.non_embedding_params == total - 128 * 32
    assert shape.flops_per_token(64) == 6 * total + 12 * 2 * 32 * 64
    # the SmolLM2-135M shape with the 65,600-row vocabulary at 1,152: about 1.1 GFLOP per token
    smol = ModelShape(non_embedding_params=30 * (4 * 576 * 576 * 2 // 3 + 3 * 576 * 1536) + 61 * 576,
                      output_params=65600 * 576, layers=30, d_model=576)
    assert smol.flops_per_token(1152) == pytest.approx(1.1e9, rel=0.1)


def test_mfu_only_where_the_peak_is_known():
    assert device_peak_flops(torch.device("cpu")) is None
    meter = Throughput(1e9, 1e12, world=2)
    meter.add(useful=300, padded=100)
    rates = meter.rates(2.0)
    assert rates["tokens_per_s"] == 200 and rates["useful_tokens_per_s"] == 150 and rates["pad_tokens_per_s"] == 50
    assert rates["mfu"] == pytest.approx(400 * 1e9 / 2.0 / 2e12)


def test_metrics_rows_hold_buckets_and_throughput(make_config):
    result = train(make_config(optim={"steps": 2}))
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2]
    for row in train_rows:
        assert row["tokens"] == row["text_tokens"] + row["image_tokens"] + row["structure_tokens"]
        assert row["useful_tokens_per_s"] > row["pad_tokens_per_s"] > 0 and row["mfu"] is None
        assert row["image_tokens"] == 8 * 16
    assert [r["step"] for r in rows if r["split"] == "heldout"] == [0, 2]
