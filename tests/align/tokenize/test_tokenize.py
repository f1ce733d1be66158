"""End to end: `tokalign tokenize` on WebDataset, folder, parquet and pretokenized inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from cli_run import refused, run_main
from tokalign.align.formats.corpus import open_corpus
from tokalign.align.sources.spec import SourceSpec
from tokalign.align.tokenize.pipeline import tokenize_corpus
from tokalign.align.tokenize.config import TokenizeConfig


@pytest.fixture(scope="module")
def codebook(tmp_path_factory) -> Path:
    """A 64-code k-means tokenizer fitted on a few shape scenes, saved to a file."""
    from tokalign.align.image_tokenizers.kmeans import PatchKMeansTokenizer
    from tokalign.align.sources.shapes import make_scene, render

    images = np.stack([render(make_scene(99, i))[0] for i in range(8)])
    path = tmp_path_factory.mktemp("codebook") / "kmeans.safetensors"
    PatchKMeansTokenizer.fit(images, codebook_size=64, iterations=4, seed=0).save(path)
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[str, dict]:
    from wds_fixtures import make_shards

    return make_shards(tmp_path_factory.mktemp("wds"), n_shards=3, per_shard=5, seed=1, defects=True)


def _config(tiny_lm, lm_cache, input_, out, **kw) -> TokenizeConfig:
    tokens = kw.get("image_tokenizer") == "pretokenized"
    source = SourceSpec(input=str(input_), tokens=tokens, **{k: kw.pop(k) for k in list(kw) if k in
                                                              ("format", "part_size", "captions_file")})
    kw.setdefault("image_tokenizer", "kmeans")
    kw.setdefault("workers", 0)
    return TokenizeConfig(source=source, out=out, lm=tiny_lm, cache_root=lm_cache, progress=False, **kw)


def _check_counts(out: Path, expected: dict) -> None:
    corpus = open_corpus(out)
    manifest = corpus.manifest
    assert manifest["items"] == expected["kept"]
    assert manifest["skipped"] == expected["skipped"]
    assert manifest["adjusted"] == expected["adjusted"]
    assert [r["key"] for r in corpus.records(range(corpus.items))] == expected["kept_keys"]
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert len(skipped) == sum(expected["skipped"].values())
    by_reason: dict[str, int] = {}
    for row in skipped:
        by_reason[row["reason"]] = by_reason.get(row["reason"], 0) + 1
        assert row["detail"] and row["part"]
    assert by_reason == expected["skipped"]
    adjusted = [json.loads(line) for line in (out / "adjusted.jsonl").read_text().splitlines()]
    assert sum(len(r["reasons"]) for r in adjusted) == sum(expected["adjusted"].values())
    assert not list((out / "shards").glob("*.part.json")) and not (out / "tokenize.json").exists()


def _corpus_content(out: Path) -> dict[str, object]:
    """Every file of a corpus folder: bytes, or (metadata, arrays) for safetensors, whose header order varies."""
    return {p.relative_to(out).as_posix(): _content(p) for p in sorted(out.rglob("*")) if p.is_file()}


def _content(path: Path) -> object:
    if path.suffix != ".safetensors":
        return path.read_bytes()
    with safe_open(str(path), framework="numpy") as f:
        return f.metadata(), {k: f.get_tensor(k).tobytes() for k in sorted(f.keys())}


def test_webdataset_shards_with_defects_give_exact_kept_and_skipped_counts(tiny_lm, lm_cache, codebook, shards, tmp_path):
    pattern, expected = shards
    result = tokenize_corpus(_config(tiny_lm, lm_cache, pattern, tmp_path / "c", image_tokenizer_path=str(codebook)))
    assert result.complete and result.parts_total == 3
    _check_counts(tmp_path / "c", expected)
    corpus = open_corpus(tmp_path / "c")
    assert corpus.tokens_per_image == 1024 and corpus.image_tokenizer["kind"] == "kmeans"
    assert all(c == c.strip() and c for c in corpus.captions(range(corpus.items)))


def test_resume_after_an_interrupted_run_gives_the_same_corpus_as_one_run(tiny_lm, lm_cache, codebook, shards, tmp_path):
    pattern, _ = shards
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    tokenize_corpus(_config(tiny_lm, lm_cache, pattern, whole, image_tokenizer_path=str(codebook)))
    first = tokenize_corpus(_config(tiny_lm, lm_cache, pattern, parts, image_tokenizer_path=str(codebook),
                                    stop_after_parts=1))
    assert not first.complete and first.parts_done == 1 and not (parts / "manifest.json").exists()
    stale = parts / "shards" / "shard-00001.safetensors"  # a half-written shard of the part that was cut off
    stale.write_bytes(b"partial")
    second = tokenize_corpus(_config(tiny_lm, lm_cache, pattern, parts, image_tokenizer_path=str(codebook), resume=True))
    assert second.complete and second.parts_done == 2
    assert _corpus_content(parts) == _corpus_content(whole)


def test_two_loader_workers_write_the_same_corpus_as_none(tiny_lm, lm_cache, codebook, shards, tmp_path):
    pattern, _ = shards
    tokenize_corpus(_config(tiny_lm, lm_cache, pattern, tmp_path / "a", image_tokenizer_path=str(codebook)))
    tokenize_corpus(_config(tiny_lm, lm_cache, pattern, tmp_path / "b", image_tokenizer_path=str(codebook), workers=2))
    assert _corpus_content(tmp_path / "a") == _corpus_content(tmp_path / "b")


def test_resume_of_a_finished_corpus_changes_nothing(tiny_lm, lm_cache, codebook, shards, tmp_path):
    pattern, _ = shards
    config = _config(tiny_lm, lm_cache, pattern, tmp_path / "c", image_tokenizer_path=str(codebook))
    tokenize_corpus(config)
    before = _corpus_content(tmp_path / "c")
    again = tokenize_corpus(_config(tiny_lm, lm_cache, pattern, tmp_path / "c", image_tokenizer_path=str(codebook),
                                    resume=True))
    assert again.complete and again.parts_done == 0 and _corpus_content(tmp_path / "c") == before


@pytest.mark.parametrize("captions", ["jsonl", "csv"])
def test_image_folder_with_a_captions_file_gives_exact_counts(tiny_lm, lm_cache, codebook, tmp_path, captions):
    from file_fixtures import make_image_folder

    folder, expected = make_image_folder(tmp_path / "images", n=8, seed=2, defects=True, captions=captions)
    tokenize_corpus(_config(tiny_lm, lm_cache, folder, tmp_path / "c", image_tokenizer_path=str(codebook), part_size=4))
    _check_counts(tmp_path / "c", expected)


@pytest.mark.parametrize("hf_struct", [False, True])
def test_parquet_file_gives_exact_counts(tiny_lm, lm_cache, codebook, tmp_path, hf_struct):
    from file_fixtures import make_parquet

    path, expected = make_parquet(tmp_path / "data.parquet", n=8, seed=3, defects=True, hf_struct=hf_struct)
    tokenize_corpus(_config(tiny_lm, lm_cache, path, tmp_path / "c", image_tokenizer_path=str(codebook)))
    _check_counts(tmp_path / "c", expected)


def test_saved_hf_dataset_gives_exact_counts(tiny_lm, lm_cache, codebook, tmp_path):
    from file_fixtures import make_hf_dataset

    path, expected = make_hf_dataset(tmp_path / "hf", n=6, seed=4, split="train")
    tokenize_corpus(_config(tiny_lm, lm_cache, path, tmp_path / "c", image_tokenizer_path=str(codebook)))
    _check_counts(tmp_path / "c", expected)


def test_pretokenized_npy_is_stored_as_given(tiny_lm, lm_cache, tmp_path):
    from file_fixtures import make_token_npy

    path, tokens, captions = make_token_npy(tmp_path / "tokens.npy", n=10, grid=32, codebook=16384, seed=5)
    tokenize_corpus(_config(tiny_lm, lm_cache, path, tmp_path / "c", image_tokenizer="pretokenized", part_size=4))
    corpus = open_corpus(tmp_path / "c")
    assert corpus.items == 10 and corpus.image_tokenizer["kind"] == "pretokenized"
    np.testing.assert_array_equal(corpus.image_tokens(range(10)), tokens.reshape(10, -1))
    assert corpus.captions(range(10)) == [c.strip() for c in captions]


def test_mismatched_pretokenized_array_is_refused_before_writing(capsys, tiny_lm, lm_cache, tmp_path):
    from file_fixtures import make_token_npy

    path, _, _ = make_token_npy(tmp_path / "tokens.npy", n=4, grid=16, codebook=16384, seed=6)
    line = refused(capsys, "tokenize", "--input", path, "--out", tmp_path / "c", "--image-tokenizer", "pretokenized",
                   "--lm", tiny_lm, "--cache-dir", lm_cache, "--workers", 0, "--no-progress")
    assert "256 token ids" in line and "1024" in line
    assert not (tmp_path / "c").exists()


def test_missing_input_is_refused_with_one_line(capsys, tiny_lm, tmp_path):
    line = refused(capsys, "tokenize", "--input", tmp_path / "nowhere", "--out", tmp_path / "c",
                   "--image-tokenizer", "kmeans", "--fit-codebook", "--lm", tiny_lm)
    assert "does not exist" in line and not (tmp_path / "c").exists()


def test_unfinished_run_needs_resume_and_the_same_options(capsys, tiny_lm, lm_cache, codebook, shards, tmp_path):
    pattern, _ = shards
    tokenize_corpus(_config(tiny_lm, lm_cache, pattern, tmp_path / "c", image_tokenizer_path=str(codebook),
                            stop_after_parts=1))
    common = ("tokenize", "--input", pattern, "--out", tmp_path / "c", "--lm", tiny_lm, "--cache-dir", lm_cache,
              "--workers", 0, "--no-progress", "--image-tokenizer", "kmeans")
    assert "--resume" in refused(capsys, *common, "--image-tokenizer-path", codebook)
    assert "differs" in refused(capsys, *common, "--fit-codebook", "--codebook-size", 32, "--resume")
    assert "differs" in refused(capsys, *common, "--image-tokenizer-path", codebook, "--min-side", 32, "--resume")
    assert not (tmp_path / "c" / "manifest.json").exists()


def test_fit_codebook_corpus_decodes_to_the_tokenizers_images_and_fits(capsys, tiny_lm, lm_cache, shards, tmp_path):
    from PIL import Image

    from tokalign.align.image_tokenizers.kmeans import PatchKMeansTokenizer

    pattern, expected = shards
    out = tmp_path / "c"
    code, stdout, err = run_main(capsys, "tokenize", "--input", pattern, "--out", out, "--image-tokenizer", "kmeans",
                                 "--fit-codebook", "--codebook-size", 32, "--codebook-images", 6, "--lm", tiny_lm,
                                 "--cache-dir", lm_cache, "--workers", 0, "--no-progress")
    assert code == 0, err
    assert f"{expected['kept']} items" in stdout
    corpus = open_corpus(out)
    tokenizer = PatchKMeansTokenizer.load(out / "image_tokenizer.safetensors")
    assert tokenizer.codebook_size == 32 and corpus.image_tokenizer["sha256"] == tokenizer.sha256
    code, _, err = run_main(capsys, "decode", "--corpus", out, "--index", "0:2", "--out", tmp_path / "png")
    assert code == 0, err
    png = np.asarray(Image.open(tmp_path / "png" / "000001.png"))
    np.testing.assert_array_equal(png, tokenizer.decode(corpus.image_tokens([1]))[0])
    np.save(tmp_path / "t.npy", corpus.image_tokens([0, 1]))
    code, _, err = run_main(capsys, "decode", "--tokens", tmp_path / "t.npy", "--image-tokenizer", "kmeans",
                            "--image-tokenizer-path", out / "image_tokenizer.safetensors", "--out", tmp_path / "png2")
    assert code == 0, err
    assert (tmp_path / "png2" / "000001.png").read_bytes() == (tmp_path / "png" / "000001.png").read_bytes()
    code, stdout, err = run_main(capsys, "fit", "--corpus", out, "--run", tmp_path / "run", "--lm", tiny_lm,
                                 "--cache-dir", lm_cache, "--steps", 3, "--batch-size", 4, "--holdout", 2,
                                 "--no-progress")
    assert code == 0, err
    assert (tmp_path / "run" / "table.safetensors").is_file()
