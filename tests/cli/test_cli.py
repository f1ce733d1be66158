"""The ``tokalign`` console script: what it prints, what it writes, and how it refuses bad input.

Policy: the entry point is ``tokalign.cli.main:main``.  Bad user input gives a
one-line error on stderr (``error: ...``), exit status 2, no traceback, and no
half-written output: a fit refused before training creates no run folder, a
refused ``--resume`` leaves the run folder exactly as it was, and no stray
``.*.tmp`` files stay behind.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tokalign.cli.main import cli
from cli_run import refused, run_main

FAST = ("--steps", "4", "--batch-size", "16", "--holdout", "16", "--warmup-steps", "1", "--lr", "0.01")


# ------------------------------------------------------------------ helpers


def lm_args(tiny_lm, lm_cache) -> list[str]:
    return ["--lm", str(tiny_lm), "--cache-dir", str(lm_cache), "--no-progress"]


def fit_args(corpus, run, tiny_lm, lm_cache, *extra) -> list[str]:
    return ["fit", "--corpus", str(corpus), "--run", str(run), *lm_args(tiny_lm, lm_cache), *FAST, *map(str, extra)]


def invoke(*args):
    """Run the click group in-process (for output); return the click Result."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)






def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every entry under ``folder`` with its mtime and bytes (folders: mtime only)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        stat = path.stat()
        out[str(path.relative_to(folder))] = (stat.st_mtime_ns, path.read_bytes() if path.is_file() else b"")
    return out


def stray_temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.name.endswith((".tmp", ".old"))]


def assert_nothing_written(tmp_path: Path, run: Path) -> None:
    assert not run.exists(), f"{run} was created: {sorted(p.name for p in run.rglob('*'))}"
    assert stray_temp_files(tmp_path) == []


@pytest.fixture
def lm(tiny_lm, lm_cache):
    from tokalign.align.lm.load import load_frozen_lm

    return load_frozen_lm(tiny_lm, lm_cache)


def _fit_through_main(capsys, corpus, run, tiny_lm, lm_cache, *extra) -> str:
    code, out, err = run_main(capsys, *fit_args(corpus, run, tiny_lm, lm_cache, *extra))
    assert code == 0, err
    return out


@pytest.fixture
def finished_run(synthetic_corpus, tmp_path, tiny_lm, lm_cache, capsys):
    """(corpus, run) of a finished 4-step fit made through the CLI."""
    corpus, run = synthetic_corpus(), tmp_path / "run"
    _fit_through_main(capsys, corpus, run, tiny_lm, lm_cache)
    return corpus, run


@pytest.fixture
def stopped_run(synthetic_corpus, tmp_path, tiny_lm, lm_cache, capsys):
    """(corpus, run) of a 4-step fit stopped (and checkpointed) after 2 steps."""
    corpus, run = synthetic_corpus(), tmp_path / "run"
    out = _fit_through_main(capsys, corpus, run, tiny_lm, lm_cache, "--stop-after", "2")
    assert "stopped at step 2/4" in out and "--resume" in out
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_2"]
    return corpus, run


# ------------------------------------------------------------------ the entry point itself
def test_help_is_shown_in_full_and_an_unknown_command_gets_one_line(capsys):
    code, out, _ = run_main(capsys, "--help")
    assert code == 0 and "fit" in out and "demo-corpus" in out
    code, out, _ = run_main(capsys, "fit", "--help")
    assert code == 0 and "--resume" in out and "--no-progress" in out
    code, out, err = run_main(capsys)  # bare `tokalign`: the whole help, not squeezed into an error line
    assert code in (0, 2) and "Commands:" in out + err and len((out + err).splitlines()) > 5
    assert "No such command" in refused(capsys, "no-such-command")


