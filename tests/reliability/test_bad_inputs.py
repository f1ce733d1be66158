"""Bad input to every command: exit 2, one line, no traceback, and no file changed anywhere.

Each case builds its input under the test's folder, snapshots that folder and the shared corpus and run,
runs the real entry point, and checks the policy and that every snapshot is unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cli_run import refused
from reliability_helpers import lm_args, tree


def _user_folder(base: Path) -> Path:
    folder = base / "mine"
    (folder / "lm").mkdir(parents=True)
    (folder / "config.json").write_text('{"my": "settings"}\n')
    (folder / "notes.txt").write_text("keep me\n")
    return folder


def _copy_corpus(corpus: Path, base: Path) -> Path:
    return Path(shutil.copytree(corpus, base / "corpus-copy"))


def _bad_offsets(corpus: Path, base: Path) -> Path:
    """A corpus whose first shard's caption_offsets are shuffled in place (same file size)."""
    copy = _copy_corpus(corpus, base)
    from tokalign.align.formats.corpus import _memmap_safetensors

    path = copy / "shards" / "shard-00000.safetensors"
    arrays = _memmap_safetensors(path)
    offsets = np.array(arrays["caption_offsets"])
    start = (arrays["caption_offsets"].offset if hasattr(arrays["caption_offsets"], "offset") else None)
    with open(path, "r+b") as handle:
        handle.seek(start + 8)
        handle.write(np.array([offsets[3], offsets[1]], dtype=np.int64).tobytes())
    return copy


