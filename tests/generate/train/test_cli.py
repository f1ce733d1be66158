"""``tokalign generator train`` from the command line: a good run, and bad input refused in one line."""

from __future__ import annotations

import fcntl
import json
import os

import pytest
import torch

from cli_run import refused, run_main

from tokalign.align.formats.outputs import LOCK

IMAGE_TOKENIZER = {"kind": "synthetic", "codebook_size": 64, "grid": [4, 16 // 4], "sha256": "0" * 64}


@pytest.fixture(scope="module")
def base(gen_lm):
    from tokalign.generate.model.base import load_base_lm

    return load_base_lm(gen_lm)


@pytest.fixture
def export(tmp_path, base):
    """``export(codebook=64, sha=None, image_tokenizer=None, name=...)`` writes a generator-init file."""
    from tokalign.align.formats.generator_init import SPECIAL_TOKENS, VocabLayout, write_generator_init

    def write(codebook=64, sha=None, image_tokenizer=None, name="init.safetensors"):
        g = torch.Generator().manual_seed(0)
        image, special = torch.randn(codebook, base.d_model, generator=g), torch.randn(len(SPECIAL_TOKENS), base.d_model, generator=g)
        meta = {"lm": base.identity, "lm_spec": base.spec, "lm_embedding_sha256": sha or base.embedding_sha256,
                "d_model": base.d_model, "image_tokenizer": image_tokenizer or dict(IMAGE_TOKENIZER, codebook_size=codebook),
                "source_run": "test", "source_table_sha256": "", "source_steps": "0", "rescale": {}, "special_init": {}}
        path = tmp_path / name
        write_generator_init(path, image, special, VocabLayout(base.text_rows, codebook), meta)
        return path

    return write


def test_train_aligned_from_the_cli(capsys, cli_args, tmp_path, export):
    run = tmp_path / "run"
    code, out, err = run_main(capsys, *cli_args(run, "--init", "aligned", "--init-from", export()))
    assert code == 0, err
    assert "model:" in out and "step 0: held-out perplexity" in out and "step 2: held-out perplexity" in out
    assert "held-out image loss" in out and "(unigram entropy of the corpus's image tokens:" in out
    assert (run / "model" / "tokalign_generator.json").is_file()
    record = json.loads((run / "run.json").read_text())
    assert record["format"] == "tokalign-generator-run"
    assert record["init"]["input_rows"][1]["from"].startswith("generator-init")
    diagnostics = json.loads((run / "diagnostics.json").read_text())
    assert diagnostics["heldout"]["image_loss"] > 0
    summary = json.loads((run / "summary.json").read_text())  # auto is recorded with what it ran (tiny: fp32)
    assert summary["precision"] == {"requested": "auto", "resolved": "fp32"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"train", "heldout"} and rows[0]["step"] == 0
    # the same folder again: refused without --resume
    line = refused(capsys, *cli_args(run, "--init", "aligned", "--init-from", export()))
    assert "already holds a generator run" in line and "--resume" in line


BAD = {
    "export for another LM": (lambda e: ["--init", "aligned", "--init-from", e(sha="f" * 64)], "another LM"),
    "export for another codebook": (lambda e: ["--init", "aligned", "--init-from", e(codebook=32)], "32-code"),
    "export for another image tokenizer": (
        lambda e: ["--init", "aligned", "--init-from", e(image_tokenizer=dict(IMAGE_TOKENIZER, sha256="1" * 64))],
        "image tokenizer"),
    "aligned without export": (lambda e: ["--init", "aligned"], "--init-from"),
    "init-from without aligned": (lambda e: ["--init", "mean", "--init-from", e()], "only read by --init aligned"),
    "unknown init": (lambda e: ["--init", "clever"], "--init"),
    "unknown preset": (lambda e: ["--init", "mean", "--train-only", "heads"], "--train-only"),
    "too-short seq-len": (lambda e: ["--init", "mean", "--seq-len", "20"], "--seq-len 20 is too short"),
    "global batch too small to split": (lambda e: ["--init", "mean", "--micro-batch", "0"], "--micro-batch"),
    "caption dropout without captions": (lambda e: ["--init", "mean", "--mode", "image-only"],
                                         "pass --caption-dropout 0"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_in_one_line(capsys, cli_args, tmp_path, export, case):
    extra, words = BAD[case]
    run = tmp_path / "new-run"
    args = cli_args(run, *extra(export))
    line = refused(capsys, *args)
    assert words in line, line
    assert not run.exists(), f"{case}: the refused run left {list(run.iterdir())}"


def test_a_corpus_made_with_another_tokenizer_is_refused(capsys, cli_args, tmp_path):
    from tiny_llama import make_tiny_llama

    other = make_tiny_llama(tmp_path / "other-lm", ["some", "other", "words"])
    run = tmp_path / "run"
    line = refused(capsys, *cli_args(run, "--init", "mean", lm=other))
    assert "tokenized with" in line and "--lm" in line
    assert not run.exists() or not (run / "sequences").exists()


@pytest.mark.parametrize("content", ["user-file", "fit-run", "file"])
def test_a_run_folder_of_another_kind_is_refused(capsys, cli_args, tmp_path, content):
    run = tmp_path / "run"
    if content == "file":
        run.write_text("not a folder")
    else:
        run.mkdir()
        name = "notes.txt" if content == "user-file" else "config.json"
        (run / name).write_text("{}")
    before = sorted(p.name for p in run.iterdir()) if run.is_dir() else run.read_text()
    line = refused(capsys, *cli_args(run, "--init", "mean"))
    assert "another --run" in line
    assert (sorted(p.name for p in run.iterdir()) if run.is_dir() else run.read_text()) == before


def test_resume_without_a_run_is_refused(capsys, cli_args, tmp_path):
    line = refused(capsys, *cli_args(tmp_path / "run", "--init", "mean", "--resume"))
    assert "nothing to resume" in line


def test_a_second_writer_is_refused(capsys, cli_args, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    fd = os.open(run / LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process writing this run
        line = refused(capsys, *cli_args(run, "--init", "mean"))
        assert "being written by another tokalign process" in line
    finally:
        os.close(fd)
    assert sorted(p.name for p in run.iterdir()) == [LOCK]


def test_a_missing_tracker_is_refused(capsys, cli_args, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    line = refused(capsys, *cli_args(tmp_path / "run", "--init", "mean", "--report-to", "wandb"))
    assert "pip install wandb" in line


def test_a_run_inside_the_corpus_is_refused(capsys, cli_args, gen_corpus):
    before = sorted(p.name for p in gen_corpus.iterdir())
    line = refused(capsys, *cli_args(gen_corpus / "run", "--init", "mean"))
    assert "input" in line and "--run" in line
    assert sorted(p.name for p in gen_corpus.iterdir()) == before
