"""Init modes: where each row of the expanded vocabulary comes from."""

from __future__ import annotations


import pytest
import torch

from tokalign.align.errors import TokalignError
from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.model.base import is_tied, load_base_lm
from tokalign.generate.model.init_modes import INIT_MODES, InitRequest, initialize


def _layout(base, codebook=64):
    return VocabLayout(base.text_rows, codebook)


def _text(base):
    emb = base.model.get_input_embeddings().weight.detach().clone()
    head = base.model.get_output_embeddings().weight.detach().clone()
    return emb, head


def test_registry_holds_the_four_modes():
    assert set(INIT_MODES) == {"aligned", "random-rows", "mean", "scratch"}
    assert not INIT_MODES["scratch"].pretrained and INIT_MODES["aligned"].pretrained


def test_aligned_puts_exactly_the_exported_rows_and_keeps_text_rows(image_tokenizer, tiny_llama, write_export):
    base = load_base_lm(tiny_llama)
    path, image, special = write_export(base)
    emb0, head0 = _text(base)
    layout = _layout(base)
    tied = base.tied
    result = initialize(base, "aligned", InitRequest(layout, init_from=path, image_tokenizer=image_tokenizer))
    weight = result.model.get_input_embeddings().weight.detach()
    v, so = layout.text_rows, layout.special_offset
    assert weight.shape == (layout.total_rows, 32) and layout.total_rows % 64 == 0
    assert torch.equal(weight[:v], emb0)
    assert torch.equal(weight[v:so], image) and torch.equal(weight[so:layout.used_rows], special)
    assert torch.count_nonzero(weight[layout.used_rows:]) == 0
    head = result.model.get_output_embeddings().weight.detach()
    if tied:
        assert is_tied(result.model) and result.provenance["output_rows"]["rule"].startswith("tied")
    else:  # untied rule: the new input rows times one factor, to the head's mean text-row norm
        assert torch.equal(head[:v], head0)
        new = torch.cat([image, special])
        factor = head0.norm(dim=1).mean() / new.norm(dim=1).mean()
        torch.testing.assert_close(head[v:layout.used_rows], new * factor)
        torch.testing.assert_close(head[v:layout.used_rows].norm(dim=1).mean(), head0.norm(dim=1).mean())
    kinds = {row["kind"]: row for row in result.provenance["input_rows"]}
    assert kinds["image"]["rows"] == [v, so] and "generator-init" in kinds["image"]["from"]
    assert result.provenance["init_from"]["tensor_sha256"]


def test_aligned_refuses_an_export_for_another_lm(image_tokenizer, tiny_llama_tied, tiny_llama_untied, write_export):
    other = load_base_lm(tiny_llama_untied)
    path, _, _ = write_export(other)
    base = load_base_lm(tiny_llama_tied)
    with pytest.raises(TokalignError, match="another LM"):
        initialize(base, "aligned", InitRequest(_layout(base), init_from=path, image_tokenizer=image_tokenizer))


def test_aligned_refuses_an_export_with_another_lm_identity(image_tokenizer, tiny_llama_tied, write_export):
    base = load_base_lm(tiny_llama_tied)
    path, _, _ = write_export(base, lm=dict(base.identity, name="someone-else"))
    with pytest.raises(TokalignError, match="export again"):
        initialize(base, "aligned", InitRequest(_layout(base), init_from=path, image_tokenizer=image_tokenizer))


def test_aligned_refuses_an_export_for_another_codebook(image_tokenizer, tiny_llama_tied, write_export):
    base = load_base_lm(tiny_llama_tied)
    path, _, _ = write_export(base, codebook=32)
    with pytest.raises(TokalignError, match="32-code"):
        initialize(base, "aligned", InitRequest(_layout(base), init_from=path, image_tokenizer=image_tokenizer))


def test_aligned_refuses_an_export_for_another_image_tokenizer(image_tokenizer, tiny_llama_tied, write_export):
    base = load_base_lm(tiny_llama_tied)
    path, _, _ = write_export(base, image_tokenizer=dict(image_tokenizer, sha256="b" * 64))
    with pytest.raises(TokalignError, match="image tokenizer"):
        initialize(base, "aligned", InitRequest(_layout(base), init_from=path, image_tokenizer=image_tokenizer))


def test_aligned_refuses_non_finite_rows(image_tokenizer, tiny_llama_tied, write_export):
    base = load_base_lm(tiny_llama_tied)
    path, _, _ = write_export(base, nan=True)
    with pytest.raises(TokalignError, match="NaN"):
        initialize(base, "aligned", InitRequest(_layout(base), init_from=path, image_tokenizer=image_tokenizer))


