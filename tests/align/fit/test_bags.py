"""The bag-of-tokens fast path equals the plain ``E[tokens].mean(1)`` reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokalign.align.fit.bags import bags_from_tokens, image_vectors, naive_image_vectors


def _case(batch, length, vocab, d, seed, repeats):
    rng = np.random.default_rng(seed)
    if repeats:  # few distinct ids per image, like flat image regions
        pool = rng.integers(0, vocab, size=(batch, 7))
        tokens = np.take_along_axis(pool, rng.integers(0, 7, size=(batch, length)), axis=1)
    else:
        tokens = rng.integers(0, vocab, size=(batch, length))
    table = torch.randn(vocab, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return tokens.astype(np.uint16), table


@pytest.mark.parametrize("batch,length,vocab,d,repeats", [(7, 13, 29, 5, False), (5, 64, 11, 3, True), (1, 1, 3, 4, False),
                                                           (33, 100, 257, 17, True)])
def test_fast_path_matches_naive_forward_and_backward(batch, length, vocab, d, repeats):
    tokens, table = _case(batch, length, vocab, d, seed=batch, repeats=repeats)
    upstream = torch.randn(batch, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    fast_table = table.clone().requires_grad_()
    bags = bags_from_tokens(tokens, vocab, dtype=np.float64)
    fast = image_vectors(fast_table, bags)
    (fast * upstream).sum().backward()

    naive_table = table.clone().requires_grad_()
    naive = naive_image_vectors(naive_table, torch.from_numpy(tokens.astype(np.int64)))
    (naive * upstream).sum().backward()

    torch.testing.assert_close(fast, naive, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast_table.grad, naive_table.grad, rtol=1e-12, atol=1e-12)


def test_fast_path_matches_naive_in_float32_through_the_loss():
    from tokalign.align.fit.loss import clip_loss, normalize

    tokens, table = _case(48, 1024, 500, 24, seed=3, repeats=False)
    table = table.float()
    text = normalize(torch.randn(48, 24, generator=torch.Generator().manual_seed(2)))
    scale = torch.tensor(2.0)

    a = table.clone().requires_grad_()
    loss_fast = clip_loss(normalize(image_vectors(a, bags_from_tokens(tokens, 500))), text, scale)
    loss_fast.backward()
    b = table.clone().requires_grad_()
    loss_naive = clip_loss(normalize(naive_image_vectors(b, torch.from_numpy(tokens.astype(np.int64)))), text, scale)
    loss_naive.backward()

    torch.testing.assert_close(loss_fast, loss_naive, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)
    assert a.grad.abs().sum() > 0


def test_bags_deduplicate_tokens_into_counts():
    tokens = np.array([[3, 1, 3, 3], [0, 0, 0, 0]], dtype=np.uint16)
    bags = bags_from_tokens(tokens, 5)
    assert bags.crow.tolist() == [0, 2, 3]
    assert bags.ids.tolist() == [1, 3, 0]
    assert bags.weights.tolist() == [0.25, 0.75, 1.0]
    # transposed view: token 0 -> image 1, token 1 -> image 0, token 3 -> image 0
    assert bags.crow_t.tolist() == [0, 1, 2, 2, 3, 3]
    assert bags.rows_t.tolist() == [1, 0, 0]
    assert bags.weights_t.tolist() == [1.0, 0.25, 0.75]
