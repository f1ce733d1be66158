"""The generator's loss, summed per bucket so text, image and structure losses recombine to the total.

Every target token belongs to exactly one bucket (:data:`BUCKETS`: caption tokens are ``text``, codebook tokens
``image``, the structure tokens ``structure``); positions that are not targets (``<pad>``, the first token) carry
bucket ``-1`` and add nothing. A micro-batch yields per-bucket *sums* of token losses and per-bucket *counts*;
the step divides the sum over its whole global batch by the global count, so the result does not depend on how
the batch was split into micro-batches or processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokalign.generate.sequences.buckets import BUCKET_NAMES as BUCKETS, IGNORE  # noqa: F401  (one definition)


@dataclass
class LossSums:
    """Per-bucket sums of token losses (float64 on the model's device) and target counts (int64)."""

    loss: torch.Tensor  #: (len(BUCKETS),)
    count: torch.Tensor  #: (len(BUCKETS),)

    @classmethod
    def zeros(cls, device: torch.device | str) -> "LossSums":
        return cls(torch.zeros(len(BUCKETS), dtype=torch.float64, device=device),
                   torch.zeros(len(BUCKETS), dtype=torch.int64, device=device))

    def add_(self, other: "LossSums") -> "LossSums":
        self.loss += other.loss
        self.count += other.count
        return self

    def as_dict(self) -> dict[str, float]:
        """``loss`` and ``ppl`` over all targets and per bucket (``<bucket>_loss``, ``<bucket>_ppl``,
        ``<bucket>_tokens``); buckets without targets read NaN."""
        loss, count = self.loss.double().cpu(), self.count.cpu()
        out = _loss_ppl("", float(loss.sum()), int(count.sum()))
        out["tokens"] = int(count.sum())
        for i, name in enumerate(BUCKETS):
            out.update(_loss_ppl(f"{name}_", float(loss[i]), int(count[i])))
            out[f"{name}_tokens"] = int(count[i])
        return out


def _loss_ppl(prefix: str, total: float, count: int) -> dict[str, float]:
    mean = total / count if count else float("nan")
    return {f"{prefix}loss": mean, f"{prefix}ppl": _exp(mean)}


def _exp(value: float) -> float:
    import math

    try:
        return math.exp(value)
    except OverflowError:
        return float("inf")


def token_losses(logits: torch.Tensor, tokens: torch.Tensor, buckets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of each next-token prediction and the bucket of its target.

    ``logits`` (B, T, V) from the model on ``tokens`` (B, T); ``buckets`` (B, T) is the bucket of each token as a
    target (``-1``: not a target). Returns (B*T,) float32 losses (0 where there is no target: the last position
    and non-targets) and int64 buckets (-1 there). The targets are shifted, not the logits, so the (B, T, V)
    logits are never copied (as in Hugging Face's causal-LM loss).
    """
    b, t, v = logits.shape
    pad = torch.full((b, 1), -1, dtype=torch.long, device=tokens.device)
    bucket = torch.cat([buckets[:, 1:].long(), pad], dim=1).reshape(-1)
    target = torch.cat([tokens[:, 1:], pad], dim=1).reshape(-1)
    target = target.masked_fill(bucket < 0, -100)
    flat = logits.reshape(b * t, v)
    losses = F.cross_entropy(flat if flat.dtype == torch.float32 else flat.float(), target, reduction="none",
                             ignore_index=-100)
    return losses, bucket


def bucket_sums(losses: torch.Tensor, bucket: torch.Tensor) -> LossSums:
    """Sum ``losses`` and count targets per bucket (positions with bucket -1 are dropped)."""
    keep = bucket >= 0
    index = bucket.clamp(min=0)
    n = len(BUCKETS)
    loss = torch.zeros(n, dtype=torch.float64, device=losses.device).index_add_(0, index, (losses * keep).double())
    count = torch.zeros(n, dtype=torch.int64, device=losses.device).index_add_(0, index, keep.long())
    return LossSums(loss.detach(), count)


def count_targets(buckets: torch.Tensor) -> int:
    """Target tokens in a batch's ``buckets`` (B, T): positions 1.. with a bucket."""
    return int((buckets[:, 1:] >= 0).sum())
