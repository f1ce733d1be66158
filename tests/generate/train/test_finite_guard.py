"""The deferred finiteness check: no sync per step, the failed step and every later one change nothing, and the
error names the first failed step; a finite run equals the eager check's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokalign.align.errors import TokalignError
from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.sequences.buckets import bucket_of
from tokalign.generate.train.finite_guard import FiniteGuard
from tokalign.generate.train.step import LossOptions, MicroBatch, train_step

LAYOUT = VocabLayout(40, 64)


@pytest.fixture(scope="module")
def accelerator():
    from tokalign.align.training.accelerator import build_accelerator

    return build_accelerator("cpu")


def _model():
    from tiny_llama import tiny_llama_model

    return tiny_llama_model(LAYOUT.total_rows, tied=True, seed=3)


def _batches(seed: int) -> list[MicroBatch]:
    rng = np.random.default_rng(seed)
    s = LAYOUT.special_ids
    rows = np.full((4, 18), LAYOUT.pad_id)
    for i in range(4):
        image = rng.integers(0, 64, size=rng.integers(3, 9)) + LAYOUT.image_offset
        row = [s["<doc>"], s["<text>"], *rng.integers(0, 40, size=3), s["</text>"], s["<image>"], *image]
        rows[i, :len(row)] = row
    tokens = torch.from_numpy(rows).long()
    buckets = bucket_of(tokens, LAYOUT)
    return [MicroBatch(tokens[i:i + 2], buckets[i:i + 2], int((tokens[i:i + 2] != LAYOUT.pad_id).sum()),
                       int((buckets[i:i + 2, 1:] >= 0).sum())) for i in (0, 2)]


def _adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, fused=True)


def _run(accelerator, model, optimizer, guard, steps, poison_at=None, loss=LossOptions()):
    results = []
    for step in range(steps):
        if step == poison_at:
            with torch.no_grad():
                model.model.norm.weight[0] = float("nan")
        results.append(train_step(accelerator, model, optimizer, list(model.parameters()), _batches(step), step=step,
                                  lr=1e-2, grad_clip=1.0, guard=guard, loss=loss))
    return results


def test_a_finite_run_under_the_deferred_guard_equals_the_eager_one(accelerator):
    a, b = _model(), _model()
    eager = _run(accelerator, a, _adamw(a), FiniteGuard.eager(), 3)
    optimizer = _adamw(b)
    guard = FiniteGuard.deferred_for(optimizer, torch.device("cpu"))
    deferred = _run(accelerator, b, optimizer, guard, 3)
    guard.check()
    assert [r.loss for r in deferred] == pytest.approx([r.loss for r in eager], rel=1e-6)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)


def test_the_deferred_guard_skips_the_failed_step_and_all_later_ones_and_names_the_first(accelerator):
    model = _model()
    optimizer = _adamw(model)
    guard = FiniteGuard.deferred_for(optimizer, torch.device("cpu"))
    _run(accelerator, model, optimizer, guard, 2)
    guard.check()  # nothing failed yet
    with torch.no_grad():
        before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {k: v.clone() for k, v in optimizer.state[model.model.embed_tokens.weight].items()}
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    for step in (2, 3, 4):  # step 3 (1-based) fails, 4 and 5 would be finite on their own weights
        train_step(accelerator, model, optimizer, list(model.parameters()), _batches(step), step=step, lr=1e-2,
                   grad_clip=1.0, guard=guard)
        with torch.no_grad():
            model.model.norm.weight[0] = before["model.norm.weight"][0]
    after = model.state_dict()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
    for key, value in optimizer.state[model.model.embed_tokens.weight].items():
        torch.testing.assert_close(value, moments[key], rtol=0, atol=0, msg=key)
    with pytest.raises(TokalignError, match=r"the loss is not finite \(nan\) at step 3, before its optimizer step.*--lr"):
        guard.check()


def test_the_eager_guard_refuses_at_the_step_itself():
    with pytest.raises(TokalignError, match=r"gradient norm is not finite \(inf\) at step 5"):
        FiniteGuard.eager().before_update(None, 4, torch.tensor(1.0), torch.tensor(float("inf")))


def test_a_deferred_guard_needs_a_fused_optimizer():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError):
        FiniteGuard.deferred_for(torch.optim.SGD(params, lr=1.0), torch.device("cpu"))
    assert not FiniteGuard.for_run(torch.optim.AdamW(params, fused=True), torch.device("cpu")).deferred


def test_a_step_on_the_fused_loss_equals_the_plain_step(accelerator):
    """With SGD, so the weights show the gradients themselves (Adam's first steps are sign-like updates that
    amplify rounding noise in near-zero gradients)."""
    a, b = _model(), _model()
    sgd = lambda model: torch.optim.SGD(model.parameters(), lr=0.1)  # noqa: E731
    plain = _run(accelerator, a, sgd(a), FiniteGuard.eager(), 2, loss=LossOptions(fused=False))
    fused = _run(accelerator, b, sgd(b), FiniteGuard.eager(), 2, loss=LossOptions(fused=True))
    for p, f in zip(plain, fused):
        assert f.loss == pytest.approx(p.loss, rel=1e-6)
        assert f.grad_norm == pytest.approx(p.grad_norm, rel=1e-4)
        assert torch.equal(f.sums.count, p.sums.count)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
