"""The sampling loop on a tiny random generator: validity, reproducibility, CFG, KV cache."""

from __future__ import annotations

import torch

from tokalign.generate.sample import prefix as px
from tokalign.generate.sample.constraint import image_bias
from tokalign.generate.sample.distribution import sample_next
from tokalign.generate.sample.sampler import Settings, mix, sample_image_ids
from tokalign.generate.sample.seeds import uniforms

PROMPTS = ("a red circle", "big blue square on the left", "", "green")


def _prefixes(loaded, prompts=PROMPTS):
    layout = loaded.record.layout
    return [px.text_prefix(px.caption_ids(loaded.tokenizer, p, layout, 16), layout) for p in prompts]


def _sample(loaded, prompts=PROMPTS, seeds=None, **kw):
    layout, steps = loaded.record.layout, loaded.record.tokens_per_image
    seeds = list(range(len(prompts))) if seeds is None else seeds
    kw.setdefault("settings", Settings())
    return sample_image_ids(loaded.model, _prefixes(loaded, prompts), layout=layout, steps=steps,
                            uniforms=uniforms(seeds, steps), unconditional=px.unconditional_prefix(layout), **kw)


def test_without_the_mask_the_random_model_would_leave_the_image(loaded):
    """The model alone puts most mass outside the image ids: the mask is what keeps samples valid."""
    layout = loaded.record.layout
    ids = torch.tensor([_prefixes(loaded)[0]])
    probs = torch.softmax(loaded.model(input_ids=ids).logits[0, -1].float(), -1)
    assert probs[layout.image_offset:layout.special_offset].sum() < 0.9
    assert probs[list(layout.padding_ids)].sum() > 0


def test_always_exactly_the_grid_of_valid_image_ids(loaded):
    layout, steps = loaded.record.layout, loaded.record.tokens_per_image
    for seed in range(12):
        settings = Settings(temperature=1.5, top_k=0 if seed % 2 else 7, top_p=1.0 if seed % 3 else 0.9,
                            cfg_scale=(1.0, 3.0, 0.0)[seed % 3])
        ids = _sample(loaded, seeds=[seed * 10 + i for i in range(len(PROMPTS))], settings=settings)
        assert ids.shape == (len(PROMPTS), steps) and ids.dtype == torch.long
        assert ((ids >= layout.image_offset) & (ids < layout.special_offset)).all()
        for prefix, row in zip(_prefixes(loaded), ids.tolist()):
            document = px.document(prefix, row, layout)
            assert document[:2] == [layout.special("<doc>"), layout.special("<text>")]
            start = document.index(layout.special("<image>")) + 1
            assert document[start - 2] == layout.special("</text>")
            assert document[start:start + steps] == row and document[start + steps:] == px.suffix(layout)


def test_same_seed_same_tokens_other_seed_other_tokens(loaded):
    settings = Settings(cfg_scale=2.0, top_k=20)
    a, b = _sample(loaded, settings=settings), _sample(loaded, settings=settings)
    c = _sample(loaded, seeds=[7, 8, 9, 10], settings=settings)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_row_does_not_depend_on_the_rest_of_the_batch(loaded):
    settings = Settings(cfg_scale=3.0)
    full = _sample(loaded, settings=settings)
    alone = _sample(loaded, prompts=PROMPTS[1:2], seeds=[1], settings=settings)
    other_company = _sample(loaded, prompts=(PROMPTS[1], "small", PROMPTS[0]), seeds=[1, 40, 41], settings=settings)
    assert torch.equal(full[1], alone[0]) and torch.equal(full[1], other_company[0])


def test_cfg_scale_one_equals_conditional_sampling(loaded):
    plain = _sample(loaded, settings=Settings(cfg_scale=1.0), guided=False)
    forced = _sample(loaded, settings=Settings(cfg_scale=1.0), guided=True)
    assert torch.equal(plain, forced)
    assert not torch.equal(plain, _sample(loaded, settings=Settings(cfg_scale=4.0)))


def test_cached_path_equals_full_recompute(loaded):
    for settings in (Settings(), Settings(cfg_scale=3.0, top_p=0.95)):
        assert torch.equal(_sample(loaded, settings=settings), _sample(loaded, settings=settings, use_cache=False))


def _logits(model, prefixes, pad_id):
    batch = px.left_pad(prefixes, pad_id)
    out = model(input_ids=batch.ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    return out.logits[:, -1].float()


@torch.inference_mode()
def test_batched_cfg_equals_two_separate_forwards(loaded):
    """Reference: conditional and unconditional batches run apart, every step recomputed, logits mixed."""
    model, layout, steps = loaded.model, loaded.record.layout, loaded.record.tokens_per_image
    scale, cond = 3.0, _prefixes(loaded)
    uncond = [px.unconditional_prefix(layout)] * len(cond)
    u, bias = uniforms(list(range(len(cond))), steps), image_bias(layout)
    tokens = []
    for step in range(steps):
        c, n = _logits(model, cond, layout.pad_id), _logits(model, uncond, layout.pad_id)
        mixed = n + scale * (c - n)
        if step == 0:  # the one batched forward's mix, for the first step
            both = _logits(model, cond + uncond, layout.pad_id)
            assert torch.allclose(mix(both, len(cond), scale), mixed, atol=1e-4)
        token = sample_next(mixed + bias, u[:, step], 1.0, 0, 1.0).tolist()
        tokens.append(token)
        cond = [p + [t] for p, t in zip(cond, token)]
        uncond = [p + [t] for p, t in zip(uncond, token)]
    reference = torch.tensor(tokens).T
    assert torch.equal(_sample(loaded, settings=Settings(cfg_scale=scale)), reference)
