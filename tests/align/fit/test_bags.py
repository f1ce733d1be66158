"""The bag-of-tokens fast path equals the plain ``E[tokens].mean(1)`` reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokalign.align.fit import bag_kernel
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


BACKENDS = ["sparse", pytest.param("kernel", marks=pytest.mark.skipif(not bag_kernel.available(),
                                                                       reason="no C compiler for the bag kernel"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch,length,vocab,d,repeats", [(7, 13, 29, 5, False), (5, 64, 11, 3, True), (1, 1, 3, 4, False),
                                                           (33, 100, 257, 17, True), (9, 50, 40, 131, False)])
def test_fast_path_matches_naive_forward_and_backward(batch, length, vocab, d, repeats, backend):
    """float64, seeded, uneven sizes (d 131: vector blocks, their remainders and a scalar tail)."""
    tokens, table = _case(batch, length, vocab, d, seed=batch, repeats=repeats)
    upstream = torch.randn(batch, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    fast_table = table.clone().requires_grad_()
    bags = bags_from_tokens(tokens, vocab, dtype=np.float64)
    fast = image_vectors(fast_table, bags, backend=backend)
    (fast * upstream).sum().backward()

    naive_table = table.clone().requires_grad_()
    naive = naive_image_vectors(naive_table, torch.from_numpy(tokens.astype(np.int64)))
    (naive * upstream).sum().backward()

    torch.testing.assert_close(fast, naive, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast_table.grad, naive_table.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fast_path_matches_naive_in_float32_through_the_loss(backend):
    from tokalign.align.fit.loss import clip_loss, normalize

    tokens, table = _case(48, 1024, 500, 80, seed=3, repeats=False)
    table = table.float()
    text = normalize(torch.randn(48, 80, generator=torch.Generator().manual_seed(2)))
    scale = torch.tensor(2.0)

    a = table.clone().requires_grad_()
    loss_fast = clip_loss(normalize(image_vectors(a, bags_from_tokens(tokens, 500), backend=backend)), text, scale)
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


def test_the_kernel_threads_split_the_columns_and_agree_with_one_thread():
    if not bag_kernel.available():
        pytest.skip("no C compiler for the bag kernel")
    tokens, table = _case(20, 64, 50, 200, seed=4, repeats=False)
    bags = bags_from_tokens(tokens, 50, dtype=np.float64)
    grad = torch.randn(20, 200, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 3):
            torch.set_num_threads(n)
            results.append((bag_kernel.forward(table, bags.crow_t, bags.rows_t, bags.weights_t, 20),
                            bag_kernel.backward(grad, bags.crow_t, bags.rows_t, bags.weights_t, 50)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("repeats", [False, True])
def test_the_tensor_bag_builder_equals_the_numpy_one(repeats):
    from tokalign.align.fit.bags import bags_from_token_tensor

    tokens, _ = _case(17, 96, 300, 2, seed=6, repeats=repeats)
    a = bags_from_tokens(tokens, 300)
    b = bags_from_token_tensor(torch.from_numpy(tokens.astype(np.int64)), 300)
    for name in ("crow", "ids", "weights", "crow_t", "rows_t", "weights_t"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
