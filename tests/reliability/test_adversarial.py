"""The adversarial cases, kept as one table so they stay fixed: no command overwrites or deletes a file tokalign
did not write, no ``--resume`` trains on other data or throws away a finished run, and each refusal names its fix.

Each row of :data:`CASES` is ``name -> case(world, capsys)``; a case sets up its own copy of what it needs from
the shared :class:`World` (one fit run, one generator run stopped half-way and one finished, their corpora) and
asserts the outcome: the exit code, the one error line, and the files left behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_run import refused, run_main
from reliability_helpers import lm_args, tree

SEQ_LEN = 32


class World:
    """What the cases share (built once per module): paths only; every case works on its own copies."""

    def __init__(self, tmp: Path, fit_run: Path, gen_lm: str, corpus: Path, other: Path, half: Path, done: Path,
                 tiny_lm: str, lm_cache: Path) -> None:
        self.tmp, self.fit_run, self.gen_lm, self.corpus, self.other = tmp, fit_run, gen_lm, corpus, other
        self.half, self.done, self.tiny_lm, self.lm_cache = half, done, tiny_lm, lm_cache
        self.count = 0

    def fresh(self, name: str) -> Path:
        self.count += 1
        path = self.tmp / f"{self.count:02d}-{name}"
        path.mkdir(parents=True)
        return path

    def copy(self, run: Path, name: str) -> Path:
        target = self.fresh(name) / "run"
        shutil.copytree(run, target, symlinks=True)
        return target

    def train_args(self, run: Path, *extra, corpus: Path | None = None, lm: str | None = None) -> list[str]:
        return ["generator", "train", "--corpus", str(corpus or self.corpus), "--run", str(run), "--lm",
                str(lm or self.gen_lm), "--init", "random-rows", "--seq-len", str(SEQ_LEN), "--holdout", "16",
                "--steps", "2", "--batch-tokens", str(8 * SEQ_LEN), "--micro-batch", "4", "--warmup-steps", "1",
                "--lr", "0.01", "--device", "cpu", "--no-progress", "--checkpoint-every", "1", "--eval-every", "1",
                *map(str, extra)]


@pytest.fixture(scope="module")
def world(tmp_path_factory, finished_run, lm, tiny_lm, lm_cache) -> World:
    from synthetic_corpus import write_synthetic_corpus
    from tiny_llama import make_tiny_llama

    from tokalign.cli.main import main

    root = tmp_path_factory.mktemp("adversarial")
    gen_lm = str(make_tiny_llama(root / "gen-lm", tied=True, seed=0))
    corpus = write_synthetic_corpus(root / "corpus-a", lm, items=96, codebook=64, length=16, seed=0)
    other = write_synthetic_corpus(root / "corpus-b", lm, items=96, codebook=64, length=16, seed=1)
    w = World(root / "cases", finished_run, gen_lm, corpus, other, root / "half", root / "done", tiny_lm, lm_cache)
    for args in (w.train_args(root / "work", "--stop-after", "1"), w.train_args(root / "work", "--resume")):
        if "--resume" in args:
            shutil.copytree(root / "work", w.half, symlinks=True)
        try:
            main(args)
        except SystemExit as exc:
            assert not exc.code, exc.code
    shutil.copytree(root / "work", w.done, symlinks=True)
    return w


# ------------------------------------------------------------------ helpers of the cases
def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _final_rows(run: Path, step: int = 2) -> list[dict]:
    return [r for r in _rows(run) if r["split"] == "heldout" and r["step"] == step]


def _resumed_ok(w: World, capsys, run: Path, *extra) -> str:
    code, out, err = run_main(capsys, *w.train_args(run, "--resume", *extra))
    assert code == 0, err
    assert "already finished" not in err
    return out


def _weights(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def _model_rebuilt(w: World, run: Path, capsys) -> None:
    out = _resumed_ok(w, capsys, run)
    from tokalign.generate.model_folder import incomplete_reason

    assert incomplete_reason(run / "model") is None
    assert len(_final_rows(run)) == 1  # the final held-out row is written once, whatever was interrupted
    assert " 0 tokens/s" not in "\n" + out and "tokens/s" in out
    want, got = _weights(w.done / "model"), _weights(run / "model")
    assert want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)


def _export(w: World, capsys, out: Path, *extra):
    return ["export", "--run", w.fit_run, "--to", "generator-init", "--out", out, *extra]


# ------------------------------------------------------------------ file outputs (the output rule)
def export_onto_user_files(w: World, capsys) -> None:
    folder = w.fresh("user-files")
    (folder / "userdir").mkdir()
    targets = [folder / "mydata.safetensors", folder / "notes.txt", folder / "userdir" / "thesis.txt"]
    header = json.dumps({"__metadata__": {"format": "my-lab-format"}}).encode()
    targets[0].write_bytes(len(header).to_bytes(8, "little") + header)
    for target in targets[1:]:
        target.write_text("keep me")
    before = tree(folder)
    for target in targets:
        line = refused(capsys, *_export(w, capsys, target))
        assert "tokalign did not write it" in line and "--force" in line
    assert tree(folder) == before


def export_replaces_its_own_file_and_force_replaces_a_plain_one(w: World, capsys) -> None:
    folder = w.fresh("exports")
    out = folder / "init.safetensors"
    for _ in range(2):  # an earlier export of the same target is replaced
        code, _, err = run_main(capsys, *_export(w, capsys, out))
        assert code == 0, err
    plain = folder / "plain.bin"
    plain.write_bytes(b"user bytes")
    code, _, err = run_main(capsys, *_export(w, capsys, plain, "--force"))
    assert code == 0, err
    assert "did not write" in err and "--force" in err and plain.read_bytes() != b"user bytes"


def neighbors_show_onto_a_user_png(w: World, capsys) -> None:
    png = w.fresh("show") / "holiday.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    line = refused(capsys, "neighbors", "--run", w.fit_run, "--image-token", "0", "--show", png)
    assert "--show" in line and "tokalign did not write it" in line
    assert png.read_bytes() == b"\x89PNG\r\n\x1a\nnot really"


def decode_onto_a_user_png_in_a_decode_folder(w: World, capsys) -> None:
    from tiny_generator import make_tiny_corpus

    from tokalign.align.formats import outputs

    base = w.fresh("decode")
    corpus = make_tiny_corpus(base / "tok-corpus")
    out = base / "out"
    out.mkdir()
    outputs.write_marker(out, outputs.DECODE)
    (out / "000000.png").write_bytes(b"my own picture")
    tokens = base / "tokens.npy"
    np.save(tokens, np.zeros((1, 16), dtype=np.int64))
    line = refused(capsys, "decode", "--out", out, "--tokens", tokens, "--corpus", corpus)
    assert "000000.png" in line and "tokalign did not write it" in line
    assert (out / "000000.png").read_bytes() == b"my own picture"
    (out / "000000.png").unlink()
    for _ in range(2):  # its own PNGs are replaced
        code, _, err = run_main(capsys, "decode", "--out", out, "--tokens", tokens, "--corpus", corpus)
        assert code == 0, err


def demo_corpus_force_over_user_files(w: World, capsys) -> None:
    folder = w.fresh("corpus-with-notes")
    (folder / "manifest.json").write_text(json.dumps({"format": "tokalign-corpus", "version": 1}))
    (folder / "notes.txt").write_text("mine")
    line = refused(capsys, "demo-corpus", "--out", folder, "--force", "--lm", w.tiny_lm, "--cache-dir", w.lm_cache)
    assert "notes.txt" in line and "did not write" in line
    assert (folder / "notes.txt").read_text() == "mine"


def tokenize_force_keeps_user_files(w: World, capsys) -> None:
    from tokalign.align.tokenize.state import clear_folder

    folder = w.fresh("tokenize-force")
    (folder / "shards").mkdir()
    (folder / "shards" / "shard-00000.safetensors").write_bytes(b"old")
    (folder / "manifest.json").write_text("{}")
    (folder / "my_notes.txt").write_text("mine")
    clear_folder(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["my_notes.txt"]


def second_writer_of_a_run_folder(w: World, capsys) -> None:
    from tokalign.align.formats.lock import exclusive_lock

    run = w.fresh("locked")
    with exclusive_lock(run, "a first writer", "--run"):
        line = refused(capsys, *w.train_args(run))
    assert "being written by another tokalign process" in line


# ------------------------------------------------------------------ resume by content
def same_corpus_at_a_new_path_continues(w: World, capsys) -> None:
    run = w.copy(w.half, "moved-corpus")
    moved = run.parent / "corpus-moved"
    shutil.copytree(w.corpus, moved)
    code, _, err = run_main(capsys, *w.train_args(run, "--resume", corpus=moved))
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["steps"] == 2 and len(_final_rows(run)) == 1


def another_corpus_of_the_same_size_is_refused(w: World, capsys) -> None:
    for drop in ((), ("sequences",), ("sequences", "diagnostics.json")):
        run = w.copy(w.half, "other-corpus")
        for name in drop:
            path = run / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        before = tree(run)
        line = refused(capsys, *w.train_args(run, "--resume", corpus=w.other))
        assert "another --corpus" in line and "delete" not in line
        assert tree(run) == before


def model_without_config_is_rebuilt(w: World, capsys) -> None:
    run = w.copy(w.done, "no-config")
    (run / "model" / "config.json").unlink()
    _model_rebuilt(w, run, capsys)


def model_with_truncated_weights_is_rebuilt(w: World, capsys) -> None:
    run = w.copy(w.done, "truncated")
    weights = run / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _model_rebuilt(w, run, capsys)


def kill_during_the_final_save_then_resume(w: World, capsys) -> None:
    run = w.copy(w.done, "killed-save")  # what a kill inside the model save leaves: no model, figures logged
    shutil.rmtree(run / "model")
    (run / "summary.json").unlink()
    (run / "model-probe").mkdir()  # a user's folder beside it stays
    _model_rebuilt(w, run, capsys)
    assert (run / "model-probe").is_dir()


def rebuilt_model_keeps_what_the_save_does_not_write(w: World, capsys) -> None:
    run = w.copy(w.done, "model-with-probe")
    (run / "model" / "probe").mkdir()
    (run / "model" / "probe" / "probe.md").write_text("finished probe")
    (run / "model" / "config.json").unlink()
    _model_rebuilt(w, run, capsys)
    assert (run / "model" / "probe" / "probe.md").read_text() == "finished probe"


def seq_len_that_cannot_fit_is_refused_before_any_build(w: World, capsys) -> None:
    run = w.fresh("long") / "run"
    args = w.train_args(run)
    args[args.index("--seq-len") + 1] = "60000"
    line = refused(capsys, *args)
    assert "--seq-len 60000" in line and "positions" in line
    assert not run.exists()


def seq_len_checked_after_the_load_when_the_config_was_not_at_hand(w: World, capsys) -> None:
    from tokalign.generate.train import run_folder

    run = w.fresh("long-gguf") / "run"
    args = w.train_args(run)
    args[args.index("--seq-len") + 1] = "60000"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_folder, "check_seq_len", lambda *a: None)  # as for a gguf file or a hub id
        line = refused(capsys, *args)
    assert "--seq-len 60000" in line and "positions" in line
    assert not (run / "sequences").exists()  # refused before the build


def stale_sequences_are_rebuilt_not_refused(w: World, capsys) -> None:
    from tokalign.generate.config import DataConfig
    from tokalign.generate.train.run_folder import drop_stale_sequences

    run = w.copy(w.half, "stale-sequences")
    drop_stale_sequences(run, DataConfig(corpus=w.corpus, seq_len=SEQ_LEN), w.gen_lm, fresh=False)
    assert (run / "sequences" / "tokens.npy").is_file()  # up to date: kept
    drop_stale_sequences(run, DataConfig(corpus=w.corpus, seq_len=40), w.gen_lm, fresh=True)
    assert not (run / "sequences").exists()  # another --seq-len: dropped, the build remakes it


# ------------------------------------------------------------------ messages that name the fix
def resume_with_other_steps_or_lr_names_the_options(w: World, capsys) -> None:
    for option, value, shown in (("--steps", "3", "--steps 2 (run) vs 3 (now)"), ("--lr", "0.005", "--lr 0.01 (run) vs 0.005 (now)")):
        run = w.copy(w.half, "changed")
        args = w.train_args(run, "--resume")
        args[args.index(option) + 1] = value
        line = refused(capsys, *args)
        assert shown in line, line


def resume_with_another_lm_is_reported_as_the_lm(w: World, capsys) -> None:
    from tiny_llama import make_tiny_llama

    run = w.copy(w.half, "other-lm")
    other = make_tiny_llama(run.parent / "other-lm", tied=True, seed=1)
    line = refused(capsys, *w.train_args(run, "--resume", lm=str(other)))
    assert f"--lm {other}" in line and f"resume with --lm {w.gen_lm}" in line


def model_option_given_the_run_folder(w: World, capsys) -> None:
    line = refused(capsys, "generator", "probe", "--model", w.done, "--out", w.fresh("probe") / "p")
    assert f"pass --model {w.done / 'model'}" in line


def captions_under_another_key(w: World, capsys) -> None:
    from file_fixtures import scene

    from tokalign.align.sources.spec import SourceSpec, open_source

    for key in ("file", "image", "path", "filename", "file_name", "img", "image_path"):
        folder = w.fresh(f"captions-{key}")
        data, caption = scene(0, 0)
        (folder / "a.png").write_bytes(data)
        (folder / "captions.jsonl").write_text(json.dumps({key: "a.png", "caption": caption}) + "\n")
        source = open_source(SourceSpec(input=str(folder)))
        samples = [s for part in source.parts() for s in source.read(part)]
        assert [(s.key, s.caption, s.skip) for s in samples] == [("a.png", caption, None)], key
    folder = w.fresh("captions-unknown")
    (folder / "a.png").write_bytes(data)
    (folder / "captions.jsonl").write_text(json.dumps({"picture": "a.png", "caption": caption}) + "\n")
    line = refused(capsys, "tokenize", "--input", folder, "--out", folder.parent / "c", "--fit-codebook",
                   "--image-tokenizer", "kmeans", *lm_args(w.tiny_lm, w.lm_cache))
    assert "the row has keys picture, caption" in line and "file_name" in line


def every_item_skipped_shows_the_first_reasons(w: World, capsys) -> None:
    folder = w.fresh("all-skipped")
    (folder / "a.png").write_bytes(b"not an image at all")
    (folder / "captions.jsonl").write_text(json.dumps({"file": "a.png", "caption": "a red circle"}) + "\n")
    line = refused(capsys, "tokenize", "--input", folder, "--out", folder.parent / "c", "--fit-codebook",
                   "--image-tokenizer", "kmeans", *lm_args(w.tiny_lm, w.lm_cache))
    assert "a.png: unreadable_image" in line


CASES = {
    "export --out a file tokalign did not write": export_onto_user_files,
    "export replaces its own file; --force a plain one, and says so": export_replaces_its_own_file_and_force_replaces_a_plain_one,
    "neighbors --show onto a user's PNG": neighbors_show_onto_a_user_png,
    "decode onto a user's PNG in a decode folder": decode_onto_a_user_png_in_a_decode_folder,
    "demo-corpus --force over a corpus holding user files": demo_corpus_force_over_user_files,
    "tokenize --force keeps the user's files": tokenize_force_keeps_user_files,
    "a second writer of one run folder": second_writer_of_a_run_folder,
    "--resume: the same corpus at a new path continues": same_corpus_at_a_new_path_continues,
    "--resume: another corpus of the same size, whatever was deleted": another_corpus_of_the_same_size_is_refused,
    "--resume: RUN/model without config.json is rebuilt": model_without_config_is_rebuilt,
    "--resume: RUN/model with truncated weights is rebuilt": model_with_truncated_weights_is_rebuilt,
    "--resume after a kill during the final save: one final row": kill_during_the_final_save_then_resume,
    "--resume: a rebuilt RUN/model keeps its probe folder": rebuilt_model_keeps_what_the_save_does_not_write,
    "--seq-len 60000 refused before any build": seq_len_that_cannot_fit_is_refused_before_any_build,
    "--seq-len 60000 refused after the load, before the build": seq_len_checked_after_the_load_when_the_config_was_not_at_hand,
    "RUN/sequences built for other settings is rebuilt": stale_sequences_are_rebuilt_not_refused,
    "--resume with other --steps / --lr names both values": resume_with_other_steps_or_lr_names_the_options,
    "--resume with another --lm names the LM": resume_with_another_lm_is_reported_as_the_lm,
    "--model RUN suggests RUN/model": model_option_given_the_run_folder,
    "folder captions under file/image/path/filename/img/...": captions_under_another_key,
    "every item skipped: the error shows the first reasons": every_item_skipped_shows_the_first_reasons,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_adversarial(name, world, capsys):
    CASES[name](world, capsys)