def test_console_script_exits_2_with_one_line_on_bad_input(tmp_path):
    script = Path(sys.executable).parent / "tokalign"
    if not script.is_file():
        pytest.skip("the tokalign console script is not installed beside this interpreter")
    done = subprocess.run([str(script), "fit", "--corpus", str(tmp_path / "c"), "--run", str(tmp_path / "r"),
                           "--steps", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: --steps 0 must be a positive integer"]
    assert done.stdout == "" and not (tmp_path / "r").exists()


# ------------------------------------------------------------------ success paths
def test_fit_end_to_end_prints_loss_temperature_and_heldout_recall_and_writes_the_run_folder(
        synthetic_corpus, tmp_path, tiny_lm, lm_cache):
    corpus, run = synthetic_corpus(), tmp_path / "run"
    result = invoke(*fit_args(corpus, run, tiny_lm, lm_cache))
    assert result.exit_code == 0, result.output

    out = result.stdout
    summary = json.loads((run / "summary.json").read_text())
    evaluation = json.loads((run / "eval.json").read_text())
    assert f"run: {run}" in out
    match = re.search(r"final loss (\d+\.\d{4})\s+temperature (\d+\.\d{4})", out)
    assert match, out
    assert float(match.group(1)) == pytest.approx(summary["final_loss"], abs=1e-4)
    assert float(match.group(2)) == pytest.approx(summary["temperature"], abs=1e-4)
    assert "held-out retrieval over 16 pairs (chance in brackets)" in out
    for direction, name in (("i2t", "image->text"), ("t2i", "text->image")):
        line = next(x for x in out.splitlines() if x.strip().startswith(name))
        for k, chance in (("R@1", "0.0625"), ("R@5", "0.3125")):  # 1/16 and 5/16
            assert f"{k} {evaluation[direction][k]:.3f} [{chance}]" in line, line

    names = {p.name for p in run.iterdir()}
    assert {"config.json", "metrics.jsonl", "checkpoints", "table.safetensors", "eval.json", "summary.json", "lm"} <= names
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_4"]
    assert (run / "lm" / "embeddings.safetensors").is_file()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 4
    assert summary["steps"] == 4 and evaluation["pairs"] == 16
    assert stray_temp_files(tmp_path) == []


def test_demo_corpus_through_the_cli_is_accepted_by_fit_and_if_missing_leaves_it_alone(
        tmp_path, tiny_lm, lm_cache, capsys):
    out = tmp_path / "demo"
    tiny = ("--items", "40", "--codebook-size", "16", "--codebook-images", "8")
    code, stdout, err = run_main(capsys, "demo-corpus", "--out", out, *tiny, *lm_args(tiny_lm, lm_cache))
    assert code == 0, err
    assert f"corpus: {out}" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["items"] == 40 and manifest["image_tokenizer"]["codebook_size"] == 16
    assert stray_temp_files(tmp_path) == []

    before = snapshot(out)
    result = invoke("demo-corpus", "--out", out, *tiny, *lm_args(tiny_lm, lm_cache), "--if-missing")
    assert result.exit_code == 0 and "already built" in result.stdout
    assert snapshot(out) == before

    # without --if-missing or --force an existing corpus is refused, and kept
    message = refused(capsys, "demo-corpus", "--out", out, *tiny, *lm_args(tiny_lm, lm_cache))
    assert "already holds a corpus" in message and "--force" in message
    assert snapshot(out) == before

    run = tmp_path / "run"
    code, stdout, err = run_main(capsys, *fit_args(out, run, tiny_lm, lm_cache))
    assert code == 0, err
    assert "held-out retrieval over 16 pairs" in stdout
    assert (run / "table.safetensors").is_file()


# ------------------------------------------------------------------ a bad corpus
def test_missing_corpus_folder_is_refused(tmp_path, tiny_lm, lm_cache, capsys):
    run = tmp_path / "run"
    message = refused(capsys, *fit_args(tmp_path / "nowhere", run, tiny_lm, lm_cache))
    assert "does not exist" in message and "nowhere" in message
    assert_nothing_written(tmp_path, run)


def test_folder_without_manifest_is_refused(tmp_path, tiny_lm, lm_cache, capsys):
    corpus, run = tmp_path / "half-built", tmp_path / "run"
    (corpus / "shards").mkdir(parents=True)
    message = refused(capsys, *fit_args(corpus, run, tiny_lm, lm_cache))
    assert "manifest.json" in message
    assert_nothing_written(tmp_path, run)


def _truncate(shard: Path) -> None:
    shard.write_bytes(shard.read_bytes()[:-100])


def _corrupt_header(shard: Path) -> None:
    data = bytearray(shard.read_bytes())
    data[:8] = b"garbage!"
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, words", [
    (_truncate, ("truncated",)),
    (_corrupt_header, ("corrupt",)),
    (Path.unlink, ("missing",)),
], ids=["truncated", "corrupt-header", "missing"])
def test_damaged_shard_is_refused(damage, words, synthetic_corpus, tmp_path, tiny_lm, lm_cache, capsys):
    corpus, run = synthetic_corpus(), tmp_path / "run"
    shard = corpus / "shards" / "shard-00000.safetensors"
    size = shard.stat().st_size
    damage(shard)
    if damage is _corrupt_header:
        assert shard.stat().st_size == size
    message = refused(capsys, *fit_args(corpus, run, tiny_lm, lm_cache))
    assert "shard-00000.safetensors" in message
    assert all(w in message for w in words), message
    assert_nothing_written(tmp_path, run)


