"""A full disk is a one-line error with nothing half-written: fit (lm/ copy, checkpoints), the LM cache,
tokenize, export and report, each on a small tmpfs (skipped where the test cannot mount one)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cli_run import refused
from reliability_helpers import FIT_FAST, lm_args
from tokalign.align.formats.atomic import is_temp_name


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(kib)``: a tmpfs of that size under the test's folder (unmounted afterwards)."""
    mounted = []

    def make(kib: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _no_temp(root: Path) -> None:
    assert [p for p in root.rglob("*") if is_temp_name(p.name)] == []


@pytest.mark.parametrize("kib", [8, 24, 40, 64])
def test_fit_on_a_full_disk(kib, capsys, small_disk, corpora, tiny_lm, lm_cache):
    disk = small_disk(kib)
    line = refused(capsys, "fit", "--corpus", corpora[0], "--run", disk / "run", *lm_args(tiny_lm, lm_cache), *FIT_FAST)
    assert "disk is full" in line, line
    assert str(disk) in line  # names the path
    _no_temp(disk)


def test_the_lm_cache_on_a_full_disk(capsys, small_disk, corpora, tiny_lm, tmp_path):
    disk = small_disk(8)
    line = refused(capsys, "fit", "--corpus", corpora[0], "--run", tmp_path / "run", "--lm", tiny_lm, "--cache-dir",
                   disk / "cache", "--no-progress", *FIT_FAST)
    assert "cache" in line
    _no_temp(disk)


def test_tokenize_export_and_report_on_a_full_disk(capsys, small_disk, finished_run, tiny_lm, lm_cache, tmp_path):
    from file_fixtures import make_token_npy

    tokens = make_token_npy(tmp_path / "tokens.npy", n=64, grid=16, codebook=64, seed=3)[0]
    disk = small_disk(12)
    line = refused(capsys, "tokenize", "--input", tokens, "--out", disk / "c", "--image-tokenizer", "pretokenized",
                   "--codebook-size", "64", "--grid", "16", "--shard-size", "16", "--workers", "0", "--lm", tiny_lm,
                   "--cache-dir", lm_cache, "--no-progress")
    assert "disk is full" in line
    _no_temp(disk)
    disk = small_disk(4)
    line = refused(capsys, "export", "--run", finished_run, "--to", "generator-init", "--out", disk / "init.safetensors")
    assert "disk is full" in line and not (disk / "init.safetensors").exists()
    _no_temp(disk)
    line = refused(capsys, "report", "--run", finished_run, "--out", disk / "report", "--no-progress")
    assert "disk is full" in line and not (disk / "report").exists()
    _no_temp(disk)
