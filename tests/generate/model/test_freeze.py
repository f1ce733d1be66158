"""Freeze presets train exactly what they name; new-rows keeps the LM's rows bit-identical."""

from __future__ import annotations

import re

import pytest
import torch

from tokalign.align.errors import TokalignError
from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.model.base import is_tied, load_base_lm
from tokalign.generate.model.freeze import FREEZE_PRESETS, apply_freeze, merge_split_rows, optimizer_groups
from tokalign.generate.model.init_modes import InitRequest, initialize

EMB = r"embed_tokens|lm_head"
NORM = r"norm"
EXPECTED = {  # name patterns, written independently of the role detection
    "all": r".",
    "embeddings": EMB,
    "embeddings+norms": f"{EMB}|{NORM}",
    "embeddings+norms+first-half": f"{EMB}|{NORM}|layers\\.0\\.",
    "embeddings+norms+ffn": f"{EMB}|{NORM}|mlp",
}


def _expanded(spec, seed=0):
    base = load_base_lm(spec)
    layout = VocabLayout(base.text_rows, 64)
    return initialize(base, "random-rows", InitRequest(layout, seed=seed)).model, layout


def _batch(layout, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, layout.used_rows - 1, (4, 12), generator=generator)
    return ids


def _train(model, layout, steps=3, weight_decay=0.1):
    model.train()
    optimizer = torch.optim.AdamW(optimizer_groups(model, weight_decay), lr=1e-2, betas=(0.9, 0.95))
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        ids = _batch(layout, step)
        model(input_ids=ids, labels=ids).loss.backward()
        if step == 0:
            grads = {n: p.grad for n, p in model.named_parameters()}
        optimizer.step()
    return optimizer, grads


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_preset_trains_exactly_what_it_names(tiny_llama, preset):
    model, layout = _expanded(tiny_llama)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = apply_freeze(model, preset)
    expected = {n for n in before if re.search(EXPECTED[preset], n)}
    assert set(report.trainable_names) == expected
    assert report.trainable == sum(before[n].numel() for n in expected)
    assert report.total == sum(t.numel() for t in before.values())
    optimizer, grads = _train(model, layout)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        if name in expected:
            assert grads[name] is not None and grads[name].abs().sum() > 0, name
            assert not torch.equal(param.detach(), before[name]), name
            assert id(param) in in_optimizer
        else:
            assert grads[name] is None and id(param) not in in_optimizer, name
            assert torch.equal(param.detach(), before[name]), name


def test_tied_embeddings_preset_trains_the_head_too(tiny_llama_tied):
    model, _ = _expanded(tiny_llama_tied)
    apply_freeze(model, "embeddings")
    assert is_tied(model) and model.get_output_embeddings().weight.requires_grad


def test_new_rows_keeps_lm_rows_bit_identical_and_merges_to_a_plain_model(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    model, layout = _expanded(tiny_llama)
    tied = is_tied(model)
    v = layout.text_rows
    emb0 = model.get_input_embeddings().weight.detach().clone()
    head0 = model.get_output_embeddings().weight.detach().clone()
    rest0 = {n: p.detach().clone() for n, p in model.named_parameters() if not re.search(EMB, n)}
    report = apply_freeze(model, "new-rows", text_rows=v)
    assert set(report.trainable_names) == ({"model.embed_tokens.new"} if tied else
                                           {"model.embed_tokens.new", "lm_head.new"})
    assert is_tied(model) == tied
    _train(model, layout, weight_decay=0.1)
    merge_split_rows(model)
    emb, head = model.get_input_embeddings().weight.detach(), model.get_output_embeddings().weight.detach()
    assert isinstance(model.get_input_embeddings(), torch.nn.Embedding) and is_tied(model) == tied
    assert torch.equal(emb[:v], emb0[:v]) and not torch.equal(emb[v:], emb0[v:])
    assert torch.equal(head[:v], head0[:v])
    for name, tensor in rest0.items():
        assert torch.equal(dict(model.named_parameters())[name].detach(), tensor), name
    model.eval()
    ids = _batch(layout, 9)
    model.save_pretrained(tmp_path / "m")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert torch.equal(model(ids).logits, again(ids).logits)


def test_split_model_gives_the_plain_model_logits(tiny_llama):
    model, layout = _expanded(tiny_llama)
    model.eval()
    ids = _batch(layout, 4)
    plain = model(ids).logits
    apply_freeze(model, "new-rows", text_rows=layout.text_rows)
    torch.testing.assert_close(model(ids).logits, plain, rtol=0, atol=0)


def test_optimizer_groups_decay_matrices_only(tiny_llama_untied):
    model, _ = _expanded(tiny_llama_untied)
    apply_freeze(model, "embeddings+norms")
    groups = optimizer_groups(model, 0.1)
    decay = [g for g in groups if g["weight_decay"] > 0][0]["params"]
    no_decay = [g for g in groups if g["weight_decay"] == 0][0]["params"]
    assert all(p.ndim >= 2 for p in decay) and all(p.ndim == 1 for p in no_decay)
    assert len(decay) == 2  # embedding and head
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters() if p.requires_grad)


def test_registry_and_unknown_preset(tiny_llama_tied):
    assert set(FREEZE_PRESETS) == set(EXPECTED) | {"new-rows"}
    model, _ = _expanded(tiny_llama_tied)
    with pytest.raises(TokalignError, match="--train-only"):
        apply_freeze(model, "heads")
