"""``tokalign generator probe``: the command, and one-line refusals (exit 2) for bad input."""

from __future__ import annotations

import json

from cli_run import refused, run_main
from probe_models import TEXT


def test_the_command_writes_the_report_and_prints_a_summary(capsys, good_generator, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    code, out, err = run_main(capsys, "generator", "probe", "--model", good_generator, "--out", tmp_path / "p",
                              "--text-file", text, "--max-new-tokens", "2", "-k", "3", "--device", "cpu")
    assert code == 0, err
    assert "held-out perplexity  base" in out and "image rows (48)" in out and "report: " in out
    assert json.loads((tmp_path / "p" / "probe.json").read_text())["format"] == "tokalign-probe"


def test_bad_input_is_one_line(capsys, good_generator, tmp_path):
    (tmp_path / "plain").mkdir()
    assert "not a tokalign generator" in refused(capsys, "generator", "probe", "--model", tmp_path / "plain")
    assert "no generator folder" in refused(capsys, "generator", "probe", "--model", tmp_path / "missing")
    line = refused(capsys, "generator", "probe", "--model", good_generator, "--clip-model", tmp_path / "nope")
    assert "--clip-model" in line and "no such folder" in line
    line = refused(capsys, "generator", "probe", "--model", good_generator, "--clip-model", tmp_path / "plain")
    assert "open_clip_config.json" in line
    assert "--init-from" in refused(capsys, "generator", "probe", "--model", good_generator, "--init-from", tmp_path / "x")
    assert "-k" in refused(capsys, "generator", "probe", "--model", good_generator, "-k", "0")
    line = refused(capsys, "generator", "probe", "--model", good_generator, "--base", tmp_path / "plain")
    assert "config.json" in line
    (tmp_path / "file").write_text("x")
    assert "is a file" in refused(capsys, "generator", "probe", "--model", good_generator, "--out", tmp_path / "file")


def test_a_base_with_another_vocabulary_is_refused(capsys, good_generator, tmp_path):
    from tiny_lm import make_tiny_lm

    other = make_tiny_lm(tmp_path / "other", ["one", "two"], d_model=32)
    line = refused(capsys, "generator", "probe", "--model", good_generator, "--base", other, "--out", tmp_path / "p")
    assert "text rows" in line and "started from" in line


def test_help_stays_torch_free():
    import subprocess
    import sys

    code = ("import sys; from tokalign.cli.main import main\n"
            "try: main(['generator', 'probe', '--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'faiss', 'open_clip') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().endswith("[]")


def test_a_moved_export_is_refused_before_loading_and_init_from_fixes_it(capsys, trained_lm, corpus, tmp_path):
    from probe_models import make_generator

    model = make_generator(tmp_path / "model", trained_lm, corpus)
    export = tmp_path / "model-init.safetensors"
    moved = export.rename(tmp_path / "moved.safetensors")
    line = refused(capsys, "generator", "probe", "--model", model)
    assert "which is gone" in line and "--init-from" in line
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat .")
    code, out, err = run_main(capsys, "generator", "probe", "--model", model, "--init-from", moved, "--text-file", text,
                              "--max-new-tokens", "1", "-k", "3")
    assert code == 0 and "cosine to init 1.000" in out, err
