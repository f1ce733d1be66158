"""Temperature / top-k / top-p and the seeded inverse-CDF draw, without a model."""

from __future__ import annotations

import torch

from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.sample.constraint import check_image_ids, image_bias, image_id_mask
from tokalign.generate.sample.distribution import draw, filter_logits, sample_next
from tokalign.generate.sample.seeds import sample_seed, uniforms


def test_draw_never_picks_zero_weight_ids_even_at_the_edges():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0]])
    for u in (0.0, 0.25, 0.5, 0.999999, 1.0 - 2**-53, 1.0):  # 1.0 itself: the float-rounding guard
        ids = draw(probs, torch.full((2,), u, dtype=torch.float64))
        assert probs[torch.arange(2), ids].gt(0).all(), (u, ids)


def test_draw_follows_the_distribution():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]]).repeat(20000, 1)
    ids = draw(probs, torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    freq = torch.bincount(ids, minlength=4).float() / 20000
    assert torch.allclose(freq, probs[0], atol=0.015) and freq[1] == 0


def test_top_k_and_top_p_cut_the_tail():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert (filter_logits(logits, top_k=2) > 0).tolist() == [[True, True, False, False]]
    assert (filter_logits(logits, top_p=0.8) > 0).tolist() == [[True, True, False, False]]
    assert (filter_logits(logits, top_p=0.81) > 0).tolist() == [[True, True, True, False]]
    assert (filter_logits(logits, top_p=0.01) > 0).tolist() == [[True, False, False, False]]  # never empty
    greedy = sample_next(logits.repeat(5, 1), torch.rand(5, dtype=torch.float64), 1.0, 1, 1.0)
    assert greedy.tolist() == [0] * 5


def test_temperature_sharpens():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    assert filter_logits(logits, temperature=0.1)[0, 0] > filter_logits(logits, temperature=1.0)[0, 0] > 0.6


def test_image_bias_allows_exactly_the_image_ids():
    layout = VocabLayout(text_rows=17, codebook_size=48)
    mask, bias = image_id_mask(layout), image_bias(layout)
    assert mask.shape == bias.shape == (layout.total_rows,)
    assert mask.nonzero().squeeze(1).tolist() == list(layout.image_ids)
    assert torch.isneginf(bias[~mask]).all() and (bias[mask] == 0).all()
    assert not mask[list(layout.padding_ids)].any() and not mask[list(layout.special_ids.values())].any()
    probs = filter_logits(torch.randn(64, layout.total_rows) * 10 + bias)
    ids = draw(probs, torch.rand(64, dtype=torch.float64))
    check_image_ids(ids, layout)


def test_seeds_are_stable_and_distinct():
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2)
    assert len({sample_seed(s, p, i) for s in range(3) for p in range(3) for i in range(3)}) == 27
    u = uniforms([5, 6, 5], 10)
    assert torch.equal(u[0], u[2]) and not torch.equal(u[0], u[1]) and ((u >= 0) & (u < 1)).all()
