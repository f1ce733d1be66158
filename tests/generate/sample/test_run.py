"""``sample_images`` end to end: the output folder, decoding, per-prompt reproducibility, refusals."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from tokalign.align.errors import TokalignError
from tokalign.generate.sample.config import SampleConfig
from tokalign.generate.sample.run import sample_images


def _config(generator, out, **kw):
    kw.setdefault("prompts", ("a red circle", "blue square on the left"))
    kw.setdefault("n", 3)
    return SampleConfig(model=generator, out=out, device="cpu", progress=False, **kw)


def test_writes_pngs_grid_tokens_and_record(generator, tmp_path):
    result = sample_images(_config(generator, tmp_path / "out", cfg_scale=3.0, top_k=30))
    out = tmp_path / "out"
    tensors = load_file(str(out / "samples.safetensors"))
    tokens = tensors["image_tokens"]
    assert tokens.shape == (6, 16) and tokens.dtype == np.int64 and 0 <= tokens.min() and tokens.max() < 48
    assert tensors["prompt_index"].tolist() == [0, 0, 0, 1, 1, 1]
    pngs = sorted((out / "images").glob("*.png"))
    assert len(pngs) == 6 and all(Image.open(p).size == (256, 256) for p in pngs)
    assert Image.open(out / "grid.png").size[0] > 3 * 256
    record = json.loads((out / "samples.json").read_text())
    assert record["format"] == "tokalign-samples" and record["prompts"] == ["a red circle", "blue square on the left"]
    assert record["settings"]["cfg_scale"] == 3.0 and len({i["seed"] for i in record["images"]}) == 6
    assert result.images == 6 and result.images_per_second > 0


def test_tokalign_decode_reads_the_tokens(generator, tiny_corpus, tmp_path, capsys):
    from cli_run import run_main

    sample_images(_config(generator, tmp_path / "out", n=1))
    code, out, err = run_main(capsys, "decode", "--tokens", tmp_path / "out" / "samples.safetensors",
                              "--corpus", tiny_corpus, "--out", tmp_path / "decoded")
    assert code == 0, err
    for name in ("000000.png", "000001.png"):
        again = np.asarray(Image.open(tmp_path / "decoded" / name))
        assert np.array_equal(again, np.asarray(Image.open(tmp_path / "out" / "images" / name)))


def test_a_prompts_images_do_not_depend_on_the_batch(generator, tmp_path):
    """Image (prompt p, sample s) comes from its own seed: batch size and the other prompts do not change it."""
    runs = [sample_images(_config(generator, tmp_path / name, prompts=prompts, n=2, batch_size=size, cfg_scale=2.0))
            for name, prompts, size in (("a", ("a red circle",), 1), ("b", ("a red circle", "green"), 3),
                                        ("c", ("a red circle", "big blue"), 4))]
    a, b, c = (load_file(str(r.out / "samples.safetensors"))["image_tokens"] for r in runs)
    assert np.array_equal(a, b[:2]) and np.array_equal(a, c[:2])
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(b[2:], c[2:])


def test_image_only_model_samples_without_prompt_and_refuses_one(tmp_path, tiny_corpus):
    from tiny_generator import make_tiny_generator

    model = make_tiny_generator(tmp_path / "uncond", tiny_corpus, mode="image-only", caption_dropout=0.0)
    result = sample_images(_config(model, tmp_path / "out", prompts=(), n=2))
    assert load_file(str(result.out / "samples.safetensors"))["image_tokens"].shape == (2, 16)
    with pytest.raises(TokalignError, match="image-only"):
        sample_images(_config(model, tmp_path / "out2", prompts=("a red circle",)))
    with pytest.raises(TokalignError, match="image-only"):
        sample_images(_config(model, tmp_path / "out2", prompts=(), cfg_scale=2.0))


def test_cfg_without_caption_dropout_warns(tmp_path, tiny_corpus, caplog):
    from tiny_generator import make_tiny_generator

    model = make_tiny_generator(tmp_path / "nodrop", tiny_corpus, caption_dropout=0.0)
    with caplog.at_level(logging.WARNING):
        sample_images(_config(model, tmp_path / "out", n=1, cfg_scale=3.0))
    assert any("caption dropout 0" in r.getMessage() for r in caplog.records)


def test_out_folder_policy(generator, tmp_path):
    out = tmp_path / "out"
    sample_images(_config(generator, out, n=1))
    sample_images(_config(generator, out, n=2))  # its own output: replaced
    assert len(list((out / "images").glob("*.png"))) == 4
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(TokalignError, match="never replaces files it did not write"):
        sample_images(_config(generator, foreign, n=1))
    assert (foreign / "thesis.tex").read_text() == "keep me"


def test_refuses_a_corpus_with_another_image_tokenizer(generator, tmp_path):
    from tiny_generator import make_tiny_corpus

    other = make_tiny_corpus(tmp_path / "other", seed=1)  # same shape, other codebook: another sha256
    with pytest.raises(TokalignError, match="sha256"):
        sample_images(_config(generator, tmp_path / "out", corpus=other))
    assert not (tmp_path / "out").exists()