def test_image_token_beyond_the_codebook_is_refused_naming_token_and_codebook(
        synthetic_corpus, tmp_path, tiny_lm, lm_cache, capsys):
    from tokalign.align.formats.corpus import open_corpus

    corpus, run = synthetic_corpus(), tmp_path / "run"
    opened = open_corpus(corpus)
    first_shard_max = int(next(opened.iter_shards())[1].max())
    assert first_shard_max >= 8
    del opened
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["image_tokenizer"]["codebook_size"] = 8
    (corpus / "manifest.json").write_text(json.dumps(manifest))

    message = refused(capsys, *fit_args(corpus, run, tiny_lm, lm_cache))
    assert f"image token id {first_shard_max}" in message and "8 entries" in message and "codebook" in message
    assert_nothing_written(tmp_path, run)


def test_empty_caption_is_refused(tmp_path, lm, tiny_lm, lm_cache, capsys):
    from tokalign.align.lm.captions import text_tokenizer_identity
    from tokalign.align.formats.corpus import CorpusWriter
    from tokalign.align.lm.load import tokenize_captions

    corpus, run = tmp_path / "corpus", tmp_path / "run"
    writer = CorpusWriter(corpus, image_tokenizer={"kind": "synthetic", "codebook_size": 64, "grid": [4, 4], "sha256": "0" * 64},
                          text_tokenizer=text_tokenizer_identity(lm), tokens_per_image=16, shard_size=24)
    rng = np.random.default_rng(0)
    captions = ["a red circle", "a small blue square", "green star"] * 16
    captions[7] = ""
    for i, (caption, ids) in enumerate(zip(captions, tokenize_captions(lm.tokenizer, captions))):
        writer.add(rng.integers(0, 64, size=16).astype(np.uint16), ids, caption, key=f"item-{i}")
    writer.finish()
    assert len(tokenize_captions(lm.tokenizer, [""])[0]) == 0

    message = refused(capsys, *fit_args(corpus, run, tiny_lm, lm_cache))
    assert "empty" in message and "item 7" in message and "item-7" in message
    assert_nothing_written(tmp_path, run)


def _manifest_not_json(m: dict):
    return "{not json"


def _manifest_version_2(m: dict):
    return json.dumps(dict(m, version=2))


def _manifest_shard_without_bytes(m: dict):
    m["shards"][0].pop("bytes")
    return json.dumps(m)


def _manifest_shard_not_an_object(m: dict):
    m["shards"][0] = "shard-00000"
    return json.dumps(m)


@pytest.mark.parametrize("rewrite", [_manifest_not_json, _manifest_version_2, _manifest_shard_without_bytes,
                                     _manifest_shard_not_an_object],
                         ids=["not-json", "version-2", "shard-without-bytes", "shard-not-an-object"])
