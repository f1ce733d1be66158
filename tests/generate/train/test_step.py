"""The train step: accumulation equals one large batch, bucket losses recombine, a non-finite loss stops it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tokalign.align.errors import TokalignError
from random_sequences import random_sequences

from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.sequences.buckets import bucket_of
from tokalign.generate.train.loss import BUCKETS, bucket_sums, token_losses
from tokalign.generate.train.step import MicroBatch, train_step

LAYOUT = VocabLayout(40, 64)  # 40 text rows, 64 codes, 7 structure tokens -> 111 used, 128 rows


def _model():
    from tiny_llama import tiny_llama_model

    return tiny_llama_model(LAYOUT.total_rows, tied=True, seed=3)


def _sequences(n: int, seq_len: int = 24, seed: int = 0) -> torch.Tensor:
    """Rows like the generator's: <doc> <text> caption </text> <image> 8 image tokens </image> </doc> <pad>..."""
    return random_sequences(LAYOUT, n, seq_len, seed, image_len=8)


def _batch(tokens: torch.Tensor) -> MicroBatch:
    return MicroBatch(tokens, bucket_of(tokens, LAYOUT), int((tokens != LAYOUT.pad_id).sum()))


def _step(model, tokens: torch.Tensor, micro: int, accelerator, lr=0.5, step=0):
    """One train step with SGD, so the updated weights show the gradients themselves (Adam's first step is a
    sign-like update that amplifies rounding noise in near-zero gradients)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    batches = [_batch(tokens[i:i + micro]) for i in range(0, len(tokens), micro)]
    result = train_step(accelerator, model, optimizer, list(model.parameters()), batches, step=step, lr=lr,
                        grad_clip=1.0)
    return result


@pytest.fixture(scope="module")
def accelerator():
    from tokalign.align.training.accelerator import build_accelerator

    return build_accelerator("cpu")


def test_accumulated_micro_batches_equal_one_large_batch(accelerator):
    tokens = _sequences(8)
    whole, parts = _model(), _model()
    reference = copy.deepcopy(whole)
    one = _step(whole, tokens, micro=8, accelerator=accelerator)
    four = _step(parts, tokens, micro=2, accelerator=accelerator)
    # the plain definition: mean cross-entropy over every target token of the batch
    logits = reference(input_ids=tokens).logits[:, :-1]
    buckets = bucket_of(tokens, LAYOUT)[:, 1:]
    targets = tokens[:, 1:].masked_fill(buckets < 0, -100)
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    assert one.loss == pytest.approx(float(expected.detach()), rel=1e-6)
    assert four.loss == pytest.approx(one.loss, rel=1e-6)
    assert four.grad_norm == pytest.approx(one.grad_norm, rel=1e-5)
    assert torch.equal(one.sums.count, four.sums.count)
    for (name, a), b in zip(whole.named_parameters(), parts.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    moved = [not torch.equal(a, b) for a, b in zip(whole.parameters(), reference.parameters())]
    assert all(moved)


def test_uneven_micro_batches_weight_by_target_tokens(accelerator):
    """Micro-batches with different target counts: a per-micro-batch mean would differ; the step does not."""
    short, long_ = _sequences(3, seed=1), _sequences(5, seed=2)
    short[:, 12:] = LAYOUT.pad_id  # cut the short rows' image: fewer targets
    tokens = torch.cat([short, long_])
    a, b = _model(), _model()
    one = _step(a, tokens, micro=8, accelerator=accelerator)
    two = _step(b, tokens, micro=3, accelerator=accelerator)
    assert two.loss == pytest.approx(one.loss, rel=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_bucket_losses_recombine_to_the_total():
    tokens = _sequences(6)
    model = _model()
    with torch.no_grad():
        losses, bucket = token_losses(model(input_ids=tokens).logits, tokens, bucket_of(tokens, LAYOUT))
    sums = bucket_sums(losses, bucket)
    figures = sums.as_dict()
    total = sum(figures[f"{b}_loss"] * figures[f"{b}_tokens"] for b in BUCKETS) / figures["tokens"]
    assert figures["loss"] == pytest.approx(total, rel=1e-9)
    assert figures["tokens"] == int((bucket_of(tokens, LAYOUT)[:, 1:] >= 0).sum())
    assert figures["image_tokens"] == 6 * 8
    assert figures["structure_tokens"] == 6 * 5  # <text> </text> <image> </image> </doc> (never <doc>, never <pad>)
    assert figures["ppl"] == pytest.approx(np.exp(figures["loss"]))


def test_a_non_finite_loss_stops_before_the_optimizer_step(accelerator):
    model = _model()
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TokalignError, match=r"not finite .* at step 7, before its optimizer step.*lower --lr"):
        _step(model, _sequences(4), micro=2, accelerator=accelerator, step=6)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, equal_nan=True)
