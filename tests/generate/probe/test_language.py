"""The language half of the probe: perplexity ranks a known-good model below a shuffled copy, off-text mass."""

from __future__ import annotations

import math

import pytest
import torch

from probe_models import TEXT, shuffled_copy


def test_packaged_text_is_plain_prose_and_named():
    from tokalign.generate.probe.heldout_text import packaged_text

    text = packaged_text()
    assert "pydoc_data.topics" in text.source and "Python" in text.source
    assert len(text.text.split()) > 1500 and "****" not in text.text and "====" not in text.text
    assert packaged_text() == text  # deterministic


def test_prompts_ship_as_package_data():
    from tokalign.generate.probe.prompts import load_prompts, translation_hit

    prompts = load_prompts()
    assert "The capital of France is" in prompts.knowledge
    first = prompts.translations[0]
    assert first.prompt.endswith("cheese =>") and "sea otter => loutre de mer" in first.prompt
    assert translation_hit(" Fromage\nbread => pain", "fromage") and not translation_hit(" I love cheese", "fromage")


def test_known_good_model_has_lower_perplexity_than_its_shuffled_copy(good_generator, trained_lm, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokalign.generate.model_folder import read_record
    from tokalign.generate.probe.language import perplexity

    layout = read_record(good_generator).layout
    tokenizer = AutoTokenizer.from_pretrained(good_generator)
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    shuffled = shuffled_copy(good_generator, tmp_path / "shuffled")
    good = perplexity(AutoModelForCausalLM.from_pretrained(good_generator).eval(), ids, 64, layout)
    bad = perplexity(AutoModelForCausalLM.from_pretrained(shuffled).eval(), ids, 64, layout)
    base = perplexity(AutoModelForCausalLM.from_pretrained(trained_lm).eval(), ids, 64)
    # the reference, computed here: a uniform guess over the base LM's vocabulary has perplexity equal to its size
    uniform = len(AutoTokenizer.from_pretrained(trained_lm))
    assert base["perplexity"] < uniform / 3, (base, uniform)  # training taught the text
    assert good["perplexity"] < uniform / 2, (good, uniform)  # the expanded model kept most of it
    assert bad["perplexity"] > 5 * good["perplexity"], (good, bad)
    # the text rows are the base's: renormalized over them, the generator scores exactly like its base
    assert good["perplexity_text_renormalized"] == pytest.approx(base["perplexity"], rel=1e-4)
    assert good["tokens_scored"] == len(ids) - math.ceil(len(ids) / 64)
    mass = good["mass_off_text"]
    assert 0 < mass["padding"] < mass["image"] < mass["total"] < 1  # zero padding rows still get logit 0
    assert good["perplexity_text_renormalized"] <= good["perplexity"] + 1e-9
    assert "perplexity_text_renormalized" not in base


def test_perplexity_equals_a_direct_cross_entropy(trained_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokalign.generate.probe.language import perplexity

    model = AutoModelForCausalLM.from_pretrained(trained_lm).eval()
    ids = AutoTokenizer.from_pretrained(trained_lm)(TEXT, add_special_tokens=False)["input_ids"][:40]
    with torch.no_grad():
        want = float(model(torch.tensor([ids]), labels=torch.tensor([ids])).loss)
    assert perplexity(model, ids, 40)["nll"] == pytest.approx(want, rel=1e-5)


def test_greedy_uses_the_cache_like_a_full_recompute(trained_lm):
    from transformers import AutoModelForCausalLM

    from tokalign.generate.probe.language import greedy

    model = AutoModelForCausalLM.from_pretrained(trained_lm).eval()
    prompt = [4, 5, 6]
    got = greedy(model, prompt, 6)
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(6):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert got == ids[3:]
