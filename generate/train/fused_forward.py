"""The generator's token losses without the full logits: the model's forward with an identity head, then the
chunked linear + cross-entropy.

:func:`fused_parts` finds, in a Hugging Face causal LM whose logits are ``lm_head(final hidden states)``
(:data:`FUSABLE` model types), its output layer's weight and bias, read from the module itself: a plain
``nn.Linear`` (tied to the input embedding or not) or a :class:`~tokalign.generate.model.split_rows.SplitLinear`
(its ``cat(base, new)``, so gradients reach exactly the blocks that require them: a frozen base block gets none,
and the loss does no weight-gradient work for its rows).
The forward runs through the model as given (under DDP through DDP's forward, so its gradient hooks work) with
the output layer swapped for an identity for the duration of the call, so the "logits" it returns are the final
hidden states. Another architecture or a sharded (FSDP) head gives None, and the caller takes the plain path.

:func:`fused_token_losses` returns what :func:`~tokalign.generate.train.loss.token_losses` returns, restricted to
the rows that have a target when their count is known (the other rows would add zero), and the summed loss to
call backward on.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from tokalign.generate.model.split_rows import SplitLinear
from tokalign.generate.train.fused_loss import IGNORE_INDEX, ChunkMath, linear_cross_entropy

#: model types whose logits are exactly ``lm_head(last_hidden_state)`` (no soft-capping or logit scale)
FUSABLE = frozenset({"llama", "mistral", "qwen2", "qwen3"})


@dataclass
class FusedParts:
    model: nn.Module  #: what to call (the model, or its DDP wrapper)
    inner: nn.Module  #: the Hugging Face model itself
    weight: torch.Tensor  #: (V, d) output layer weight, as the forward pass uses it
    bias: torch.Tensor | None
    frozen_rows: int = 0  #: leading rows of ``weight`` that need no gradient (a split table's frozen base block)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, d) final hidden states of ``tokens`` (the model's forward with an identity output layer)."""
        with _identity_head(self.inner):
            return self.model(input_ids=tokens, use_cache=False).logits


@contextlib.contextmanager
def _identity_head(inner):
    head = inner.get_output_embeddings()
    inner.set_output_embeddings(nn.Identity())
    try:
        yield
    finally:
        inner.set_output_embeddings(head)


def fused_parts(model) -> FusedParts | None:
    """The output layer of ``model`` (module docstring), or None when the fused path does not apply."""
    if type(model).__name__.startswith(("FSDP", "FullyShardedDataParallel")):
        return None  # sharded: the head's weight is not whole here
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    config = getattr(inner, "config", None)
    if getattr(config, "model_type", None) not in FUSABLE or not hasattr(inner, "set_output_embeddings"):
        return None
    head = inner.get_output_embeddings()
    frozen = 0
    if isinstance(head, SplitLinear):
        weight = head.full_weight()
        frozen = 0 if head.base.requires_grad else head.base.shape[0]
    elif type(head) is nn.Linear:
        weight = head.weight
    else:
        return None
    if type(weight).__name__ == "DTensor" or getattr(config, "final_logit_softcapping", None):
        return None
    return FusedParts(model, inner, weight, head.bias, frozen)


def shifted_targets(tokens: torch.Tensor, buckets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, buckets) per position, flattened (B*T,): position t predicts token t+1; ``IGNORE_INDEX`` and
    bucket -1 where there is no target (the last position, non-targets)."""
    b = tokens.shape[0]
    pad = torch.full((b, 1), -1, dtype=torch.long, device=tokens.device)
    bucket = torch.cat([buckets[:, 1:].long(), pad], dim=1).reshape(-1)
    target = torch.cat([tokens[:, 1:], pad], dim=1).reshape(-1).masked_fill(bucket < 0, IGNORE_INDEX)
    return target, bucket


def fused_token_losses(parts: FusedParts, tokens: torch.Tensor, buckets: torch.Tensor, targets: int = -1,
                       math: ChunkMath | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed loss, per-row losses, their buckets) of the LM on ``tokens``; ``targets`` (if >= 0) is the number
    of positions with a target, which lets only those rows through the output layer (no device sync)."""
    hidden = parts.hidden_states(tokens)
    hidden = hidden.reshape(-1, hidden.shape[-1])
    target, bucket = shifted_targets(tokens, buckets)
    if 0 <= targets < target.numel():
        keep = torch.argsort((bucket < 0).to(torch.int8), stable=True)[:targets]  # target rows first, in order
        hidden, target, bucket = hidden[keep], target[keep], bucket[keep]
    total, losses = linear_cross_entropy(hidden, parts.weight, parts.bias, target, math=math,
                                         frozen_rows=parts.frozen_rows)
    return total, losses, bucket
