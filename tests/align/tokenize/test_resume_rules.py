"""`tokenize --resume` refuses what it cannot continue and accepts what it can; one writer per folder."""

from __future__ import annotations

import os

import pytest

from cli_run import refused, run_main
from tokalign.align.formats import outputs
from tokalign.align.formats.lock import exclusive_lock


@pytest.fixture
def tokens(tmp_path):
    from file_fixtures import make_token_npy

    return make_token_npy(tmp_path / "tokens.npy", n=8, grid=4, codebook=64, seed=3)[0]


def _tokenize(capsys, tiny_lm, lm_cache, input_, out, *extra):
    return run_main(capsys, "tokenize", "--input", input_, "--out", out, "--image-tokenizer", "pretokenized",
                    "--codebook-size", "64", "--grid", "4", "--shard-size", "2", "--workers", "0", "--lm", tiny_lm,
                    "--cache-dir", lm_cache, "--no-progress", *extra)


def test_resume_of_a_finished_corpus_with_other_options_is_refused(capsys, tiny_lm, lm_cache, tokens, tmp_path):
    out = tmp_path / "c"
    assert _tokenize(capsys, tiny_lm, lm_cache, tokens, out)[0] == 0
    code, _, err = run_main(capsys, "tokenize", "--input", tokens, "--out", out, "--image-tokenizer", "pretokenized",
                            "--codebook-size", "64", "--grid", "4", "--shard-size", "4", "--workers", "0", "--lm",
                            tiny_lm, "--cache-dir", lm_cache, "--no-progress", "--resume")
    assert code == 2 and "cannot resume" in err and "differs from this run" in err
    assert _tokenize(capsys, tiny_lm, lm_cache, tokens, out, "--resume")[0] == 0  # same options: nothing to do


def test_the_same_input_given_as_an_absolute_path_resumes(capsys, tiny_lm, lm_cache, tokens, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "c"
    code, stdout, _ = _tokenize(capsys, tiny_lm, lm_cache, "tokens.npy", out, "--stop-after-parts", "1")
    assert code == 0 and "stopped after 1" in stdout
    code, stdout, err = _tokenize(capsys, tiny_lm, lm_cache, os.path.abspath("tokens.npy"), out, "--resume")
    assert code == 0, err
    assert "8 items" in stdout


@pytest.mark.parametrize("flag", ["--resume", "--force"])
def test_a_folder_killed_in_the_start_up_window_is_accepted(capsys, tiny_lm, lm_cache, tokens, tmp_path, flag):
    out = tmp_path / "c"
    out.mkdir()
    outputs.write_marker(out, outputs.CORPUS)  # what a kill before tokenize.json leaves
    (out / "image_tokenizer.safetensors").write_bytes(b"half")
    (out / outputs.LOCK).write_text("12345 tokenize\n")  # the dead writer's lock file
    code, stdout, err = _tokenize(capsys, tiny_lm, lm_cache, tokens, out, flag)
    assert code == 0, err
    assert "8 items" in stdout and not (out / outputs.LOCK).exists()


def test_a_second_writer_of_the_same_folder_is_refused(capsys, tiny_lm, lm_cache, tokens, tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    with exclusive_lock(out, "tokenize"):
        line = refused(capsys, "tokenize", "--input", tokens, "--out", out, "--image-tokenizer", "pretokenized",
                       "--codebook-size", "64", "--grid", "4", "--workers", "0", "--lm", tiny_lm, "--cache-dir",
                       lm_cache, "--no-progress")
    assert "being written by another tokalign process" in line
    assert sorted(p.name for p in out.iterdir()) == []


def test_force_never_deletes_the_input_when_it_lies_inside_the_corpus_folder(tmp_path, tiny_lm, lm_cache):
    """A brace pattern names no single path; its tar files are inputs all the same and --out must keep clear."""
    from wds_fixtures import make_shards

    from tokalign.align.errors import TokalignError
    from tokalign.align.formats.corpus import write_manifest
    from tokalign.align.sources.spec import SourceSpec
    from tokalign.align.tokenize.config import TokenizeConfig
    from tokalign.align.tokenize.pipeline import tokenize_corpus

    out = tmp_path / "C"
    pattern, _ = make_shards(out / "raw", n_shards=2, per_shard=2, seed=3, defects=False)
    write_manifest(out, shards=[], tokens_per_image=1024, image_tokenizer={"codebook_size": 64},
                   text_tokenizer={})  # an (empty) corpus of ours, so the folder itself may be rebuilt
    tars = sorted((out / "raw").glob("*.tar"))
    before = {p: p.read_bytes() for p in tars}
    config = TokenizeConfig(source=SourceSpec(input=pattern), out=out, image_tokenizer="kmeans", fit_codebook=True,
                            codebook_size=16, codebook_images=4, lm=tiny_lm, cache_root=lm_cache, workers=0,
                            force=True, progress=False)
    with pytest.raises(TokalignError, match="input"):
        tokenize_corpus(config)
    assert {p: p.read_bytes() for p in tars} == before


def test_a_library_error_that_merely_mentions_a_code_stays_what_it_is(tmp_path):
    from tokalign.align.formats import atomic

    with pytest.raises(RuntimeError, match="error code: 2"):
        with atomic.atomic_dir(tmp_path / "out"):
            raise RuntimeError("CUDA kernel failed (error code: 2)")
