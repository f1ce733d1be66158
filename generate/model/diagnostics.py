"""Step-0 diagnostics of an expanded model: what the expansion alone did, before any training step.

* :func:`row_norm_stats`: L2 row-norm statistics (mean, std, min, max) of the text, image and structure rows of
  the input embedding and, when not fully tied, of the output layer (padding rows are left out).
* :func:`text_kl`: on caption token batches (captions alone, no structure tokens), the mean over next-token
  positions of KL(base || expanded), where *base* is the base LM's next-token distribution over its text rows
  and *expanded* is the expanded model's: ``kl_full`` over the whole expanded vocabulary (the nats per token
  the expansion costs the text side; equal to ``-log`` of the mass left on text tokens when nothing else
  changed) and ``kl_text`` renormalized over the text rows only (zero at step 0 for the pretrained inits, whose
  text rows and layers are the LM's). ``non_text_mass`` is the mean probability on non-text rows. Without a
  ``base_model`` the expanded model's own text logits stand for the base LM's, which is exact at step 0 for
  the pretrained inits (their text rows and layers are bit-identical to the LM's).
* :func:`heldout_losses`: text, image and structure loss (and perplexity) on held-out sequence batches, with
  ``image_uniform_loss`` = ln(codebook size) beside it; the buckets recombine to the total.

Without caption positions (image-only sequences, one-token captions) the KL figures are ``None``. All run under
``torch.no_grad`` in eval mode and restore the model's train/eval mode.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterable

import torch

from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.model.base import is_tied
from tokalign.generate.sequences.buckets import IMAGE, STRUCTURE, TEXT
from tokalign.generate.train.loss import LossSums, bucket_sums, token_losses


@contextmanager
def _evaluating(*models):
    modes = [m.training for m in models if m is not None]
    for m in models:
        if m is not None:
            m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip([m for m in models if m is not None], modes):
            m.train(mode)


def _stats(rows: torch.Tensor) -> dict[str, float]:
    if rows.shape[0] == 0:
        return {"rows": 0}
    norms = rows.detach().float().norm(dim=1)
    return {"rows": int(norms.numel()), "mean": float(norms.mean()), "std": float(norms.std()) if norms.numel() > 1 else 0.0,
            "min": float(norms.min()), "max": float(norms.max())}


def _weight(module) -> torch.Tensor:
    return module.full_weight() if hasattr(module, "full_weight") else module.weight


def _blocks(weight: torch.Tensor, layout: VocabLayout) -> dict[str, dict]:
    return {"text": _stats(weight[:layout.text_rows]),
            "image": _stats(weight[layout.image_offset:layout.special_offset]),
            "structure": _stats(weight[layout.special_offset:layout.used_rows])}


def row_norm_stats(model, layout: VocabLayout) -> dict:
    """``{"input": {text, image, structure}, "output": {...} | "tied"}`` (module docstring)."""
    with torch.no_grad():
        embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
        out: dict = {"input": _blocks(_weight(embedding), layout)}
        if head is None:
            return out
        out["output"] = "tied" if is_tied(model) else _blocks(_weight(head), layout)
    return out


def text_kl(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, layout: VocabLayout, *,
            base_model=None, batch_size: int = 16) -> dict[str, float]:
    """Mean KL(base || expanded) over caption next-token positions (module docstring)."""
    v = layout.text_rows
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    total = {"kl_full": 0.0, "kl_text": 0.0, "non_text_mass": 0.0}
    positions = 0
    device = next(model.parameters()).device
    with _evaluating(model, base_model):
        for lo in range(0, input_ids.shape[0], batch_size):
            ids = input_ids[lo:lo + batch_size].to(device)
            m = mask[lo:lo + batch_size].to(device)
            logits = model(input_ids=ids, attention_mask=m).logits.float()
            base = logits[..., :v] if base_model is None else \
                base_model(input_ids=ids, attention_mask=m).logits.float()[..., :v]
            keep = (m[:, :-1] * m[:, 1:]).bool()  # positions that predict a caption token
            log_p = base[:, :-1][keep].log_softmax(-1)
            chosen = logits[:, :-1][keep]  # (positions, rows)
            full, text = chosen.log_softmax(-1)[:, :v], chosen[:, :v].log_softmax(-1)
            p = log_p.exp()
            total["kl_full"] += float((p * (log_p - full)).sum())
            total["kl_text"] += float((p * (log_p - text)).sum())
            total["non_text_mass"] += float((1 - full.exp().sum(-1)).clamp_min(0).sum())
            positions += int(keep.sum())
    out = {k: (x / positions if positions else None) for k, x in total.items()}  # None: no caption positions
    out["positions"] = positions
    return out


def heldout_losses(model, batches: Iterable[dict], layout: VocabLayout) -> dict[str, float]:
    """Loss and perplexity, total and per bucket, over ``batches`` (dicts with ``input_ids`` and ``buckets``)."""
    device = next(model.parameters()).device
    sums = LossSums.zeros(device)
    with _evaluating(model):
        for batch in batches:
            ids, buckets = batch["input_ids"].to(device), batch["buckets"].to(device)
            losses, bucket = token_losses(model(input_ids=ids).logits, ids, buckets)
            sums.add_(bucket_sums(losses, bucket))
    out = sums.as_dict()
    out["image_uniform_loss"] = math.log(layout.codebook_size)
    return out


def step0_diagnostics(model, layout: VocabLayout, *, pretrained: bool, heldout_batches: Iterable[dict] = (),
                      captions: tuple[torch.Tensor, torch.Tensor] | None = None, base_model=None) -> dict:
    """Everything above in one JSON-ready dict: ``row_norms``, ``heldout``, and ``text_kl`` for pretrained inits."""
    out = {"row_norms": row_norm_stats(model, layout), "heldout": heldout_losses(model, heldout_batches, layout)}
    if pretrained and captions is not None:
        out["text_kl"] = text_kl(model, captions[0], captions[1], layout, base_model=base_model)
    return out


assert (TEXT, IMAGE, STRUCTURE) == (0, 1, 2), "bucket ids must follow generate.train.loss.BUCKETS"
