"""One optimizer step of the generator: accumulate micro-batches, normalize by the global target count, clip, step.

Contract: the gradient applied at a step is that of ``sum of token losses / target tokens of the whole global batch``
(every micro-batch of every process), so accumulated micro-batches and processes give the gradient of one large
batch. The target count is all-reduced before the first forward (it is known from the buckets); Accelerate's DDP
averages gradients over processes, so each process scales its sum by ``world / global count``. The loss of the
step (all-reduced) and the gradient norm are checked for finiteness before the optimizer moves any weight.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from tokalign.align.errors import TokalignError
from tokalign.generate.train.loss import BUCKETS, LossSums, bucket_sums, count_targets, token_losses


@dataclass
class MicroBatch:
    tokens: torch.Tensor  #: (B, T) int64 token ids, on the device
    buckets: torch.Tensor  #: (B, T) int64 bucket of each token as a target, -1 where it is not one
    useful: int  #: non-pad tokens
    targets: int = -1  #: target tokens (counted on the host before the copy; -1: count on the device)

    def target_count(self) -> int:
        return self.targets if self.targets >= 0 else count_targets(self.buckets)


@dataclass
class StepResult:
    sums: LossSums  #: global (all processes) per-bucket loss sums and counts
    grad_norm: float
    useful: int  #: global non-pad tokens
    padded: int  #: global pad tokens

    @property
    def loss(self) -> float:
        return float(self.sums.loss.sum() / self.sums.count.sum().clamp(min=1))


def forward_sums(model, batch: MicroBatch) -> tuple[torch.Tensor, LossSums]:
    """The summed token loss of ``batch`` (for backward) and its per-bucket sums."""
    logits = model(input_ids=batch.tokens, use_cache=False).logits
    losses, bucket = token_losses(logits, batch.tokens, batch.buckets)
    return losses.sum(), bucket_sums(losses, bucket)


def train_step(accelerator, model, optimizer, params: list[torch.nn.Parameter], micro_batches: list[MicroBatch],
               *, step: int, lr: float, grad_clip: float) -> StepResult:
    """Run the micro-batches, then (if the loss and gradients are finite) one optimizer step at ``lr``."""
    device = accelerator.device
    local = torch.tensor([sum(b.target_count() for b in micro_batches),
                          sum(b.useful for b in micro_batches),
                          sum(b.tokens.numel() for b in micro_batches)], dtype=torch.float64, device=device)
    counts = accelerator.reduce(local, reduction="sum") if accelerator.num_processes > 1 else local
    targets = float(counts[0])
    scale = accelerator.num_processes / max(targets, 1.0)
    sums = LossSums.zeros(device)
    for i, batch in enumerate(micro_batches):
        sync = i == len(micro_batches) - 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(model):
            total, part = forward_sums(model, batch)
            accelerator.backward(total * scale)
        sums.add_(part)
    sums = reduce_sums(accelerator, sums)
    loss = float(sums.loss.sum()) / max(targets, 1.0)
    _check_finite("loss", loss, step)
    norm = _clip(accelerator, params, grad_clip)
    _check_finite("gradient norm", norm, step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(sums, norm, int(counts[1]), int(counts[2] - counts[1]))


def reduce_sums(accelerator, sums: LossSums) -> LossSums:
    if accelerator.num_processes == 1:
        return sums
    packed = accelerator.reduce(torch.cat([sums.loss, sums.count.double()]), reduction="sum")
    n = len(BUCKETS)
    return LossSums(packed[:n], packed[n:].round().long())


def _clip(accelerator, params: list[torch.nn.Parameter], grad_clip: float) -> float:
    """Clip to ``grad_clip`` (0: no clipping) and return the global gradient norm before clipping."""
    if grad_clip > 0:
        return float(accelerator.clip_grad_norm_(params, grad_clip))
    grads = [p.grad for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0


def _check_finite(what: str, value: float, step: int) -> None:
    if not math.isfinite(value):
        raise TokalignError(f"the {what} is not finite ({value}) at step {step + 1}, before its optimizer step: training "
                            "diverged; lower --lr or raise --warmup-steps, then start a new --run or --resume from a "
                            "checkpoint before the divergence")
