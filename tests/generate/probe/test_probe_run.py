"""``run_probe`` end to end on tiny generators made by the trainer's own init and save code."""

from __future__ import annotations

import json

import pytest

from probe_models import TEXT, make_generator, shuffled_copy, write_export


def _config(model, tmp_path, **kw):
    from tokalign.generate.probe.config import ProbeConfig

    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    return ProbeConfig(model=model, text_file=text, window=64, max_new_tokens=4, k=5, progress=False, device="cpu", **kw)


def test_the_probe_of_a_fresh_aligned_generator(good_generator, tmp_path):
    from tokalign.generate.probe.run import run_probe

    result = run_probe(_config(good_generator, tmp_path, out=tmp_path / "probe"))
    report = json.loads(result.json_path.read_text())
    assert report == json.loads(json.dumps(result.report))
    lang = report["language"]
    assert lang["generator"]["perplexity"]["perplexity_text_renormalized"] == pytest.approx(
        lang["base"]["perplexity"]["perplexity"], rel=1e-4)
    assert len(lang["base"]["completions"]) == len(lang["generator"]["completions"]) >= 5
    assert 0 <= lang["base"]["translation"]["exact_match"] <= 1 and len(lang["base"]["translation"]["items"]) == 8
    rows = report["image_rows"]  # 0 steps: every image row is still exactly its init row
    assert rows["cosine"]["min"] == pytest.approx(1.0, abs=1e-5) and rows["overlap"]["mean"] == 1.0
    assert rows["kept_any_neighbour"] == 1.0 and "generator-init" in rows["init"]
    assert report["text"]["source"].startswith("file ") and report["image_quality"] is None
    md = result.markdown_path.read_text()
    assert "| perplexity, held-out text" in md and "chance" in md and "Not measured" in md


def test_a_shuffled_generator_scores_worse_and_loses_its_rows(good_generator, tmp_path):
    from tokalign.generate.probe.run import run_probe

    shuffled = shuffled_copy(good_generator, tmp_path / "shuffled")
    report = run_probe(_config(shuffled, tmp_path)).report
    assert (shuffled / "probe" / "probe.json").is_file()  # default out: MODEL/probe
    lang = report["language"]
    assert lang["generator"]["perplexity"]["perplexity"] > 5 * lang["base"]["perplexity"]["perplexity"]
    rows = report["image_rows"]
    assert rows["cosine"]["mean"] < 0.5 and rows["overlap"]["mean"] < 0.5


def test_random_rows_init_is_rebuilt_and_init_from_overrides(trained_lm, corpus, tmp_path):
    from tokalign.generate.model.base import load_base_lm
    from tokalign.generate.probe.run import run_probe

    model = make_generator(tmp_path / "model", trained_lm, corpus, mode="random-rows", seed=3)
    rows = run_probe(_config(model, tmp_path)).report["image_rows"]
    assert rows["cosine"]["min"] == pytest.approx(1.0, abs=1e-5) and "random-rows rebuilt (seed 3)" in rows["init"]
    base = load_base_lm(str(trained_lm))
    identity = json.loads((corpus / "manifest.json").read_text())["image_tokenizer"]
    other = write_export(tmp_path / "other.safetensors", base, identity, seed=11)
    rows = run_probe(_config(model, tmp_path, init_from=other)).report["image_rows"]
    assert rows["cosine"]["mean"] < 0.5 and "--init-from" in rows["init"]
    assert rows["overlap"]["mean"] < 2.5 * rows["chance"]["overlap"]


def test_scratch_skips_the_rows_but_probes_the_language(trained_lm, corpus, tmp_path):
    from tokalign.generate.probe.run import run_probe

    model = make_generator(tmp_path / "model", trained_lm, corpus, mode="scratch")
    report = run_probe(_config(model, tmp_path)).report
    assert "scratch" in report["image_rows"]["skipped"] and report["language"]["generator"]["perplexity"]["perplexity"] > 0


def test_a_second_probe_takes_the_base_figures_from_the_cache(good_generator, tmp_path, monkeypatch):
    import tokalign.generate.model.base as base_module
    from tokalign.generate.probe.run import run_probe

    first = run_probe(_config(good_generator, tmp_path, out=tmp_path / "a", cache_root=tmp_path / "cache")).report

    def no_load(*args, **kwargs):
        raise AssertionError("the base LM was loaded although its figures are cached")

    monkeypatch.setattr(base_module, "load_base_lm", no_load)
    second = run_probe(_config(good_generator, tmp_path, out=tmp_path / "b", cache_root=tmp_path / "cache")).report
    assert second["language"]["base"] == first["language"]["base"] and "cached" in second["base"]
    assert second["image_rows"]["overlap"] == first["image_rows"]["overlap"]
