"""The dense token-count path (the fit's image side on a GPU) equals the plain ``E[tokens].mean(1)`` reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokalign.align.fit.bags import bags_from_tokens, naive_image_vectors
from tokalign.align.fit.loss import clip_loss, normalize
from tokalign.align.fit.token_counts import PRECISIONS, counts_image_vectors, tf32_split, token_counts


def _tokens(batch, length, vocab, seed, repeats):
    rng = np.random.default_rng(seed)
    if repeats:  # few distinct ids per image, like flat image regions
        pool = rng.integers(0, vocab, size=(batch, 5))
        return torch.from_numpy(np.take_along_axis(pool, rng.integers(0, 5, size=(batch, length)), axis=1))
    return torch.from_numpy(rng.integers(0, vocab, size=(batch, length)))


def test_counts_are_the_bags_histograms():
    tokens = _tokens(11, 70, 37, seed=1, repeats=True)
    counts = token_counts(tokens.int(), 37).counts
    bags = bags_from_tokens(tokens.numpy().astype(np.uint16), 37)
    dense = bags.matrix().to_dense()
    assert torch.equal(counts / 70, dense) and counts.sum(1).eq(70).all()


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("batch,length,vocab,d,repeats", [(7, 13, 29, 5, False), (5, 64, 11, 3, True), (1, 1, 3, 4, False),
                                                           (33, 100, 257, 17, True), (9, 3000, 40, 131, False)])
def test_counts_path_matches_naive_forward_and_backward(batch, length, vocab, d, repeats, precision):
    """float32, seeded, uneven sizes; L 3,000 exceeds TF32's exact counts (plain float32 products then)."""
    tokens = _tokens(batch, length, vocab, seed=batch, repeats=repeats)
    g = torch.Generator().manual_seed(batch)
    table = torch.randn(vocab, d, generator=g)
    upstream = torch.randn(batch, d, generator=g)

    fast_table = table.clone().requires_grad_()
    fast = counts_image_vectors(fast_table, token_counts(tokens, vocab), precision)
    (fast * upstream).sum().backward()
    naive_table = table.clone().requires_grad_()
    naive = naive_image_vectors(naive_table, tokens)
    (naive * upstream).sum().backward()

    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_table.grad, naive_table.grad, rtol=1e-5, atol=1e-6)


def test_counts_path_matches_naive_through_the_loss():
    tokens = _tokens(48, 1024, 500, seed=3, repeats=False)
    g = torch.Generator().manual_seed(2)
    table = torch.randn(500, 80, generator=g)
    text, scale = normalize(torch.randn(48, 80, generator=g)), torch.tensor(2.0)

    a = table.clone().requires_grad_()
    loss_fast = clip_loss(normalize(token_counts(tokens, 500).image_vectors(a)), text, scale)
    loss_fast.backward()
    b = table.clone().requires_grad_()
    loss_naive = clip_loss(normalize(naive_image_vectors(b, tokens)), text, scale)
    loss_naive.backward()
    torch.testing.assert_close(loss_fast, loss_naive, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)
    assert a.grad.abs().sum() > 0


def test_the_tf32_split_is_exact_and_its_high_half_fits_tf32():
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0)) * torch.logspace(-20, 20, 4096)
    x = torch.cat([x, torch.tensor([0.0, -0.0, 1.0, -3.0, 1e-40])])  # zeros, exact values, a subnormal
    hi, lo = tf32_split(x)
    assert torch.equal(hi + lo, x)
    assert (hi.view(torch.int32) & 0x1FFF).eq(0).all()
    normal = x.abs() >= torch.finfo(torch.float32).tiny  # subnormals have fewer mantissa bits to split
    assert (lo.abs() <= x.abs() * 2.0 ** -11)[normal].all()


def test_counts_refuse_a_table_of_another_codebook_and_an_unknown_precision():
    batch = token_counts(torch.zeros(2, 3, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="codebook of 10"):
        counts_image_vectors(torch.zeros(9, 4), batch)
    with pytest.raises(ValueError, match="precision"):
        counts_image_vectors(torch.zeros(10, 4), batch, "fp8")
