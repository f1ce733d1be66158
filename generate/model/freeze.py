"""Freeze presets (``--train-only``, paper section 3.1): which parameters learn.

:data:`FREEZE_PRESETS` maps a preset name to a predicate over a parameter's *roles*; add one with
``@freeze_preset(name)``. Roles are found from the model itself, by identity rather than by name, so they are
tie-aware (a tied output layer *is* the input embedding, so training "embeddings" trains the head too):

* ``embedding`` / ``output``: the input embedding and the output layer (weight and bias);
* ``norm``: parameters of normalization modules (class name containing ``Norm``);
* ``positional``: learned positional parameters (names such as ``wpe`` / ``position``; LLaMA has none);
* ``layer``: inside decoder layer ``i`` of ``n`` (``first-half``: ``i < n // 2``); ``ffn``: inside an MLP.

Presets: ``all`` (default); ``embeddings``; ``embeddings+norms`` (+ norms and positional parameters);
``embeddings+norms+first-half`` (+ the first half of the decoder layers); ``embeddings+norms+ffn`` (+ every MLP);
``new-rows``: only the rows after the LM's text rows learn: the embedding (and untied head) are split into a
frozen base block and a trainable new block (:mod:`~tokalign.generate.model.split_rows`), everything else is
frozen, and the LM's rows stay bit-identical under any optimizer. Call :func:`merge_split_rows` before saving.

:func:`apply_freeze` sets ``requires_grad`` and returns a :class:`FreezeReport`. :func:`optimizer_groups` gives
AdamW groups over the trainable parameters only (frozen ones are left out of the optimizer, not just marked):
weight decay on every parameter with two or more dimensions (matrices, including the embedding and output
rows, as GPT-2 / llm.c practice), none on vectors (norm weights, biases).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable

from torch import nn

from tokalign.align.errors import TokalignError
from tokalign.generate.model.split_rows import merge_split_rows, split_new_rows  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

_POSITIONAL = re.compile(r"(^|\.)(wpe|pos_emb\w*|position\w*|embed_positions)(\.|$)")


@dataclass(frozen=True)
class Roles:
    embedding: bool = False
    output: bool = False
    norm: bool = False
    positional: bool = False
    layer: int | None = None  #: decoder layer index, if inside one
    layers: int = 0  #: how many decoder layers the model has
    ffn: bool = False

    @property
    def first_half(self) -> bool:
        return self.layer is not None and self.layer < self.layers // 2


Predicate = Callable[[Roles], bool]
FREEZE_PRESETS: dict[str, Predicate] = {}
SPLIT_PRESETS = {"new-rows"}  #: presets that split the embedding tables first


def freeze_preset(name: str):
    """Register ``predicate(roles) -> trainable`` as preset ``name``."""
    def register(predicate: Predicate) -> Predicate:
        FREEZE_PRESETS[name] = predicate
        return predicate
    return register


@freeze_preset("all")
def _all(r: Roles) -> bool:
    return True


@freeze_preset("embeddings")
def _embeddings(r: Roles) -> bool:
    return r.embedding or r.output


@freeze_preset("embeddings+norms")
def _embeddings_norms(r: Roles) -> bool:
    return _embeddings(r) or r.norm or r.positional


@freeze_preset("embeddings+norms+first-half")
def _first_half(r: Roles) -> bool:
    return _embeddings_norms(r) or r.first_half


@freeze_preset("embeddings+norms+ffn")
def _ffn(r: Roles) -> bool:
    return _embeddings_norms(r) or r.ffn


@freeze_preset("new-rows")
def _new_rows(r: Roles) -> bool:
    return r.embedding or r.output  # after the split, only the new blocks are left trainable (see apply_freeze)


@dataclass(frozen=True)
class FreezeReport:
    preset: str
    trainable: int  #: trainable parameter elements (shared tensors counted once)
    total: int
    trainable_names: tuple[str, ...]
    frozen_names: tuple[str, ...]

    def to_json(self) -> dict:
        return {"preset": self.preset, "trainable": self.trainable, "total": self.total,
                "trainable_names": list(self.trainable_names), "frozen_names": list(self.frozen_names)}


def apply_freeze(model, preset: str, *, text_rows: int | None = None) -> FreezeReport:
    """Set ``requires_grad`` by ``preset``; ``new-rows`` needs ``text_rows`` (the split point)."""
    predicate = FREEZE_PRESETS.get(preset)
    if predicate is None:
        raise TokalignError(f"unknown --train-only {preset!r}; one of {', '.join(FREEZE_PRESETS)}")
    if preset in SPLIT_PRESETS:
        assert text_rows is not None, "new-rows needs the number of text rows"
        split_new_rows(model, text_rows)
    roles = parameter_roles(model)
    if "first-half" in preset and not any(r.layer is not None for r in roles.values()):
        raise TokalignError(f"cannot find the decoder layers of {type(model).__name__}; choose another --train-only")
    for name, param in model.named_parameters():
        param.requires_grad_(bool(predicate(roles[name])))
    if preset in SPLIT_PRESETS:
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            if module is not None:
                module.base.requires_grad_(False)
    report = freeze_report(model, preset)
    logger.info("--train-only %s: %d of %d parameters trainable", preset, report.trainable, report.total)
    assert report.trainable > 0, "a freeze preset left nothing to train"
    return report


def freeze_report(model, preset: str) -> FreezeReport:
    trainable, frozen, count, total = [], [], 0, 0
    for name, param in model.named_parameters():
        total += param.numel()
        if param.requires_grad:
            trainable.append(name)
            count += param.numel()
        else:
            frozen.append(name)
    return FreezeReport(preset, count, total, tuple(trainable), tuple(frozen))


def trainable_parameters(model) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every trainable parameter, each shared tensor once."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def optimizer_groups(model, weight_decay: float) -> list[dict]:
    """AdamW parameter groups over the trainable parameters (module docstring); empty groups are dropped."""
    decay, no_decay = [], []
    for _, param in trainable_parameters(model):
        (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def parameter_roles(model) -> dict[str, Roles]:
    """The :class:`Roles` of every parameter name (shared tensors once, under their first name)."""
    io = _io_parameter_ids(model)
    layer_of, layers = _layer_index(model)
    norm_ids, ffn_ids = set(), set()
    for module_name, module in model.named_modules():
        ids = {id(p) for p in module.parameters(recurse=True)}
        if "Norm" in type(module).__name__:
            norm_ids |= ids
        if "MLP" in type(module).__name__ or module_name.split(".")[-1] in ("mlp", "feed_forward", "ffn"):
            ffn_ids |= ids
    roles = {}
    for name, param in model.named_parameters():
        pid = id(param)
        roles[name] = Roles(embedding=pid in io["embedding"], output=pid in io["output"], norm=pid in norm_ids,
                            positional=bool(_POSITIONAL.search(name)), layer=layer_of.get(pid), layers=layers,
                            ffn=pid in ffn_ids)
    return roles


def _io_parameter_ids(model) -> dict[str, set[int]]:
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    return {"embedding": {id(p) for p in embedding.parameters()},
            "output": {id(p) for p in head.parameters()} if head is not None else set()}


def _layer_index(model) -> tuple[dict[int, int], int]:
    """Parameter id -> decoder layer index, from the ModuleList holding ``config.num_hidden_layers`` blocks."""
    n = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and n > 0:
            return {id(p): i for i, block in enumerate(module) for p in block.parameters()}, n
    return {}, 0


def _check_names() -> None:
    from tokalign.generate.config import FREEZE_PRESETS as NAMES

    assert set(FREEZE_PRESETS) == set(NAMES), f"presets {sorted(FREEZE_PRESETS)} differ from config's {sorted(NAMES)}"


_check_names()
