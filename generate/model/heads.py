"""Head treatments (``--head``): how the output rows of the new ids start, independently of their input rows.

:data:`HEADS` maps a name to a :class:`HeadTreatment`; add one with ``@head_treatment(name)``. The init mode
(:mod:`~tokalign.generate.model.init_modes`) sets the input rows; the treatment then sets the output rows of
the new ids (image, structure; padding rows zero), so an init study can vary the input rows alone.

* ``tied``: what the init mode does by itself: with a tied LM the new output rows *are* the new input rows;
  an untied head gets the mode's own rule (see the init modes). Before the head treatments this was the only
  behaviour; with the aligned rows on a tied LM it puts nearly all next-token mass on image ids at caption
  positions.
* ``zero``: the new output rows start at zero (LlamaGen zero-initializes its head): every new id gets logit 0.
* ``calibrated`` (the config's default): every new output row is a shared vector plus a frequency term, four
  numbers fitted on the model's own final hidden states over a few
  training sequences (:mod:`~tokalign.generate.model.head_fit`): as much mass on the
  new ids at image positions as the LM's hidden states allow while the text positions keep their predictions
  (KL at most 7.5e-3 nats on the calibration captions; the limit is 0.01). Seeded by nothing: the fit is deterministic.

Except under ``tied``, a tied LM is untied for the new rows only (:func:`~.split_rows.untie_new_rows`): the text
rows stay one parameter shared by the embedding and the head, bit-identical to the LM's; an untied head keeps
its text rows. :func:`calibration_rows` builds the calibration sequences from a corpus without writing anything.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from tokalign.align.errors import TokalignError
from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.model.base import is_tied
from tokalign.generate.model.head_fit import Features, fit_head
from tokalign.generate.model.split_rows import untie_new_rows
from tokalign.generate.sequences.buckets import IMAGE, STRUCTURE, TEXT, bucket_of

logger = logging.getLogger(__name__)

CALIBRATION_SEQUENCES = 4  #: training sequences whose image positions the calibrated head is fitted on
CALIBRATION_CAPTIONS = 512  #: training captions (alone) whose positions it must leave unchanged
CAPTION_BATCH = 32  #: captions per forward pass (right-padded; sequences go one at a time)
COUNT_ITEMS = 2048  #: training images whose token counts give the unigram term


@dataclass(frozen=True)
class Calibration:
    """Token rows the ``calibrated`` head is fitted on (from training items, never held-out ones)."""

    sequences: torch.Tensor  #: (B, L) int64 full sequences, ``<pad>``-padded
    captions: torch.Tensor  #: (C, Lc) int64 captions alone, right-padded
    caption_mask: torch.Tensor  #: (C, Lc) 1 on caption tokens
    image_counts: torch.Tensor  #: (K,) int64 occurrences of each image token in up to COUNT_ITEMS training images

    def to_json(self) -> dict:
        return {"sequences": int(self.sequences.shape[0]), "captions": int(self.captions.shape[0]),
                "counted_image_tokens": int(self.image_counts.sum())}

    def log_frequencies(self, layout: VocabLayout) -> torch.Tensor:
        """(image + structure rows,) add-one smoothed log unigram frequency; structure rows: an unseen token's."""
        counts = self.image_counts.double()
        total = float(counts.sum()) + layout.codebook_size
        image = ((counts + 1) / total).log()
        structure = torch.full((layout.used_rows - layout.special_offset,), math.log(1 / total), dtype=torch.float64)
        return torch.cat([image, structure])


@dataclass(frozen=True)
class HeadTreatment:
    name: str
    needs_calibration: bool
    apply: Callable[[Any, VocabLayout, "Calibration | None"], dict]  #: (model, layout, calibration) -> provenance


HEADS: dict[str, HeadTreatment] = {}


def head_treatment(name: str, *, needs_calibration: bool = False):
    """Register ``function(model, layout, calibration) -> provenance`` as head treatment ``name``."""
    def register(function):
        HEADS[name] = HeadTreatment(name, needs_calibration, function)
        return function
    return register