def test_damaged_manifest_is_refused(rewrite, synthetic_corpus, tmp_path, tiny_lm, lm_cache, capsys):
    corpus, run = synthetic_corpus(), tmp_path / "run"
    manifest = corpus / "manifest.json"
    manifest.write_text(rewrite(json.loads(manifest.read_text())))
    message = refused(capsys, *fit_args(corpus, run, tiny_lm, lm_cache))
    assert "manifest.json" in message or "version" in message
    assert_nothing_written(tmp_path, run)


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_demo_corpus_refuses_to_replace_a_folder_that_is_not_a_corpus(force, tmp_path, tiny_lm, lm_cache, capsys):
    out = tmp_path / "my-project"
    (out / "src").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me\n")
    before = snapshot(out)
    args = ["demo-corpus", "--out", out, "--items", "40", "--codebook-size", "16", "--codebook-images", "8",
            *lm_args(tiny_lm, lm_cache), *(["--force"] if force else [])]
    message = refused(capsys, *args)
    assert "my-project" in message
    assert snapshot(out) == before
    assert stray_temp_files(tmp_path) == []


# ------------------------------------------------------------------ --resume and existing runs
def test_resume_without_a_checkpoint_is_refused_and_creates_or_changes_nothing(
        synthetic_corpus, tmp_path, tiny_lm, lm_cache, capsys):
    corpus = synthetic_corpus()
    empty = tmp_path / "empty-run"
    empty.mkdir()
    message = refused(capsys, *fit_args(corpus, empty, tiny_lm, lm_cache, "--resume"))
    assert "nothing to resume" in message and "--resume" in message
    assert list(empty.iterdir()) == []

    absent = tmp_path / "absent-run"
    message = refused(capsys, *fit_args(corpus, absent, tiny_lm, lm_cache, "--resume"))
    assert "nothing to resume" in message
    assert_nothing_written(tmp_path, absent)


def test_resume_with_a_corpus_of_another_codebook_is_refused_and_leaves_the_run_alone(
        stopped_run, synthetic_corpus, tmp_path, tiny_lm, lm_cache, capsys):
    _, run = stopped_run
    other = synthetic_corpus("corpus-32", codebook=32)
    before = snapshot(run)
    message = refused(capsys, *fit_args(other, run, tiny_lm, lm_cache, "--resume"))
    assert "code" in message and "64" in message and "32" in message
    assert snapshot(run) == before
    assert stray_temp_files(tmp_path) == []


def test_resume_with_other_trajectory_settings_is_refused_naming_them(stopped_run, tmp_path, tiny_lm, lm_cache, capsys):
    corpus, run = stopped_run
    before = snapshot(run)
    message = refused(capsys, *fit_args(corpus, run, tiny_lm, lm_cache, "--resume", "--lr", "0.05"))
    assert re.search(r"\blr\b", message) and "--resume" in message
    assert snapshot(run) == before

    message = refused(capsys, *fit_args(corpus, run, tiny_lm, lm_cache, "--resume", "--seed", "3", "--steps", "5"))
    assert "seed" in message and "steps" in message
    assert snapshot(run) == before
    assert stray_temp_files(tmp_path) == []


@pytest.mark.parametrize("damage", [_truncate, _corrupt_header], ids=["truncated", "corrupt-header"])
def test_resume_from_a_damaged_checkpoint_is_refused_and_leaves_the_run_alone(
        damage, stopped_run, tmp_path, tiny_lm, lm_cache, capsys):
    corpus, run = stopped_run
    damage(run / "checkpoints" / "step_2" / "state.safetensors")
    before = snapshot(run)
    message = refused(capsys, *fit_args(corpus, run, tiny_lm, lm_cache, "--resume"))
    assert "step_2" in message and "damaged" in message
    assert snapshot(run) == before
    assert stray_temp_files(tmp_path) == []


def test_fit_into_an_existing_run_without_resume_is_refused_and_leaves_it_alone(
        finished_run, tmp_path, tiny_lm, lm_cache, capsys):
    corpus, run = finished_run
    before = snapshot(run)
    message = refused(capsys, *fit_args(corpus, run, tiny_lm, lm_cache))
    assert "--resume" in message and "already holds a fit" in message
    assert snapshot(run) == before
    assert stray_temp_files(tmp_path) == []


