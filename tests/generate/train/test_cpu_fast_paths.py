"""The CPU fast paths of the train step against the plain float32 path: bf16 autocast (losses per bucket and
gradients at bf16 tolerance, float32 master weights) and the fused AdamW (the same updates as the per-tensor loop);
and when ``--precision auto`` turns bf16 on (never for the tiny test models, so their float32 figures hold)."""

from __future__ import annotations

import copy

import pytest
import torch

from random_sequences import random_sequences

from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.config import OptimConfig
from tokalign.generate.model.freeze import apply_freeze
from tokalign.generate.sequences.buckets import bucket_of
from tokalign.generate.train import step as step_module
from tokalign.generate.train.compiling import compile_model
from tokalign.generate.train.optim import build_optimizer, fused_adamw
from tokalign.generate.train.step import LossOptions, MicroBatch, forward_sums, loss_options, train_step

LAYOUT = VocabLayout(40, 64)  # 128 rows


@pytest.fixture(scope="module")
def accelerator():
    from tokalign.align.training.accelerator import build_accelerator

    return build_accelerator("cpu")


def _model(split: bool = False, d_model: int = 32):
    from tiny_llama import tiny_llama_model

    model = tiny_llama_model(LAYOUT.total_rows, tied=True, d_model=d_model, seed=11)
    if split:
        apply_freeze(model, "new-rows", text_rows=LAYOUT.text_rows)
    return model


def _batches(n: int = 5, seq_len: int = 23, micro: int = 3, seed: int = 4) -> list[MicroBatch]:
    tokens = random_sequences(LAYOUT, n, seq_len, seed, image_len=(4, 11))
    out = []
    for lo in range(0, n, micro):  # uneven: 3 + 2 sequences
        t = tokens[lo:lo + micro]
        b = bucket_of(t, LAYOUT)
        out.append(MicroBatch(t, b, int((t != LAYOUT.pad_id).sum()), int((b[:, 1:] >= 0).sum())))
    return out


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-12))


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("fused", [True, False])
def test_bf16_autocast_gives_the_float32_bucket_losses_and_gradients_at_bf16_tolerance(accelerator, split, fused):
    plain = _model(split)
    fast = copy.deepcopy(plain)
    for batch in _batches():
        total_p, sums_p = forward_sums(plain, batch, LossOptions(fused=False))
        options = LossOptions(fused=fused, cpu_bf16=True)
        with step_module._autocast(accelerator, options):
            total_f, sums_f = forward_sums(fast, batch, options)
        (total_p * 0.05).backward()
        (total_f * 0.05).backward()
        assert sums_f.loss.dtype == sums_p.loss.dtype and torch.equal(sums_f.count, sums_p.count)
        torch.testing.assert_close(sums_f.loss, sums_p.loss, rtol=2e-2, atol=2e-2)
        assert total_f.dtype == torch.float32
    named = dict(plain.named_parameters())
    for name, p in fast.named_parameters():
        assert p.dtype == torch.float32, name  # master weights stay float32
        q = named[name]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert p.grad.dtype == torch.float32, name
            assert _relative(p.grad, q.grad) < 3e-2, name


def test_a_bf16_train_step_matches_the_float32_step(accelerator):
    results, weights = [], []
    for cpu_bf16 in (False, True):
        model = _model()
        optimizer = build_optimizer(model, OptimConfig(lr=1e-2, warmup_steps=1), accelerator.device)
        params = list(model.parameters())
        for step in range(2):
            results.append(train_step(accelerator, model, optimizer, params, _batches(seed=step), step=step, lr=1e-2,
                                      grad_clip=1.0, loss=LossOptions(cpu_bf16=cpu_bf16)))
        weights.append(copy.deepcopy(model.state_dict()))
    assert not torch.equal(results[2].sums.loss, results[0].sums.loss)  # bf16 did run
    for a, b in zip(results[:2], results[2:]):
        torch.testing.assert_close(b.sums.loss, a.sums.loss, rtol=2e-2, atol=2e-2)
        assert abs(b.grad_norm - a.grad_norm) < 3e-2 * a.grad_norm
    for name, w in weights[0].items():
        assert weights[1][name].dtype == torch.float32
        assert _relative(weights[1][name], w) < 3e-2, name  # two Adam steps at lr 1e-2: near enough


