"""Throughput and model FLOPs utilisation (MFU) of generator training.

FLOPs per trained token (forward + backward) follow the usual estimate: ``6 x (non-embedding parameters + output
layer parameters) + 12 x layers x d_model x seq_len`` (the second term is attention over the sequence). The output
layer is counted at its full expanded size (text + image + structure + padding rows) whether or not it is tied to
the input embedding, because the logits are computed over every row. Frozen parameters are counted like trainable
ones (an upper bound of the work: their weight gradients are skipped). MFU compares achieved FLOP/s, over all
processed positions (padding included: it costs the same compute), with the device's dense bf16 peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Dense bf16 peak FLOP/s by device-name fragment (first match wins).
PEAK_BF16_FLOPS = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12))


@dataclass(frozen=True)
class ModelShape:
    """What the FLOPs estimate needs from a decoder-only model."""

    non_embedding_params: int  #: every parameter except the input embedding and the output layer
    output_params: int  #: rows x d_model of the output layer
    layers: int
    d_model: int

    def flops_per_token(self, seq_len: int) -> float:
        return 6.0 * (self.non_embedding_params + self.output_params) + 12.0 * self.layers * self.d_model * seq_len


def model_shape(model: torch.nn.Module) -> ModelShape:
    """The :class:`ModelShape` of a Hugging Face causal LM (input and output embeddings found by its accessors)."""
    inp = model.get_input_embeddings()
    out = model.get_output_embeddings()
    skip = {id(p) for p in inp.parameters()} | {id(p) for p in (out.parameters() if out is not None else ())}
    seen, non_embedding = set(), 0
    for p in model.parameters():
        if id(p) not in skip and id(p) not in seen:
            seen.add(id(p))
            non_embedding += p.numel()
    rows = sum(p.shape[0] for p in inp.parameters() if p.ndim == 2)  # a split table counts all its parts
    d_model = int(model.config.hidden_size)
    return ModelShape(non_embedding, rows * d_model, int(model.config.num_hidden_layers), d_model)


def device_peak_flops(device: torch.device) -> float | None:
    """The dense bf16 peak of ``device`` from :data:`PEAK_BF16_FLOPS`, or None (CPU, unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


class Throughput:
    """Counts tokens over a time window; :meth:`rates` gives useful and padded tokens/s and MFU."""

    def __init__(self, flops_per_token: float, peak_flops: float | None, world: int) -> None:
        self.flops_per_token, self.peak, self.world = flops_per_token, peak_flops, world
        self.useful = self.padded = 0

    def add(self, useful: int, padded: int) -> None:
        """``useful`` non-pad tokens and ``padded`` pad tokens processed by the whole global batch."""
        self.useful += useful
        self.padded += padded

    def rates(self, seconds: float) -> dict[str, float | None]:
        seconds = max(seconds, 1e-9)
        total = self.useful + self.padded
        out = {"tokens_per_s": total / seconds, "useful_tokens_per_s": self.useful / seconds,
               "pad_tokens_per_s": self.padded / seconds, "mfu": None}
        if self.peak:
            out["mfu"] = total * self.flops_per_token / seconds / (self.peak * self.world)
        out["peak_memory_gib"] = peak_memory_gib()
        self.useful = self.padded = 0
        return out


def peak_memory_gib() -> float | None:
    """The peak GPU memory allocated on the current CUDA device so far, in GiB (None where CUDA is not in use)."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    return torch.cuda.max_memory_allocated() / 2 ** 30
