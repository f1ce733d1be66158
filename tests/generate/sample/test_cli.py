"""``tokalign generator sample`` on the command line: output lines and one-line refusals."""

from __future__ import annotations

import math

from cli_run import refused, run_main


def test_samples_and_reports_images_per_second(generator, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\nblue square\n")
    code, out, err = run_main(capsys, "generator", "sample", "--model", generator, "--prompts", prompts, "-n", 2,
                              "--out", tmp_path / "out", "--cfg-scale", 2.5, "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert "images/s" in out and str(tmp_path / "out" / "grid.png") in out
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 4


def test_bad_inputs_are_one_line_exit_2(generator, tmp_path, capsys):
    base = ("generator", "sample", "--model", generator, "--out", tmp_path / "out", "--device", "cpu", "--no-progress")
    with_prompt = base + ("--prompt", "a red circle")
    not_a_generator = tmp_path / "plain"
    not_a_generator.mkdir()
    assert "not a tokalign generator" in refused(capsys, "generator", "sample", "--model", not_a_generator,
                                                 "--prompt", "x", "--out", tmp_path / "o")
    assert "-n 0" in refused(capsys, *with_prompt, "-n", 0)
    assert "--cfg-scale" in refused(capsys, *with_prompt, "--cfg-scale", -1)
    assert "--cfg-scale" in refused(capsys, *with_prompt, "--cfg-scale", math.nan)
    assert "--top-p" in refused(capsys, *with_prompt, "--top-p", 0)
    assert "--top-p" in refused(capsys, *with_prompt, "--top-p", 1.5)
    assert "--temperature" in refused(capsys, *with_prompt, "--temperature", 0)
    assert "--prompt" in refused(capsys, *base)
    assert not (tmp_path / "out").exists()


def test_image_only_prompt_and_foreign_tokenizer_are_refused(generator, tiny_corpus, tmp_path, capsys):
    from tiny_generator import make_tiny_corpus, make_tiny_generator

    uncond = make_tiny_generator(tmp_path / "uncond", tiny_corpus, mode="image-only", caption_dropout=0.0)
    line = refused(capsys, "generator", "sample", "--model", uncond, "--prompt", "a red circle", "--out",
                   tmp_path / "o", "--device", "cpu")
    assert "image-only" in line
    other = make_tiny_corpus(tmp_path / "other", seed=3)
    line = refused(capsys, "generator", "sample", "--model", generator, "--prompt", "a", "--corpus", other, "--out",
                   tmp_path / "o", "--device", "cpu")
    assert "sha256" in line and not (tmp_path / "o").exists()


def test_cfg_on_a_model_without_caption_dropout_warns_on_stderr(tiny_corpus, tmp_path, capsys):
    from tiny_generator import make_tiny_generator

    model = make_tiny_generator(tmp_path / "nodrop", tiny_corpus, caption_dropout=0.0)
    code, out, err = run_main(capsys, "generator", "sample", "--model", model, "--prompt", "a", "-n", 1, "--out",
                              tmp_path / "o", "--cfg-scale", 3, "--device", "cpu", "--no-progress")
    assert code == 0 and "caption dropout 0" in err


def test_generation_time_apart_from_loading_and_undecodable_prompts_refused(generator, tmp_path, capsys):
    code, out, err = run_main(capsys, "generator", "sample", "--model", generator, "--prompt", "a red circle", "-n", 1,
                              "--out", tmp_path / "out", "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert "loaded in" in out and "sampled 1 images in" in out and "fast path" in out
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"fine\nbad \xc3\x28 prompt\n")
    line = refused(capsys, "generator", "sample", "--model", generator, "--prompts", prompts, "--out", tmp_path / "o2",
                   "--device", "cpu")
    assert "line 2" in line and "not UTF-8" in line and not (tmp_path / "o2").exists()


def test_a_corpus_that_cannot_decode_exits_0_with_the_tokens(tiny_corpus, tmp_path, capsys):
    import shutil

    from tiny_generator import make_tiny_generator

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    model = make_tiny_generator(tmp_path / "model", corpus)
    shutil.rmtree(corpus)  # the corpus moved away
    code, out, err = run_main(capsys, "generator", "sample", "--model", model, "--prompt", "a", "-n", 2, "--out",
                              tmp_path / "o", "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert "writing the sampled tokens only" in err and "not decoded" in out
    assert (tmp_path / "o" / "samples.safetensors").is_file() and not (tmp_path / "o" / "grid.png").exists()
