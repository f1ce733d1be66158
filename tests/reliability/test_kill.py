"""SIGKILL during `fit` and `tokenize` at start-up, mid-run and before the final writes: the resumed result
equals an uninterrupted run, and no temp file or lock is left.

The kills are exact: ``TOKALIGN_CRASH_AT=POINT`` makes the command SIGKILL itself at a crash point
(``tokalign.align.formats.faults``).  Each test chains the kills on one folder, resuming after each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from reliability_helpers import FIT_FAST, lm_args
from tokalign.align.formats import outputs
from tokalign.align.formats.atomic import is_temp_name

pytestmark = pytest.mark.slow


def _cli(args, cwd: Path, crash: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env.pop("TOKALIGN_CRASH_AT", None)
    if crash:
        env["TOKALIGN_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-m", "tokalign.cli.main", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _killed(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-2000:])


def _leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if is_temp_name(p.name) or p.name == outputs.LOCK]


def _tensors(path: Path) -> dict[str, bytes]:
    with safe_open(str(path), framework="numpy") as handle:
        return {k: handle.get_tensor(k).tobytes() for k in handle.keys()}


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


def test_fit_killed_at_start_up_mid_run_and_before_its_final_writes_resumes_to_the_same_run(
        tmp_path, corpora, tiny_lm, lm_cache):
    fit = ["fit", "--corpus", corpora[0], *lm_args(tiny_lm, lm_cache), *FIT_FAST]
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert _cli([*fit, "--run", reference], tmp_path).returncode == 0
    _killed(_cli([*fit, "--run", run], tmp_path, crash="fit:locked"))
    _killed(_cli([*fit, "--run", run], tmp_path, crash="fit:step:3"))  # after the step-2 checkpoint
    _killed(_cli([*fit, "--run", run, "--resume"], tmp_path, crash="fit:final"))  # after the last checkpoint
    done = _cli([*fit, "--run", run, "--resume"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _tensors(run / "table.safetensors") == _tensors(reference / "table.safetensors")
    assert _losses(run) == _losses(reference)
    summary, expected = (json.loads((r / "summary.json").read_text()) for r in (run, reference))
    assert summary["final_loss"] == expected["final_loss"] and summary["holdout"] == expected["holdout"]
    assert _leftovers(run) == []


def test_tokenize_killed_at_every_stage_resumes_to_the_same_corpus(capsys, tmp_path, tiny_lm, lm_cache):
    from file_fixtures import make_token_npy

    from cli_run import run_main

    tokens = make_token_npy(tmp_path / "tokens.npy", n=8, grid=4, codebook=64, seed=3)[0]
    command = ["tokenize", "--input", tokens, "--image-tokenizer", "pretokenized", "--codebook-size", "64", "--grid",
               "4", "--shard-size", "2", "--workers", "0", "--lm", tiny_lm, "--cache-dir", lm_cache, "--no-progress"]
    reference, out = tmp_path / "reference", tmp_path / "corpus"
    assert run_main(capsys, *command, "--out", reference)[0] == 0
    _killed(_cli([*command, "--out", out], tmp_path, crash="tokenize:locked"))
    for point in ("tokenize:startup", "tokenize:part:1", "tokenize:finish"):
        _killed(_cli([*command, "--out", out, "--resume"], tmp_path, crash=point))
    done = _cli([*command, "--out", out, "--resume"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]

    def content(root: Path) -> dict[str, object]:
        return {p.relative_to(root).as_posix(): (_tensors(p) if p.suffix == ".safetensors" else p.read_bytes())
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert content(out) == content(reference)
    assert _leftovers(out) == []