def test_random_rows_match_lm_statistics_and_are_not_mean_resized(tiny_llama_tied):
    base = load_base_lm(tiny_llama_tied)
    emb0, _ = _text(base)
    layout = _layout(base, codebook=1024)
    model = initialize(base, "random-rows", InitRequest(layout, seed=3)).model
    weight = model.get_input_embeddings().weight.detach()
    new = weight[layout.text_rows:layout.used_rows]
    assert torch.equal(weight[:layout.text_rows], emb0)
    torch.testing.assert_close(new.norm(dim=1), torch.full((len(new),), float(emb0.norm(dim=1).mean())))
    assert (new.std(dim=0) - emb0.std(dim=0)).abs().max() < 0.15 * emb0.std(dim=0).mean()
    spread = torch.cdist(new[:100], new[:100]).mean()
    assert spread > 0.5 * torch.cdist(emb0, emb0).mean()  # mean resizing would put them all near one point


def test_random_rows_are_seeded(tiny_llama_tied):
    rows = []
    for seed in (0, 0, 1):
        base = load_base_lm(tiny_llama_tied)
        model = initialize(base, "random-rows", InitRequest(_layout(base), seed=seed)).model
        rows.append(model.get_input_embeddings().weight.detach())
    assert torch.equal(rows[0], rows[1]) and not torch.equal(rows[0], rows[2])


def test_mean_rows_lie_near_the_mean_row(tiny_llama_tied):
    base = load_base_lm(tiny_llama_tied)
    emb0, _ = _text(base)
    layout = _layout(base)
    weight = initialize(base, "mean", InitRequest(layout)).model.get_input_embeddings().weight.detach()
    assert torch.equal(weight[:layout.text_rows], emb0)
    distance = (weight[layout.text_rows:] - emb0.mean(dim=0)).norm(dim=1)
    assert distance.max() < 0.05 * emb0.norm(dim=1).mean()


def test_scratch_shares_no_tensor_with_the_lm(tiny_llama):
    base = load_base_lm(tiny_llama)
    lm = {k: v.detach().clone() for k, v in base.model.named_parameters()}
    layout = _layout(base)
    result = initialize(base, "scratch", InitRequest(layout, seed=5))
    assert not result.pretrained
    params = dict(result.model.named_parameters())
    assert set(params) == set(lm)
    for name, tensor in lm.items():
        rows = params[name].detach()[: tensor.shape[0]]
        assert not torch.equal(rows, tensor), name
        assert not (rows == tensor).all(dim=-1).any() if tensor.ndim == 2 else True, name
    assert result.model.get_input_embeddings().weight.shape[0] == layout.total_rows


def test_untie_gives_a_separate_head_that_round_trips(tiny_llama_tied, tmp_path):
    from transformers import AutoModelForCausalLM

    base = load_base_lm(tiny_llama_tied)
    emb0, _ = _text(base)
    layout = _layout(base)
    result = initialize(base, "random-rows", InitRequest(layout, untie=True))
    model = result.model
    assert not is_tied(model) and result.provenance["untie"] and not model.config.tie_word_embeddings
    head = model.get_output_embeddings().weight.detach()
    assert torch.equal(head[:layout.text_rows], emb0)
    torch.testing.assert_close(head, model.get_input_embeddings().weight.detach())  # factor 1 after a clone
    model.save_pretrained(tmp_path / "m")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    ids = torch.tensor([[1, 5, layout.image_offset + 3, layout.special("<image>")]])
    assert not is_tied(again)
    assert torch.equal(model(ids).logits, again(ids).logits)


def test_unknown_mode_and_mismatched_layout_are_refused(tiny_llama_tied):
    base = load_base_lm(tiny_llama_tied)
    with pytest.raises(TokalignError, match="unknown --init"):
        initialize(base, "magic", InitRequest(_layout(base)))
    with pytest.raises(TokalignError, match="text rows"):
        initialize(base, "mean", InitRequest(VocabLayout(base.text_rows + 1, 64)))
    initialize(base, "mean", InitRequest(_layout(base)))
    with pytest.raises(TokalignError, match="already expanded"):
        initialize(base, "random-rows", InitRequest(_layout(base)))


def test_provenance_row_ranges_cover_the_vocabulary(tiny_llama_untied):
    base = load_base_lm(tiny_llama_untied)
    layout = _layout(base)
    provenance = initialize(base, "random-rows", InitRequest(layout)).provenance
    ranges = [row["rows"] for row in provenance["input_rows"]]
    assert ranges[0][0] == 0 and ranges[-1][1] == layout.total_rows
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert provenance["output_rows"]["factor"] > 0
    import json

    json.dumps(provenance)