def apply_head(model, layout: VocabLayout, name: str, calibration: Calibration | None) -> dict | None:
    """Run treatment ``name`` on the expanded ``model``; None for ``tied`` (the init mode's rule stands)."""
    entry = HEADS[name]
    assert calibration is not None or not entry.needs_calibration, f"--head {name} needs calibration rows"
    return entry.apply(model, layout, calibration)


@head_treatment("tied")
def _tied(model, layout: VocabLayout, calibration: Calibration | None) -> None:
    return None


@head_treatment("zero")
def _zero(model, layout: VocabLayout, calibration: Calibration | None) -> dict:
    text = _own_new_rows(model, layout)
    _write_new_rows(model, layout, torch.zeros(layout.used_rows - layout.text_rows, model.config.hidden_size))
    return {"rule": "zero: every new output row starts at zero", "text_rows": text, "padding_rows": "zeros"}


@head_treatment("calibrated", needs_calibration=True)
def _calibrated(model, layout: VocabLayout, calibration: Calibration | None) -> dict:
    text = _own_new_rows(model, layout)
    features = collect_features(model, layout, calibration)
    q = calibration.log_frequencies(layout).float()
    text_mean = _full(model.get_output_embeddings())[:layout.text_rows].mean(0)
    fit = fit_head(features, q, len(layout.padding_ids), text_mean)
    _write_new_rows(model, layout, fit.rows(q))
    return {"rule": "calibrated: new output rows a*u + b*m + w*t + g*logfreq*e from the model's "
                    "final hidden states (most mass on new ids at image positions, text-position KL within budget)",
            "text_rows": text, "padding_rows": "zeros", "fit": fit.to_json(), "calibration": calibration.to_json()}


# ------------------------------------------------------------------ helpers


def _own_new_rows(model, layout: VocabLayout) -> str:
    """Make sure the new ids' output rows are a parameter of their own; say what the text rows are."""
    if untie_new_rows(model, layout.text_rows):
        return "tied to the input text rows (one parameter)"
    assert not is_tied(model), "the head is still tied"
    return "the head's own"


def _full(module) -> torch.Tensor:
    """The whole weight of an embedding or head, split in two or not (detached, float32)."""
    return (module.full_weight() if hasattr(module, "full_weight") else module.weight).detach().float()


def _head_new_block(model, layout: VocabLayout) -> torch.Tensor:
    """The head's rows from ``text_rows`` on, as a writable view."""
    head = model.get_output_embeddings()
    if hasattr(head, "new"):
        return head.new
    return head.weight[layout.text_rows:]


def _write_new_rows(model, layout: VocabLayout, rows: torch.Tensor) -> None:
    head = model.get_output_embeddings()
    with torch.no_grad():
        block = _head_new_block(model, layout)
        used = layout.used_rows - layout.text_rows
        block[:used] = rows.to(block.dtype).to(block.device)
        block[used:] = 0
        if getattr(head, "bias", None) is not None:
            head.bias[layout.text_rows:] = 0


def collect_features(model, layout: VocabLayout, calibration: Calibration) -> Features:
    """Final hidden states and text logsumexps at new-target and text-target positions (no gradients)."""
    v = layout.text_rows
    captured: list[torch.Tensor] = []
    hook = model.get_output_embeddings().register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    parts = {"new_h": [], "new_lse": [], "new_target": [], "text_h": [], "text_lse": []}
    device = next(model.parameters()).device
    mode = model.training
    model.eval()
    try:
        with torch.no_grad():
            seq = calibration.sequences
            seq_mask = (seq != layout.pad_id).long()
            caption_keep = (calibration.caption_mask[:, :-1] * calibration.caption_mask[:, 1:]).bool()
            for ids, mask, keep_of, batch_size in ((seq, seq_mask, None, 1), (calibration.captions,
                                                                            calibration.caption_mask, caption_keep,
                                                                            CAPTION_BATCH)):
                for lo in range(0, ids.shape[0], batch_size):
                    chunk, m = ids[lo:lo + batch_size].to(device), mask[lo:lo + batch_size].to(device)
                    captured.clear()
                    logits = model(input_ids=chunk, attention_mask=m).logits[:, :-1]
                    hidden = captured[-1][:, :-1].float()
                    lse = logits[..., :v].float().logsumexp(-1)
                    target = bucket_of(chunk[:, 1:], layout)
                    if keep_of is None:
                        new, text = (target == IMAGE) | (target == STRUCTURE), target == TEXT
                    else:
                        new, text = torch.zeros_like(target, dtype=torch.bool), keep_of[lo:lo + batch_size].to(device)
                    for name, sel in (("new", new), ("text", text)):
                        parts[f"{name}_h"].append(hidden[sel].cpu())
                        parts[f"{name}_lse"].append(lse[sel].cpu())
                    parts["new_target"].append((chunk[:, 1:][new] - v).cpu())
    finally:
        hook.remove()
        model.train(mode)
    d = model.config.hidden_size
    joined = {k: (torch.cat(x) if x else torch.zeros((0, d) if k.endswith("_h") else 0)) for k, x in parts.items()}
    joined["new_target"] = joined["new_target"].long()
    return Features(**joined)