def _items_as_text(corpus: Path, base: Path) -> Path:
    copy = _copy_corpus(corpus, base)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["items"] = str(manifest["items"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def _one_item_tar(base: Path) -> Path:
    from file_fixtures import scene
    from wds_fixtures import write_tar

    image, caption = scene(0, 0)
    write_tar(base / "one.tar", [("a.png", image), ("a.txt", caption.encode())])
    return base / "one.tar"


def _empty_corpus(base: Path, lm) -> Path:
    from synthetic_corpus import write_synthetic_corpus

    return write_synthetic_corpus(base / "empty-corpus", lm, items=0)


def _empty_tar(base: Path) -> Path:
    path = base / "empty.tar"
    tarfile.open(path, "w").close()
    return path


def _fit(corpus, run, ctx, *extra):
    holdout = () if "--holdout" in extra else ("--holdout", "16")
    return ["fit", "--corpus", corpus, "--run", run, *lm_args(ctx["lm"], ctx["cache"]), "--steps", "4",
            "--batch-size", "16", *holdout, *extra]


CASES = {
    "report --out a user's folder": (lambda c: ["report", "--run", c["run"], "--out", _user_folder(c["tmp"]),
                                                "--no-progress"], "never replaces"),
    "report --out the run": (lambda c: ["report", "--run", c["run"], "--out", c["run"], "--no-progress"], "must keep"),
    "report --out .": (lambda c: ["report", "--run", c["run"], "--out", ".", "--no-progress"], "current folder"),
    "report --out a corpus": (lambda c: ["report", "--run", c["run"], "--out", c["corpus"], "--no-progress"],
                              "is a tokalign corpus"),
    "fit --run a user's folder": (lambda c: _fit(c["corpus"], _user_folder(c["tmp"]), c), "never replaces"),
    "fit --run below a file": (lambda c: _fit(c["corpus"], c["file"] / "run", c), "lies below"),
    "fit --run inside the corpus": (lambda c: _fit(c["corpus"], c["corpus"] / "run", c), "inside the input"),
    "fit --seed beyond 64 bits": (lambda c: _fit(c["corpus"], c["tmp"] / "new", c, "--seed", str(2 ** 64)), "64-bit"),
    "fit --corpus a file": (lambda c: _fit(c["file"], c["tmp"] / "new", c), "is a file, not a corpus folder"),
    "fit on an item count given as text": (lambda c: _fit(_items_as_text(c["corpus"], c["tmp"]), c["tmp"] / "new", c),
                                           "not an integer"),
    "fit on shuffled caption_offsets": (lambda c: _fit(_bad_offsets(c["corpus"], c["tmp"]), c["tmp"] / "new", c),
                                        "caption_offsets"),
    "corpus check on shuffled caption_offsets": (lambda c: ["corpus", "check", _bad_offsets(c["corpus"], c["tmp"])],
                                                 "caption_offsets"),
    "fit on a 0-item corpus, --holdout 0": (lambda c: _fit(_empty_corpus(c["tmp"], c["loaded"]), c["tmp"] / "new", c,
                                                           "--holdout", "0"), "holds no pairs"),
    "neighbors --run a file": (lambda c: ["neighbors", "--run", c["file"], "--image-token", "1"], "is a file"),
    "export --run a file": (lambda c: ["export", "--run", c["file"], "--to", "generator-init", "--out",
                                       c["tmp"] / "i.safetensors"], "is a file"),
    "report --run a file": (lambda c: ["report", "--run", c["file"], "--no-progress"], "is a file"),
    "neighbors --show onto the table": (lambda c: ["neighbors", "--run", c["run"], "--image-token", "1", "--show",
                                                   c["run"] / "table.safetensors"], "belongs to"),
    "export --out onto a checkpoint": (lambda c: ["export", "--run", c["run"], "--to", "generator-init", "--out",
                                                  c["run"] / "checkpoints" / "step_4" / "state.safetensors"], "belongs to"),
    "export --out onto a manifest": (lambda c: ["export", "--run", c["run"], "--to", "generator-init", "--out",
                                                c["corpus"] / "manifest.json"], "belongs to"),
    "export --seed beyond 64 bits": (lambda c: ["export", "--run", c["run"], "--to", "generator-init", "--out",
                                                c["tmp"] / "i.safetensors", "--seed", "-1"], "64-bit"),
    "decode --out onto a file": (lambda c: ["decode", "--corpus", c["corpus"], "--index", "0", "--out", c["file"]],
                                 "is a file"),
    "decode --out a user's folder": (lambda c: ["decode", "--corpus", c["corpus"], "--index", "0", "--out",
                                                _user_folder(c["tmp"])], "never replaces"),
    "tokenize --out a user's folder (even with --force)": (
        lambda c: ["tokenize", "--input", _one_item_tar(c["tmp"]), "--out", _user_folder(c["tmp"]), "--force",
                   "--image-tokenizer", "kmeans", "--fit-codebook", *lm_args(c["lm"], c["cache"])], "never replaces"),
    "tokenize --out inside the input folder": (
        lambda c: ["tokenize", "--input", _one_item_tar(c["tmp"]).parent, "--out", c["tmp"] / "corpus",
                   "--image-tokenizer", "kmeans", "--fit-codebook", *lm_args(c["lm"], c["cache"])], "inside the input"),
    "tokenize an empty tar": (lambda c: ["tokenize", "--input", _empty_tar(c["tmp"]), "--out", c["tmp"] / "new",
                                         "--image-tokenizer", "kmeans", "--fit-codebook", *lm_args(c["lm"], c["cache"])],
                              "holds no data"),
    "demo-corpus --out a fit run": (lambda c: ["demo-corpus", "--out", c["run"], "--items", "8",
                                               *lm_args(c["lm"], c["cache"])], "is a tokalign fit-run"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_no_file(name, capsys, tmp_path, monkeypatch, corpora, finished_run,
                                                          tiny_lm, lm_cache, lm):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder\n")
    ctx = {"tmp": tmp_path, "run": finished_run, "corpus": corpora[0], "file": tmp_path / "a-file", "lm": tiny_lm,
           "cache": lm_cache, "loaded": lm}
    build, expected = CASES[name]
    args = build(ctx)
    before = tree(tmp_path, finished_run, corpora[0])
    line = refused(capsys, *args)
    assert any(part in line for part in expected.split("|")), line
    assert tree(tmp_path, finished_run, corpora[0]) == before