def test_precision_auto_turns_bf16_on_only_for_wide_models_on_a_native_bf16_cpu(monkeypatch):
    import tokalign.generate.sample.loading as loading

    cpu = torch.device("cpu")
    monkeypatch.setattr(loading, "native_cpu_bf16", lambda: True)
    assert loss_options("auto", cpu, _model(d_model=256)).cpu_bf16
    assert not loss_options("auto", cpu, _model()).cpu_bf16  # the tiny models keep their float32 figures
    assert not loss_options("fp32", cpu, _model(d_model=256)).cpu_bf16
    assert not loss_options("bf16", cpu, _model(d_model=256)).cpu_bf16  # the Accelerator's autocast does it
    assert not loss_options("auto", torch.device("cuda"), _model(d_model=256)).cpu_bf16
    assert loss_options("auto", cpu, _model(d_model=256), fused=False).fused is False
    monkeypatch.setattr(loading, "native_cpu_bf16", lambda: False)
    assert not loss_options("auto", cpu, _model(d_model=256)).cpu_bf16


def test_compiling_keeps_the_precision_of_the_step():
    model = _model()
    compiled = compile_model(model, torch.device("cpu"), loss=LossOptions(cpu_bf16=True))
    try:
        assert compiled.options.cpu_bf16 and compiled.options.fused
    finally:
        compiled.undo()
    assert compiled.options.cpu_bf16 and compiled.options.math is None


def _grads(model, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn(p.shape, generator=gen) * 0.1


@pytest.mark.parametrize("split", [False, True])
def test_the_fused_cpu_adamw_makes_the_updates_of_the_plain_one(split):
    config = OptimConfig(lr=3e-3, warmup_steps=1, weight_decay=0.1)
    fused_model, plain_model = _model(split), _model(split)
    fused = build_optimizer(fused_model, config, torch.device("cpu"))
    assert fused.defaults["fused"] == fused_adamw(torch.device("cpu"))
    groups = [{"params": [p for p in plain_model.parameters() if p.requires_grad and p.ndim >= 2], "weight_decay": 0.1},
              {"params": [p for p in plain_model.parameters() if p.requires_grad and p.ndim < 2], "weight_decay": 0.0}]
    plain = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, foreach=False)
    for step, lr in enumerate((1e-3, 3e-3, 2e-3)):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            _grads(model, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    named = dict(plain_model.named_parameters())
    for name, p in fused_model.named_parameters():
        torch.testing.assert_close(p, named[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("frozen", [0, 20, 53])
@pytest.mark.parametrize("bf16", [False, True])
def test_frozen_rows_get_no_weight_gradient_and_the_rest_the_plain_one(frozen, bf16):
    import torch.nn.functional as F

    from tokalign.generate.train.fused_loss import linear_cross_entropy

    gen = torch.Generator().manual_seed(3)
    n, d, v = 37, 12, 53
    dtype = torch.float32 if bf16 else torch.float64
    hidden = torch.randn(n, d, generator=gen, dtype=dtype, requires_grad=True)
    weight = torch.randn(v, d, generator=gen, dtype=dtype, requires_grad=True)
    target = torch.randint(0, v, (n,), generator=gen)
    target[::4] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        total, losses = linear_cross_entropy(hidden, weight, None, target, chunk=8, frozen_rows=frozen)
    (total * 0.3).backward()
    got = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    plain = F.cross_entropy(F.linear(hidden, weight).float() if bf16 else F.linear(hidden, weight), target,
                            reduction="none")
    (plain.sum() * 0.3).backward()
    tol = {"rtol": 2e-2, "atol": 2e-2} if bf16 else {"rtol": 1e-6, "atol": 1e-9}
    torch.testing.assert_close(losses.to(plain.dtype), plain, **tol)
    torch.testing.assert_close(got[0], hidden.grad, **tol)
    assert float(got[1][:frozen].abs().sum()) == 0.0
    torch.testing.assert_close(got[1][frozen:], weight.grad[frozen:], **tol)
