"""One optimizer step of the generator: accumulate micro-batches, normalize by the global target count, clip, step.

Contract: the gradient applied at a step is that of ``sum of token losses / target tokens of the whole global batch``
(every micro-batch of every process), so accumulated micro-batches and processes give the gradient of one large
batch. The target count is known on the host from the buckets (all-reduced before the first forward when there
are several processes); Accelerate's DDP averages gradients over processes, so each process scales its sum by
``world / global count``. The loss of the step (all-reduced) and the gradient norm go through a
:class:`~tokalign.generate.train.finite_guard.FiniteGuard` before the optimizer moves any weight; with one process
and a deferred guard nothing in the step waits for the device.

The loss is computed by the fused path (:mod:`.fused_forward`: the final hidden states, then the chunked linear +
cross-entropy, never the whole logits) where the model allows it, else by the plain path (the model's logits,
then :func:`~tokalign.generate.train.loss.token_losses`); :class:`LossOptions` chooses, and whether the forward
runs under bf16 autocast on a CPU (:func:`loss_options`: ``--precision auto`` on a CPU that multiplies bfloat16
natively, for models at least :data:`~tokalign.generate.sample.loading.BF16_CPU_MIN_WIDTH` wide, where the output
layer's matrix products, most of a step, run about twice as fast; the weights, the optimizer and the
log-sum-exp stay float32).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from tokalign.generate.train.finite_guard import FiniteGuard
from tokalign.generate.train.fused_forward import fused_parts, fused_token_losses
from tokalign.generate.train.fused_loss import ChunkMath
from tokalign.generate.train.loss import BUCKETS, LossSums, bucket_sums, count_targets, token_losses


@dataclass
class MicroBatch:
    tokens: torch.Tensor  #: (B, T) int64 token ids, on the device
    buckets: torch.Tensor  #: (B, T) int64 bucket of each token as a target, -1 where it is not one
    useful: int  #: non-pad tokens
    targets: int = -1  #: target tokens (counted on the host before the copy; -1: count on the device)

    def target_count(self) -> int:
        return self.targets if self.targets >= 0 else count_targets(self.buckets)


@dataclass(frozen=True)
class LossOptions:
    fused: bool = True  #: the chunked linear + cross-entropy where the model allows it (plain path otherwise)
    math: ChunkMath | None = None  #: its per-chunk element-wise function (None: the eager reference)
    cpu_bf16: bool = False  #: bf16 autocast around the forward on a CPU (float32 weights, loss and optimizer)


def cpu_bf16_pays(device: torch.device, width: int) -> bool:
    """bf16 autocast speeds up a training step on ``device``: a CPU with native bf16 (AVX512-BF16 or AMX) and a
    model at least :data:`~tokalign.generate.sample.loading.BF16_CPU_MIN_WIDTH` wide (narrower ones are bound by
    per-op overhead, and the tiny test models keep their float32 figures)."""
    from tokalign.generate.sample.loading import BF16_CPU_MIN_WIDTH, native_cpu_bf16

    return device.type == "cpu" and width >= BF16_CPU_MIN_WIDTH and native_cpu_bf16()


def loss_options(precision: str, device: torch.device, model, fused: bool = True) -> LossOptions:
    """The step's options for ``--precision`` (``auto``: bf16 autocast on a CPU where :func:`cpu_bf16_pays`; on a
    GPU, and for ``bf16``/``fp32``, the Accelerator's own mixed precision decides)."""
    width = int(getattr(getattr(model, "config", None), "hidden_size", 0) or 0)
    return LossOptions(fused=fused, cpu_bf16=precision == "auto" and cpu_bf16_pays(device, width))


@dataclass
class StepResult:
    sums: LossSums  #: global (all processes) per-bucket loss sums and counts
    norm: torch.Tensor  #: the global gradient norm before clipping (on the device)
    useful: int  #: global non-pad tokens
    padded: int  #: global pad tokens

    @property
    def grad_norm(self) -> float:
        return float(self.norm)

    @property
    def loss(self) -> float:
        return float(self.sums.loss.sum() / self.sums.count.sum().clamp(min=1))


def forward_sums(model, batch: MicroBatch, options: LossOptions = LossOptions()) -> tuple[torch.Tensor, LossSums]:
    """The summed token loss of ``batch`` (for backward) and its per-bucket sums."""
    parts = fused_parts(model) if options.fused else None
    if parts is not None:
        total, losses, bucket = fused_token_losses(parts, batch.tokens, batch.buckets, batch.targets, options.math)
        return total, bucket_sums(losses, bucket)
    logits = model(input_ids=batch.tokens, use_cache=False).logits
    losses, bucket = token_losses(logits, batch.tokens, batch.buckets)
    return losses.sum(), bucket_sums(losses, bucket)


def train_step(accelerator, model, optimizer, params: list[torch.nn.Parameter], micro_batches: list[MicroBatch],
               *, step: int, lr: float, grad_clip: float, guard: FiniteGuard | None = None,
               loss: LossOptions = LossOptions()) -> StepResult:
    """Run the micro-batches, then (if the loss and gradients are finite) one optimizer step at ``lr``.

    ``guard``: the finiteness check (default: eager, raising here naming ``step``)."""
    targets, useful, total = _counts(accelerator, micro_batches)
    scale = accelerator.num_processes / max(targets, 1.0)
    sums = LossSums.zeros(accelerator.device)
    for i, batch in enumerate(micro_batches):
        sync = i == len(micro_batches) - 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(model):
            with _autocast(accelerator, loss):  # the fused path skips model.forward, where Accelerate puts autocast
                summed, part = forward_sums(model, batch, loss)
            accelerator.backward(summed * scale)
        sums.add_(part)
    sums = reduce_sums(accelerator, sums)
    mean = sums.loss.sum() / max(targets, 1.0)
    norm = _clip(accelerator, params, grad_clip, mean)
    (guard or FiniteGuard.eager()).before_update(optimizer, step, mean, norm)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(sums, norm, useful, total - useful)


def _autocast(accelerator, loss: LossOptions):
    if loss.cpu_bf16 and accelerator.device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return accelerator.autocast()


def _counts(accelerator, micro_batches: list[MicroBatch]) -> tuple[float, int, int]:
    """(global target tokens, global non-pad tokens, global tokens): host sums, all-reduced over processes."""
    local = [sum(b.target_count() for b in micro_batches), sum(b.useful for b in micro_batches),
             sum(b.tokens.numel() for b in micro_batches)]
    if accelerator.num_processes == 1:
        return float(local[0]), int(local[1]), int(local[2])
    counts = accelerator.reduce(torch.tensor(local, dtype=torch.float64, device=accelerator.device), reduction="sum")
    return float(counts[0]), int(counts[1]), int(counts[2])


def reduce_sums(accelerator, sums: LossSums) -> LossSums:
    if accelerator.num_processes == 1:
        return sums
    packed = accelerator.reduce(torch.cat([sums.loss, sums.count.double()]), reduction="sum")
    n = len(BUCKETS)
    return LossSums(packed[:n], packed[n:].round().long())


def _clip(accelerator, params: list[torch.nn.Parameter], grad_clip: float, like: torch.Tensor) -> torch.Tensor:
    """Clip to ``grad_clip`` (0: no clipping) and return the global gradient norm before clipping (on the device)."""
    if grad_clip > 0:
        return accelerator.clip_grad_norm_(params, grad_clip)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=like.device)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
