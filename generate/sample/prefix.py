"""Prompts to prefixes, and prefixes to one left-padded batch.

A text-to-image prefix is ``<doc> <text> caption ids </text> <image>``; the unconditional prefix is the empty
text segment caption dropout trained on, ``<doc> <text> </text> <image>``; an image-only model's prefix is
``<doc> <image>``. Caption ids are the generator tokenizer's encoding without special tokens (how corpora encode
captions), cut to the record's ``max_caption_tokens``. A batch is left-padded with ``<pad>`` so every row's
next token comes last; the attention mask hides the padding and position ids count real tokens only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from tokalign.align.errors import TokalignError
from tokalign.align.formats.generator_init import VocabLayout

log = logging.getLogger(__name__)


def caption_ids(tokenizer, prompt: str, layout: VocabLayout, max_tokens: int) -> list[int]:
    """The text ids of ``prompt``; refuses a prompt that encodes to structure or image ids."""
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else []
    if any(i >= layout.text_rows or i < 0 for i in ids):
        raise TokalignError(f"prompt {prompt!r} contains structure tokens such as <image>; write plain text")
    if max_tokens and len(ids) > max_tokens:
        log.warning("prompt %r has %d tokens; the generator was trained on at most %d, so it is cut to those",
                    prompt[:40], len(ids), max_tokens)
        ids = ids[:max_tokens]
    return ids


def text_prefix(ids: list[int], layout: VocabLayout) -> list[int]:
    s = layout.special
    return [s("<doc>"), s("<text>"), *ids, s("</text>"), s("<image>")]


def unconditional_prefix(layout: VocabLayout) -> list[int]:
    return text_prefix([], layout)


def image_only_prefix(layout: VocabLayout) -> list[int]:
    return [layout.special("<doc>"), layout.special("<image>")]


def suffix(layout: VocabLayout) -> list[int]:
    """What follows the image tokens: ``</image> </doc>``."""
    return [layout.special("</image>"), layout.special("</doc>")]


def document(prefix: list[int], image_ids: list[int], layout: VocabLayout) -> list[int]:
    """The whole sampled sequence: prefix, the image ids, ``</image> </doc>``."""
    return [*prefix, *image_ids, *suffix(layout)]


@dataclass(frozen=True)
class PaddedBatch:
    """Left-padded prefixes: ``ids`` and ``attention_mask`` (B, P) int64, ``position_ids`` (B, P) int64."""

    ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor

    @property
    def last_position(self) -> torch.Tensor:
        """(B, 1) the position id of each row's last prefix token."""
        return self.position_ids[:, -1:]


def left_pad(prefixes: list[list[int]], pad_id: int, width: int | None = None) -> PaddedBatch:
    """One batch of ``prefixes``, each right-aligned in ``width`` (default: the longest) columns."""
    width = width or max(len(p) for p in prefixes)
    ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prefixes), width), dtype=torch.long)
    for row, prefix in enumerate(prefixes):
        if prefix:
            ids[row, width - len(prefix):] = torch.tensor(prefix, dtype=torch.long)
            mask[row, width - len(prefix):] = 1
    positions = (torch.cumsum(mask, dim=1) - 1).clamp_min(0)
    return PaddedBatch(ids, mask, positions)
