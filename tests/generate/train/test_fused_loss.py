"""The chunked linear + cross-entropy against the plain path: losses per bucket and gradients, seeded, uneven sizes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from random_sequences import random_sequences

from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.model.freeze import apply_freeze
from tokalign.generate.model.split_rows import untie_new_rows
from tokalign.generate.sequences.buckets import bucket_of
from tokalign.generate.train.fused_forward import fused_parts
from tokalign.generate.train.fused_loss import chunk_rows, linear_cross_entropy
from tokalign.generate.train.step import LossOptions, MicroBatch, forward_sums

LAYOUT = VocabLayout(40, 64)  # 128 rows


def _sequences(n: int, seq_len: int = 21, seed: int = 0) -> torch.Tensor:
    return random_sequences(LAYOUT, n, seq_len, seed, image_len=(3, 9))


@pytest.mark.parametrize("bias", [False, True])
def test_chunked_loss_and_gradients_equal_the_plain_cross_entropy(bias):
    gen = torch.Generator().manual_seed(1)
    n, d, v = 37, 12, 53
    hidden = torch.randn(n, d, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, d, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(v, generator=gen, dtype=torch.float64, requires_grad=True) if bias else None
    target = torch.randint(0, v, (n,), generator=gen)
    target[::5] = -100
    total, losses = linear_cross_entropy(hidden, weight, b, target, chunk=8)
    (total * 0.37).backward()
    grads = [t.grad.clone() for t in (hidden, weight, b) if t is not None]
    for t in (hidden, weight, b):
        if t is not None:
            t.grad = None
    logits = F.linear(hidden, weight, b)
    plain = F.cross_entropy(logits, target, ignore_index=-100, reduction="none")
    (plain.sum() * 0.37).backward()
    torch.testing.assert_close(losses.double(), plain, rtol=1e-6, atol=1e-6)
    assert float(losses[::5].abs().sum()) == 0.0
    torch.testing.assert_close(total.double(), plain.sum(), rtol=1e-6, atol=1e-6)
    for got, t in zip(grads, [t for t in (hidden, weight, b) if t is not None]):
        torch.testing.assert_close(got, t.grad, rtol=1e-6, atol=1e-9)
    assert losses.requires_grad is False


def test_without_grad_mode_nothing_is_kept_for_backward():
    hidden, weight = torch.randn(5, 4, requires_grad=True), torch.randn(9, 4, requires_grad=True)
    with torch.no_grad():
        total, losses = linear_cross_entropy(hidden, weight, None, torch.tensor([0, 1, -100, 3, 8]), chunk=2)
    assert not total.requires_grad and losses.shape == (5,)


def test_chunk_rows_fit_the_budget():
    assert chunk_rows(torch.device("cpu"), 65_600) % 64 == 0
    assert chunk_rows(torch.device("cuda"), 65_600) * 65_600 * 12 <= 2 << 30
    assert chunk_rows(torch.device("cpu"), 10 ** 9) == 64


def _model(kind: str):
    from tiny_llama import tiny_llama_model

    model = tiny_llama_model(LAYOUT.total_rows, tied=kind != "untied", seed=5)
    if kind.startswith("split"):
        apply_freeze(model, "new-rows", text_rows=LAYOUT.text_rows)
    if kind == "tied-new-rows-untied":
        assert untie_new_rows(model, LAYOUT.text_rows)
    return model


@pytest.mark.parametrize("kind", ["tied", "untied", "split-tied", "split-untied", "tied-new-rows-untied"])
@pytest.mark.parametrize("count_on_host", [True, False])
def test_fused_path_gives_the_plain_bucket_sums_and_gradients(kind, count_on_host):
    if kind == "split-untied":
        from tiny_llama import tiny_llama_model

        plain = tiny_llama_model(LAYOUT.total_rows, tied=False, seed=5)
        apply_freeze(plain, "new-rows", text_rows=LAYOUT.text_rows)
    else:
        plain = _model(kind)
    fused = copy.deepcopy(plain)
    assert fused_parts(fused) is not None
    tokens = _sequences(5, seed=7)
    buckets = bucket_of(tokens, LAYOUT)
    targets = int((buckets[:, 1:] >= 0).sum()) if count_on_host else -1
    batch = MicroBatch(tokens, buckets, int((tokens != LAYOUT.pad_id).sum()), targets)
    total_p, sums_p = forward_sums(plain, batch, LossOptions(fused=False))
    total_f, sums_f = forward_sums(fused, batch, LossOptions(fused=True))
    (total_p * 0.1).backward()
    (total_f * 0.1).backward()
    torch.testing.assert_close(sums_f.loss, sums_p.loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(sums_f.count, sums_p.count)
    torch.testing.assert_close(total_f, total_p, rtol=1e-5, atol=1e-6)
    named_p = dict(plain.named_parameters())
    for name, p in fused.named_parameters():
        q = named_p[name]
        assert (p.grad is None) == (q.grad is None), name
        if not p.requires_grad:
            assert p.grad is None, name  # a frozen block gets no gradient
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_an_unsupported_model_takes_the_plain_path():
    model = _model("tied")
    model.config.model_type = "gemma2"
    assert fused_parts(model) is None
    assert fused_parts(torch.nn.Linear(2, 2)) is None


def test_under_autocast_the_logits_are_in_the_autocast_dtype_and_the_loss_in_float32():
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(19, 16, generator=gen, requires_grad=True)
    weight = torch.randn(70, 16, generator=gen, requires_grad=True)
    target = torch.randint(0, 70, (19,), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, losses = linear_cross_entropy(hidden, weight, None, target, chunk=7)
        plain = F.cross_entropy(F.linear(hidden, weight).float(), target, reduction="none")
    total.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    plain.sum().backward()
    assert losses.dtype == torch.float32 and grads[0].dtype == grads[1].dtype == torch.float32
    torch.testing.assert_close(losses, plain, rtol=0, atol=1e-4)  # the same bf16 logits, float32 loss
    torch.testing.assert_close(grads[0], hidden.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(grads[1], weight.grad, rtol=2e-2, atol=2e-2)
