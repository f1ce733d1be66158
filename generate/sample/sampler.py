"""The sampling loop: KV-cached, batched, with classifier-free guidance in one forward per step.

:func:`sample_image_ids` takes B prefixes (ids, see :mod:`.prefix`) and returns (B, steps) ids, every one in the
image block. With guidance the batch holds 2B rows, the B conditional prefixes then B copies of the
unconditional prefix, left-padded together; one forward per step gives both halves' logits, mixed as raw
logits ``u + s (c - u)``; the token drawn from the mix is appended to both halves. The image-id bias
(:mod:`.constraint`) is added after mixing, before temperature/top-k/top-p. ``use_cache=False`` recomputes the
whole sequence every step (the reference the cached path is tested against).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.sample.constraint import check_image_ids, image_bias
from tokalign.generate.sample.distribution import sample_next
from tokalign.generate.sample.prefix import left_pad


@dataclass(frozen=True)
class Settings:
    """How each token is drawn (see :func:`tokalign.generate.sample.distribution.filter_logits`)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cfg_scale: float = 1.0


def _cache_keyword(model) -> str:
    """``cache`` (transformers 5) or ``past_key_values`` (4.x): the forward's name for the KV cache."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(output):
    return getattr(output, "cache", None) if hasattr(output, "cache") else output.past_key_values


def _additive_masks(model, mask: torch.Tensor, width: int):
    """Precomputed 4D additive masks for the cached loop, or None where the attention needs transformers' own.

    ``sdpa`` and ``eager`` attention take a (B, 1, q, kv) additive mask as given, so building it once saves
    transformers' per-step mask construction: the prefill mask (causal and padding) and one (B, 1, 1, total)
    padding row whose prefix each decode step uses. Padding queries may see themselves only (finite, never NaN).
    """
    if getattr(model.config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return None
    dtype = next(model.parameters()).dtype
    low = torch.finfo(dtype).min
    keep = mask.bool()
    causal = torch.ones(width, width, dtype=torch.bool, device=mask.device).tril()
    allowed = causal & keep[:, None, :width] | torch.eye(width, dtype=torch.bool, device=mask.device)
    prefill = torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill_(~allowed, low)[:, None]
    step = torch.zeros(keep.shape, dtype=dtype, device=mask.device).masked_fill_(~keep, low)[:, None, None]
    return prefill, step


def mix(logits: torch.Tensor, rows: int, scale: float) -> torch.Tensor:
    """(2B, V) logits, conditional rows first -> (B, V) float32 ``u + s (c - u)``."""
    cond, uncond = logits[:rows].float(), logits[rows:].float()
    return uncond + scale * (cond - uncond)


@torch.inference_mode()
def sample_image_ids(model, prefixes: list[list[int]], *, layout: VocabLayout, steps: int, uniforms: torch.Tensor,
                     settings: Settings = Settings(), unconditional: list[int] | None = None,
                     guided: bool | None = None, use_cache: bool = True) -> torch.Tensor:
    """(B, steps) int64 image-block ids for the B ``prefixes``; row i drawn with ``uniforms[i]`` (B, steps).

    ``guided`` (default: ``cfg_scale != 1``) runs the 2B guided batch; it needs ``unconditional``. Forcing it on
    with scale 1 gives the conditional result (up to float rounding of the mix).
    """
    guided = settings.cfg_scale != 1.0 if guided is None else guided
    rows = len(prefixes)
    if guided and unconditional is None:
        raise ValueError("guided sampling needs the unconditional prefix")
    device = next(model.parameters()).device
    batch = left_pad(list(prefixes) + ([list(unconditional)] * rows if guided else []), layout.pad_id)
    width = batch.ids.shape[1]
    ids = torch.cat([batch.ids, torch.full((len(batch.ids), steps), layout.pad_id, dtype=torch.long)], 1).to(device)
    mask = torch.cat([batch.attention_mask, torch.ones(len(batch.ids), steps, dtype=torch.long)], 1).to(device)
    positions = torch.cat([batch.position_ids, batch.last_position + torch.arange(1, steps + 1)], 1).to(device)
    bias, u = image_bias(layout, device), uniforms.to(device)
    out_ids = torch.empty(rows, steps, dtype=torch.long, device=device)
    cache_kw, cache = _cache_keyword(model), None
    masks = _additive_masks(model, mask, width) if use_cache else None
    for step in range(steps):
        end = width + step
        if use_cache:
            start = 0 if step == 0 else end - 1
            kwargs = {cache_kw: cache} if cache is not None else {}
            attention = mask[:, :end] if masks is None else (masks[0] if step == 0 else masks[1][..., :end])
            output = model(input_ids=ids[:, start:end], attention_mask=attention,
                           position_ids=positions[:, start:end], use_cache=True, logits_to_keep=1, **kwargs)
            cache = _cache_of(output)
        else:
            output = model(input_ids=ids[:, :end], attention_mask=mask[:, :end], position_ids=positions[:, :end],
                           use_cache=False, logits_to_keep=1)
        logits = output.logits[:, -1]
        logits = mix(logits, rows, settings.cfg_scale) if guided else logits.float()
        token = sample_next(logits + bias, u[:, step], settings.temperature, settings.top_k, settings.top_p)
        out_ids[:, step] = token
        ids[:rows, end] = token
        if guided:
            ids[rows:, end] = token
    check_image_ids(out_ids, layout)
    return out_ids
