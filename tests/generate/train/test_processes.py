"""Two CPU processes (``accelerate launch``, gloo) follow the one-process trajectory on the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["split"], r["loss"], r["image_loss"], r["tokens"]) for r in rows]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_give_the_same_losses_as_one(cli_args, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    args = lambda run: cli_args(tmp_path / run, "--init", "random-rows", "--steps", "3", "--log-every", "1",  # noqa: E731
                                "--eval-every", "2", "--caption-dropout", "0.25")
    single = subprocess.run([sys.executable, "-m", "tokalign.cli.main", *args("one")], env=env, capture_output=True,
                            text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--main_process_port", str(_free_port()), "--mixed_precision", "no",
              "--dynamo_backend", "no", "-m", "tokalign.cli.main", *args("two")]
    double = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=240)
    assert double.returncode == 0, double.stderr[-3000:]
    assert double.stdout.count("model:") == 1  # only the main process reports

    processes = lambda run: json.loads((tmp_path / run / "run.json").read_text())["processes"]  # noqa: E731
    assert (processes("one"), processes("two")) == (1, 2)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert [r[:2] + r[4:] for r in one] == [r[:2] + r[4:] for r in two]  # same steps, same target counts
    for a, b in zip(one, two):
        assert b[2] == pytest.approx(a[2], rel=1e-5) and b[3] == pytest.approx(a[3], rel=1e-5), (a, b)
    wa = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=1e-5, msg=key)
