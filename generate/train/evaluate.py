"""Held-out loss and perplexity per bucket: the same bucketed sums as training, without gradients or dropout.

The held-out items are cut into micro-batches and dealt round-robin to the processes; the sums are all-reduced,
so every process gets the figures of the whole evaluated set. ``batches`` caps the micro-batches (0: all).
Under FSDP the micro-batch count is cut to a multiple of the process count (sharded forwards are collective).
"""

from __future__ import annotations

import numpy as np
import torch

from tokalign.generate.train.data import SequenceSource, micro_batch
from tokalign.generate.train.loss import LossSums
from tokalign.generate.train.step import reduce_sums, forward_sums


@torch.no_grad()
def evaluate(accelerator, model, source: SequenceSource, items: np.ndarray, micro: int, batches: int = 0) -> dict:
    """``LossSums.as_dict()`` of the held-out ``items`` (empty dict when there are none)."""
    if len(items) == 0:
        return {}
    chunks = [items[i:i + micro] for i in range(0, len(items), micro)]
    if batches:
        chunks = chunks[:batches]
    sharded = str(accelerator.distributed_type).endswith("FSDP")
    if sharded:  # every process must run the same number of forwards
        chunks = chunks[:max(1, len(chunks) // accelerator.num_processes) * accelerator.num_processes]
    else:  # DDP's forward may sync buffers; the plain module needs no collective
        model = accelerator.unwrap_model(model)
    mine = chunks[accelerator.process_index::accelerator.num_processes]
    was_training = model.training
    model.eval()
    sums = LossSums.zeros(accelerator.device)
    try:
        for chunk in mine:
            with accelerator.autocast():
                _, part = forward_sums(model, micro_batch(source, chunk, 0, accelerator.device, train=False))
            sums.add_(part)
    finally:
        model.train(was_training)
    return reduce_sums(accelerator, sums).as_dict()
