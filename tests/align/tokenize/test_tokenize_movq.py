"""``tokalign tokenize --image-tokenizer movq`` end to end, with a small MoVQ of random weights saved as a weights folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_run import refused, run_main
from tokalign.align.formats.corpus import open_corpus
from tokalign.align.sources.image_prep import prepare_image
from tokalign.align.image_tokenizers.movq import MoVQTokenizer
from tokalign.align.sources.spec import SourceSpec, open_source
from tokalign.align.tokenize.pipeline import tokenize_corpus
from tokalign.align.tokenize.config import TokenizeConfig

# Kandinsky's layout (f=8, 16,384 codes, spatial norm), narrower, so a CPU encodes a few images in seconds
NARROW = {"block_out_channels": (32, 32, 32, 64), "layers_per_block": 1}


@pytest.fixture(scope="module")
def movq_folder(tmp_path_factory) -> Path:
    """A hub-style snapshot: ``snapshot/movq/{config.json, diffusion_pytorch_model.safetensors}``."""
    snapshot = tmp_path_factory.mktemp("snapshot")
    MoVQTokenizer.random(seed=3, device="cpu", config=NARROW).model.save_pretrained(snapshot / "movq",
                                                                                   safe_serialization=True)
    return snapshot


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[str, dict]:
    from wds_fixtures import make_shards

    return make_shards(tmp_path_factory.mktemp("wds"), n_shards=2, per_shard=3, seed=5, defects=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_lm, lm_cache, movq_folder, shards) -> Path:
    out = tmp_path_factory.mktemp("movq-corpus") / "c"
    result = tokenize_corpus(TokenizeConfig(
        source=SourceSpec(input=shards[0]), out=out, image_tokenizer="movq", image_tokenizer_path=str(movq_folder),
        lm=tiny_lm, cache_root=lm_cache, workers=1, batch_size=4, device="cpu", progress=False))
    assert result.complete
    return out


def test_movq_corpus_holds_the_tokenizers_own_ids_for_every_image(corpus, movq_folder, shards):
    manifest = open_corpus(corpus).manifest
    tokenizer = MoVQTokenizer.from_pretrained(movq_folder, device="cpu")
    assert manifest["items"] == shards[1]["kept"] == 6
    assert manifest["image_tokenizer"]["kind"] == "movq"
    assert manifest["image_tokenizer"]["sha256"] == tokenizer.sha256
    assert manifest["image_tokenizer"]["path"] == str((movq_folder / "movq").resolve())
    source = open_source(SourceSpec(input=shards[0]))
    pixels = [prepare_image(s.image, 256, 64).pixels for part in source.parts() for s in source.read(part)]
    stored = open_corpus(corpus).image_tokens(range(6))
    assert stored.shape == (6, 1024) and stored.dtype == np.uint16
    np.testing.assert_array_equal(stored, tokenizer.encode(np.stack(pixels)))  # one batch of 6, not the pipeline's 3s


def test_decode_of_a_movq_corpus_row_writes_the_tokenizers_image(capsys, corpus, movq_folder, tmp_path):
    code, out, err = run_main(capsys, "decode", "--corpus", corpus, "--index", "1", "--out", tmp_path / "png",
                              "--device", "cpu")
    assert code == 0, err
    (png,) = sorted((tmp_path / "png").glob("*.png"))
    image = np.asarray(Image.open(png))
    tokenizer = MoVQTokenizer.from_pretrained(movq_folder, device="cpu")
    assert image.shape == (256, 256, 3)
    np.testing.assert_array_equal(image, tokenizer.decode(open_corpus(corpus).image_tokens([1]))[0])


def test_decode_refuses_movq_weights_other_than_the_corpus_ones(capsys, corpus, tmp_path):
    other = tmp_path / "other"
    MoVQTokenizer.random(seed=4, device="cpu", config=NARROW).model.save_pretrained(other, safe_serialization=True)
    line = refused(capsys, "decode", "--corpus", corpus, "--index", "0", "--out", tmp_path / "png",
                   "--image-tokenizer-path", other, "--device", "cpu")
    assert "sha256" in line and not (tmp_path / "png").exists()


def test_movq_corpus_is_accepted_by_fit(capsys, corpus, tiny_lm, lm_cache, tmp_path):
    code, out, err = run_main(capsys, "fit", "--corpus", corpus, "--run", tmp_path / "run", "--lm", tiny_lm,
                              "--cache-dir", lm_cache, "--steps", 2, "--batch-size", 4, "--holdout", 2, "--no-progress")
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    table_meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert json.dumps(table_meta).count(open_corpus(corpus).manifest["image_tokenizer"]["sha256"]) >= 1


def test_missing_movq_weights_folder_is_refused_before_writing(capsys, shards, tiny_lm, lm_cache, tmp_path):
    line = refused(capsys, "tokenize", "--input", shards[0], "--out", tmp_path / "c", "--image-tokenizer", "movq",
                   "--image-tokenizer-path", tmp_path / "nowhere", "--lm", tiny_lm, "--cache-dir", lm_cache)
    assert "does not exist" in line and not (tmp_path / "c").exists()