def test_resuming_a_finished_run_keeps_its_results_and_does_not_ask_for_another_resume(
        finished_run, tmp_path, tiny_lm, lm_cache, capsys):
    corpus, run = finished_run
    results = ("table.safetensors", "eval.json", "summary.json", "metrics.jsonl", "checkpoints/step_4/state.safetensors")
    before = {name: (run / name).read_bytes() for name in results}
    code, out, err = run_main(capsys, *fit_args(corpus, run, tiny_lm, lm_cache, "--resume"))
    assert code in (0, 2) and "Traceback" not in err, err  # a no-op success, or a one-line refusal
    if code == 2:
        assert len([x for x in err.splitlines() if x.strip() and not x.startswith("tokalign:")]) == 1, err
    assert "stopped at step" not in out, out  # it finished; another --resume would do the same again
    assert {name: (run / name).read_bytes() for name in results} == before


def test_run_path_that_is_a_file_is_refused_and_kept(synthetic_corpus, tmp_path, tiny_lm, lm_cache, capsys):
    corpus, run = synthetic_corpus(), tmp_path / "notes.txt"
    run.write_text("not a run folder\n")
    message = refused(capsys, *fit_args(corpus, run, tiny_lm, lm_cache))
    assert "notes.txt" in message
    assert run.read_text() == "not a run folder\n"
    assert stray_temp_files(tmp_path) == []


# ------------------------------------------------------------------ bad option values
BAD_OPTIONS = [  # (extra fit options, words the error line must contain)
    (("--device", "tpu"), ("--device", "tpu")),
    (("--batch-size", "1"), ("--batch-size", "1")),
    (("--steps", "0"), ("--steps", "0")),
    (("--steps", "four"), ("--steps",)),
    (("--lr", "-1"), ("--lr", "-1")),
    (("--lr", "nan"), ("--lr",)),
    (("--holdout", "96"), ("--holdout", "96")),
    (("--holdout", "500"), ("--holdout", "500")),
    (("--batch-size", "128"), ("80 training pairs", "128")),
    (("--stop-after", "0"), ("--stop-after",)),
    (("--min-lr-ratio", "2"), ("--min-lr-ratio",)),
    (("--weight-decay", "nan"), ("--weight-decay",)),
    (("--seed", "-1"), ("--seed",)),
    (("--stepz", "3"), ("--stepz",)),
]


@pytest.mark.parametrize("extra, words", BAD_OPTIONS, ids=["=".join(extra) for extra, _ in BAD_OPTIONS])
def test_bad_option_values_are_refused_before_a_run_folder_exists(
        extra, words, synthetic_corpus, tmp_path, tiny_lm, lm_cache, capsys):
    corpus, run = synthetic_corpus(), tmp_path / "run"
    message = refused(capsys, *fit_args(corpus, run, tiny_lm, lm_cache, *extra))
    assert all(w in message for w in words), message
    assert_nothing_written(tmp_path, run)


def test_missing_required_option_is_refused(tmp_path, tiny_lm, lm_cache, capsys):
    message = refused(capsys, "fit", "--run", tmp_path / "run", *lm_args(tiny_lm, lm_cache))
    assert "--corpus" in message
    assert_nothing_written(tmp_path, tmp_path / "run")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_device_cuda_without_a_gpu_is_refused(synthetic_corpus, tmp_path, tiny_lm, lm_cache, capsys):
    corpus, run = synthetic_corpus(), tmp_path / "run"
    message = refused(capsys, *fit_args(corpus, run, tiny_lm, lm_cache, "--device", "cuda"))
    assert "cuda" in message.lower() and "--device cpu" in message
    assert_nothing_written(tmp_path, run)


def test_unknown_lm_name_is_refused_offline(synthetic_corpus, tmp_path, lm_cache, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    corpus, run = synthetic_corpus(), tmp_path / "run"
    args = ["fit", "--corpus", corpus, "--run", run, "--lm", "definitely-not-a-model-xyz", "--cache-dir", lm_cache,
            "--no-progress", *FAST]
    message = refused(capsys, *args)
    assert "definitely-not-a-model-xyz" in message
    assert_nothing_written(tmp_path, run)
