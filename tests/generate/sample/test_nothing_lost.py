"""Nothing sampled is lost: every check that can fail on a finished sample runs before sampling, tokens first.

Prompts of any text (newlines, control characters, any Unicode, 10,000 characters) are grid labels; bytes that
are not UTF-8 are refused naming the prompt; damaged weights are refused before loading; a generator whose
corpus cannot decode gets a notice up front and its tokens; an earlier sample folder keeps the user's files.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from tokalign.align.errors import TokalignError
from tokalign.generate.sample import output, run
from tokalign.generate.sample.config import SampleConfig, read_prompts_file
from tokalign.generate.sample.run import sample_images

ODD_PROMPTS = ("two\nlines\tand a tab", "日本語の赤い円 🐱 مربع أزرق", "nul \x00 and bell \x07", "x" * 10_000)


def _config(generator, out, **kw):
    kw.setdefault("prompts", ("a red circle",))
    kw.setdefault("n", 1)
    return SampleConfig(model=generator, out=out, device="cpu", progress=False, **kw)


def test_any_text_is_a_prompt_and_a_grid_label(generator, tmp_path):
    result = sample_images(_config(generator, tmp_path / "out", prompts=ODD_PROMPTS))
    record = json.loads((result.out / "samples.json").read_text(encoding="utf-8"))
    assert record["prompts"] == list(ODD_PROMPTS) and result.grid.is_file() and result.decoded == 4
    labels = output.fitted_labels(ODD_PROMPTS, 4, 1)
    assert labels[0] == "two lines and a tab" and labels[2] == "nul and bell"
    assert labels[3].endswith("...") and len(labels[3]) < 100


def test_label_trimming_measures_log_n_times():
    class Ruler:  # 6 pixels per character, counting measurements
        calls = 0

        def textlength(self, text, font=None):
            Ruler.calls += 1
            return 6 * len(text)

    for n in (100, 10_000, 1_000_000):
        Ruler.calls = 0
        label = output._fit(Ruler(), "y" * n, None, 240)
        assert len(label) * 6 <= 240 and Ruler.calls <= 3 + int(np.log2(4 * 240)) + 1


def test_undecodable_bytes_in_a_prompts_file_name_the_prompt(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("a red circle\n".encode() + b"blue \xff square\n")
    with pytest.raises(TokalignError, match=r"line 2 \('blue \ufffd square'\).*not UTF-8.*0xff"):
        read_prompts_file(path)
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"prompt": "ok"}\n{"prompt": "bad \\udcff"}\n', encoding="utf-8")
    with pytest.raises(TokalignError, match="line 2.*not UTF-8"):
        read_prompts_file(jsonl)


def test_a_command_line_prompt_with_undecodable_bytes_is_refused(generator, tmp_path):
    with pytest.raises(TokalignError, match=r"prompt 2 \('caf\ufffd'\) holds bytes that are not UTF-8"):
        _config(generator, tmp_path / "out", prompts=("fine", "caf\udce9"))


def test_truncated_weights_are_refused_before_any_work(generator, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(generator, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(TokalignError, match="truncated or damaged"):
        sample_images(_config(model, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def _undecodable(generator, tiny_corpus, tmp_path):
    """A copy of the generator whose recorded corpus has lost its k-means codebook (like a pretokenized one)."""
    from tiny_generator import make_tiny_generator

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    model = make_tiny_generator(tmp_path / "model", corpus)
    for file in corpus.glob("*.safetensors"):
        file.unlink()
    return model


def test_a_corpus_that_cannot_decode_gives_a_notice_up_front_and_the_tokens(generator, tiny_corpus, tmp_path,
                                                                             caplog, monkeypatch):
    model = _undecodable(generator, tiny_corpus, tmp_path)

    def stop(*args, **kwargs):
        raise RuntimeError("stopped before sampling")

    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING):
        patch.setattr(run, "_sample_all", stop)
        with pytest.raises(RuntimeError, match="stopped before sampling"):
            sample_images(_config(model, tmp_path / "early"))
    assert any("writing the sampled tokens only" in r.getMessage() for r in caplog.records)
    result = sample_images(_config(model, tmp_path / "out", n=2, cfg_scale=2.0))
    tokens = load_file(str(result.out / "samples.safetensors"))["image_tokens"]
    assert tokens.shape == (2, 16) and result.grid is None and result.decoded == 0
    assert not (result.out / "images").exists() and not (result.out / "grid.png").exists()
    record = json.loads((result.out / "samples.json").read_text())
    assert record["decoded"] is False and "no PNGs" in record["notice"]


def test_tokens_are_written_before_decoding(generator, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk trouble while decoding")

    monkeypatch.setattr(output, "write_images", broken)
    with pytest.raises(OSError, match="disk trouble"):
        sample_images(_config(generator, tmp_path / "out", n=3))
    assert load_file(str(tmp_path / "out" / "samples.safetensors"))["image_tokens"].shape == (3, 16)
    assert not (tmp_path / "out" / "samples.json").exists()  # no claim of a complete run


def test_sampling_over_an_earlier_folder_keeps_the_users_files(generator, tmp_path):
    out = tmp_path / "out"
    sample_images(_config(generator, out, n=4))
    (out / "my_notes.txt").write_text("keep")
    (out / "images" / "favourite.txt").write_text("keep too")
    (out / "images" / "best.png").write_bytes(b"not ours")
    sample_images(_config(generator, out, n=2))
    assert (out / "my_notes.txt").read_text() == "keep" and (out / "images" / "favourite.txt").read_text() == "keep too"
    assert (out / "images" / "best.png").read_bytes() == b"not ours"
    assert sorted(p.name for p in (out / "images").glob("0*.png")) == ["000000.png", "000001.png"]
    assert load_file(str(out / "samples.safetensors"))["image_tokens"].shape == (2, 16)
