"""Two CPU processes (``accelerate launch``, gloo) follow the single-process trajectory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from tokalign.align.fit.table import load_table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fit_args(corpus, run, tiny_lm, lm_cache):
    return ["fit", "--corpus", str(corpus), "--run", str(run), "--lm", tiny_lm, "--cache-dir", str(lm_cache),
            "--steps", "5", "--batch-size", "16", "--holdout", "16", "--warmup-steps", "1", "--lr", "0.01",
            "--no-progress", "--checkpoint-every", "5"]


def test_two_processes_give_the_same_table_as_one(synthetic_corpus, tmp_path, tiny_lm, lm_cache):
    corpus = synthetic_corpus()
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    single = subprocess.run([sys.executable, "-m", "tokalign.cli.main", *_fit_args(corpus, tmp_path / "one", tiny_lm, lm_cache)],
                            env=env, capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-2000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--main_process_port", str(_free_port()), "--mixed_precision", "no",
              "--dynamo_backend", "no", "-m", "tokalign.cli.main", *_fit_args(corpus, tmp_path / "two", tiny_lm, lm_cache)]
    double = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=240)
    assert double.returncode == 0, double.stderr[-2000:]
    assert double.stdout.count("final loss") == 1  # only the main process reports

    processes = lambda run: json.loads((tmp_path / run / "config.json").read_text())["processes"]  # noqa: E731
    assert (processes("one"), processes("two")) == (1, 2)
    one, meta_one = load_table(tmp_path / "one" / "table.safetensors")
    two, meta_two = load_table(tmp_path / "two" / "table.safetensors")
    assert not torch.equal(one, torch.zeros_like(one))
    torch.testing.assert_close(two, one, rtol=1e-4, atol=1e-5)
    assert float(meta_two["final_loss"]) == pytest.approx(float(meta_one["final_loss"]), rel=1e-4)
    assert float(meta_two["final_logit_scale"]) == pytest.approx(float(meta_one["final_logit_scale"]), rel=1e-5)
