"""``tokalign demo-corpus --patch``: the grid a demo corpus is tokenized on, and --if-missing keeping only its own."""

from __future__ import annotations

import json

import numpy as np

from cli_run import refused, run_main


def _lm_args(tiny_lm, lm_cache) -> list[str]:
    return ["--lm", str(tiny_lm), "--cache-dir", str(lm_cache), "--no-progress"]


def test_patch_sets_the_grid_and_the_tokens_are_the_tokenizers(tmp_path, tiny_lm, lm_cache, capsys):
    from tokalign.align.image_tokenizers.kmeans import PatchKMeansTokenizer
    from tokalign.align.formats.corpus import open_corpus
    from tokalign.align.sources.shapes import make_scene, render

    out = tmp_path / "coarse"
    code, _, err = run_main(capsys, "demo-corpus", "--out", out, "--items", "12", "--codebook-size", "8",
                            "--codebook-images", "4", "--patch", "64", *_lm_args(tiny_lm, lm_cache))
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokens_per_image"] == 16 and manifest["image_tokenizer"]["grid"] == [4, 4]
    assert manifest["image_tokenizer"]["patch"] == 64
    tokenizer = PatchKMeansTokenizer.load(out / manifest["image_tokenizer"]["file"])
    scenes = np.stack([render(make_scene(0, i))[0] for i in (0, 11)])
    np.testing.assert_array_equal(open_corpus(out).image_tokens([0, 11]), tokenizer.encode(scenes))


def test_a_patch_that_does_not_divide_the_scene_is_refused(tmp_path, tiny_lm, lm_cache, capsys):
    out = tmp_path / "bad"
    line = refused(capsys, "demo-corpus", "--out", out, "--items", "4", "--patch", "24", *_lm_args(tiny_lm, lm_cache))
    assert "--patch 24" in line and "256" in line
    assert not out.exists()


def test_if_missing_refuses_a_corpus_built_with_other_settings(tmp_path, tiny_lm, lm_cache, capsys):
    out = tmp_path / "c"
    tiny = ["--items", "8", "--codebook-size", "8", "--codebook-images", "4", *_lm_args(tiny_lm, lm_cache)]
    code, _, err = run_main(capsys, "demo-corpus", "--out", out, "--patch", "64", *tiny)
    assert code == 0, err
    before = (out / "manifest.json").read_text()
    code, stdout, err = run_main(capsys, "demo-corpus", "--out", out, "--patch", "64", *tiny, "--if-missing")
    assert code == 0 and "already built" in stdout, err
    line = refused(capsys, "demo-corpus", "--out", out, "--patch", "128", *tiny, "--if-missing")
    assert "--patch 64 (there) vs 128 (asked)" in line and "--force" in line
    assert (out / "manifest.json").read_text() == before
