"""A diverging fit stops; resume refuses what it cannot continue and repairs what it can."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_run import refused, run_main
from reliability_helpers import FIT_FAST, lm_args
from tokalign.align.errors import TokalignError
from tokalign.align.fit import guards


def _copy_run(run: Path, base: Path) -> Path:
    return Path(shutil.copytree(run, base / "run"))


def _fit(capsys, corpus, run, tiny_lm, lm_cache, *extra):
    return run_main(capsys, "fit", "--corpus", corpus, "--run", run, *lm_args(tiny_lm, lm_cache), *FIT_FAST, *extra)


def test_a_huge_learning_rate_stops_the_fit_naming_the_step_and_the_fix(capsys, tmp_path, corpora, tiny_lm, lm_cache):
    line = refused(capsys, "fit", "--corpus", corpora[0], "--run", tmp_path / "run", *lm_args(tiny_lm, lm_cache),
                   *FIT_FAST[:-4], "--lr", "1e308")
    assert "diverged" in line and "at step 2" in line and "--lr" in line
    assert not (tmp_path / "run" / "table.safetensors").exists()


def test_the_logit_scale_is_clamped_on_both_sides():
    scale = torch.nn.Parameter(torch.tensor(-3.0))
    guards.clamp_logit_scale_(scale, math.log(100))
    assert scale.item() == 0.0
    scale.data.fill_(9.0)
    guards.clamp_logit_scale_(scale, math.log(100))
    assert scale.item() == pytest.approx(math.log(100))


def test_finite_loss_check_names_step_and_fix():
    guards.check_finite_loss(torch.tensor(1.0), 3, 0.1, 0.1)
    with pytest.raises(TokalignError, match=r"nan at step 7 .*lower --lr \(e.g. 0.01\)"):
        guards.check_finite_loss(torch.tensor(float("nan")), 7, 0.1, 0.1)


def test_export_and_the_generator_reader_refuse_non_finite_rows(capsys, tmp_path, finished_run):
    from safetensors.numpy import load_file, save_file

    from tokalign.align.formats import generator_init as gi
    from tokalign.align.formats import run_folder as rd
    from tokalign.align.formats.hashing import tensors_sha256

    init = tmp_path / "init.safetensors"
    assert run_main(capsys, "export", "--run", finished_run, "--to", "generator-init", "--out", init)[0] == 0
    from safetensors import safe_open

    with safe_open(str(init), framework="numpy") as handle:
        header = dict(handle.metadata())
    tensors = load_file(str(init))
    tensors["image_rows"][0, 0] = np.nan
    header["tensor_sha256"] = tensors_sha256(tensors)
    header["metadata_sha256"] = gi.metadata_sha256(header)
    save_file(tensors, str(init), metadata=header)  # damaged, but its own checksums pass
    with pytest.raises(TokalignError, match="NaN or infinite"):
        gi.read_generator_init(init)

    run = _copy_run(finished_run, tmp_path)
    table, meta = rd.read_table(run / rd.TABLE)
    table[3] = np.inf
    meta = {k: v for k, v in meta.items() if k not in ("format", "version", "tensor_sha256")}
    save_file({"image_embeddings": table, "logit_scale": np.zeros(1, np.float32)}, str(run / rd.TABLE),
              metadata=rd.table_header(meta))  # a table from before checksums: read unverified
    line = refused(capsys, "export", "--run", run, "--to", "generator-init", "--out", tmp_path / "nan.safetensors")
    assert "NaN or infinite" in line and not (tmp_path / "nan.safetensors").exists()


def test_a_damaged_table_fails_its_checksum(capsys, tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path)
    data = bytearray((run / "table.safetensors").read_bytes())
    data[-9] ^= 0x40  # one float of the table (same size, still parses)
    (run / "table.safetensors").write_bytes(bytes(data))
    assert "checksum" in refused(capsys, "neighbors", "--run", run, "--image-token", "0")


def test_resume_on_another_corpus_of_the_same_size_is_refused(capsys, tmp_path, corpora, finished_run, tiny_lm, lm_cache):
    run = _copy_run(finished_run, tmp_path)
    (run / "summary.json").unlink()  # as if killed after the last checkpoint
    before = sorted(p.name for p in run.rglob("*"))
    line = refused(capsys, "fit", "--corpus", corpora[1], "--run", run, *lm_args(tiny_lm, lm_cache), *FIT_FAST, "--resume")
    assert "not the corpus the run was fit on" in line
    assert sorted(p.name for p in run.rglob("*")) == before


def test_a_kill_before_the_summary_resumes_to_the_same_finite_figures(capsys, tmp_path, corpora, finished_run,
                                                                      tiny_lm, lm_cache):
    run = _copy_run(finished_run, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    for name in ("summary.json", "table.safetensors", "eval.json"):
        (run / name).unlink()
    (run / ".config.json.k1ll3d00.json.tmp").write_text("half")  # leftovers of the killed writer
    (run / "checkpoints" / ".step_6.abcdefgh.tmp").mkdir()
    code, _, err = _fit(capsys, corpora[0], run, tiny_lm, lm_cache, "--resume")
    assert code == 0, err
    text = (run / "summary.json").read_text()
    assert "NaN" not in text
    again = json.loads(text)
    assert again["final_loss"] == summary["final_loss"] and math.isfinite(again["final_loss"])
    assert not list(run.rglob(".*.tmp")) and not (run / ".tokalign.lock").exists()


def test_report_reads_metrics_with_a_cut_off_last_line(capsys, tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path)
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text + '{"step": 5, "loss": 1.2')
    code, out, err = run_main(capsys, "report", "--run", run, "--no-progress")
    assert code == 0, err


def test_a_hub_id_without_network_fails_fast_in_one_line(capsys, tmp_path, corpora, tiny_lm, lm_cache, monkeypatch):
    import time

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.monotonic()
    line = refused(capsys, "fit", "--corpus", corpora[0], "--run", tmp_path / "run", "--lm", "someone/some-model",
                   "--cache-dir", lm_cache, "--no-progress", *FIT_FAST)
    assert "someone/some-model" in line and time.monotonic() - start < 20


def test_seeds_are_unsigned_64_bit():
    assert guards.check_seed(2 ** 64 - 1) == 2 ** 64 - 1
    for bad in (-1, 2 ** 64, True):
        with pytest.raises(TokalignError, match="64-bit"):
            guards.check_seed(bad)


def test_a_second_fit_on_a_run_being_written_is_refused(capsys, tmp_path, corpora, finished_run, tiny_lm, lm_cache):
    from tokalign.align.formats.lock import exclusive_lock

    run = _copy_run(finished_run, tmp_path)
    (run / "summary.json").unlink()
    with exclusive_lock(run, "fit", "--run"):
        line = refused(capsys, "fit", "--corpus", corpora[0], "--run", run, *lm_args(tiny_lm, lm_cache), *FIT_FAST,
                       "--resume")
    assert "being written by another tokalign process" in line and not (run / "summary.json").exists()


def test_corpus_check_passes_a_sound_corpus(capsys, corpora):
    code, out, err = run_main(capsys, "corpus", "check", corpora[0])
    assert code == 0 and "96 items in 2 shards" in out and out.rstrip().endswith("OK"), err