def calibration_rows(corpus, items: np.ndarray, layout: VocabLayout, *, seq_len: int, mode: str,
                     text_tokenizer_sha256: str | None = None, sequences: int = CALIBRATION_SEQUENCES,
                     captions: int = CALIBRATION_CAPTIONS) -> Calibration:
    """The first ``sequences`` (and ``captions``) of ``items``, packed as training sequences (nothing written).

    A corpus tokenized by another text tokenizer than ``text_tokenizer_sha256`` is refused, as the sequence build
    refuses it."""
    from tokalign.generate.sequences.build import max_caption_tokens, pack_rows

    theirs = corpus.text_tokenizer.get("sha256")
    if mode == "text-to-image" and text_tokenizer_sha256 is not None and theirs != text_tokenizer_sha256:
        raise TokalignError(f"the corpus captions were tokenized with {corpus.text_tokenizer.get('name')!r}, not this "
                            "LM's tokenizer; pass the --lm the corpus was made with, or rebuild the corpus with this --lm")

    cap = max_caption_tokens(seq_len, corpus.tokens_per_image, mode)
    chosen = np.asarray(items[:max(sequences, captions)], dtype=np.int64)
    ids = corpus.caption_ids(chosen) if mode == "text-to-image" else [np.zeros(0, np.int64)] * len(chosen)
    kept = [np.asarray(c[:cap], dtype=np.int64) for c in ids]
    if any(len(c) and int(c.max()) >= layout.text_rows for c in kept):
        raise TokalignError(f"a caption token id is outside the LM's {layout.text_rows} text rows; the corpus was "
                            "tokenized for another LM: pass the matching --lm")
    full = chosen[:sequences]
    lengths = np.array([len(c) for c in kept[:sequences]], dtype=np.int64)
    flat = np.concatenate(kept[:sequences]) if len(full) else np.zeros(0, np.int64)
    rows = pack_rows(layout, seq_len, mode, flat, lengths, corpus.image_tokens(full))
    width = int((rows != layout.pad_id).sum(1).max()) if len(rows) else 1
    sequences_t = torch.from_numpy(rows[:, :width].astype(np.int64))
    texts = kept[:captions] if mode == "text-to-image" else []
    widest = max([len(c) for c in texts] + [1])
    caption_ids = torch.zeros((len(texts), widest), dtype=torch.long)
    caption_mask = torch.zeros_like(caption_ids)
    for j, c in enumerate(texts):
        caption_ids[j, :len(c)] = torch.from_numpy(c)
        caption_mask[j, :len(c)] = 1
    counted = np.asarray(items[:COUNT_ITEMS], dtype=np.int64)
    tokens = corpus.image_tokens(counted).reshape(-1).astype(np.int64)
    counts = torch.from_numpy(np.bincount(tokens, minlength=layout.codebook_size)[:layout.codebook_size].astype(np.int64))
    return Calibration(sequences_t, caption_ids, caption_mask, counts)


def _check_names() -> None:
    from tokalign.generate.config import HEADS as NAMES

    assert set(HEADS) == set(NAMES), f"head treatments {sorted(HEADS)} differ from config's {sorted(NAMES)}"


_check_names()
