"""Init modes: how the expanded vocabulary's rows (and, for ``scratch``, every weight) start.

:data:`INIT_MODES` maps a mode name to an :class:`InitMode`; add one with ``@init_mode(name)``.
:func:`initialize` runs one on a :class:`~tokalign.generate.model.base.BaseLM` and returns the expanded model
(``layout.total_rows`` rows: V text rows, K image rows, 7 structure rows, padding up to a multiple of 64) with
a JSON provenance record saying which row ranges came from where. The pretrained modes resize ``base.model``
in place; ``scratch`` builds a new model. Every draw is seeded with ``seed``.

Input rows, by mode (text rows 0..V-1 are always the LM's own, bit-identical, except under ``scratch``):

* ``aligned``: image and structure rows from a ``generator-init`` export, which is refused (one line) unless it
  was made for this LM (identity and embedding sha256), this corpus's codebook size and image tokenizer
  (``sha256``), and holds only finite numbers. ``request.marker`` (:mod:`~tokalign.generate.model.image_marker`)
  may add one shared vector to the image rows that keeps their text neighbours (``none``: the rows as exported).
* ``random-rows``: a diagonal Gaussian fitted to the LM's rows (per-dimension mean and std), each draw scaled
  to the LM's mean row norm; HF's mean resizing is switched off (``mean_resizing=False``) and overwritten.
* ``mean``: Hugging Face's default mean resizing (new rows near the mean of the old ones; padding rows too).
* ``scratch``: the same architecture (and layer count) built from its config with the model's own init.

Padding rows (never targets, masked at sampling) are zero in ``aligned`` and ``random-rows``.

Output rows: with tied embeddings they are the input rows. For an untied head (or ``untie=True``, which clones
the tied weight into a separate head and sets ``config.tie_word_embeddings = False``) the head's text rows are
its own, and its new rows are the mode's new input rows times one factor, the head's mean text-row norm over
the new input rows' mean norm (relative norms and directions kept, scale of the head); padding rows zero.
``mean`` leaves the head to HF's mean resizing; ``scratch`` to the init. That is the ``tied`` head treatment;
``request.head`` names another one (:mod:`~tokalign.generate.model.heads`: ``calibrated``, ``zero``), which then
sets the new ids' output rows after the mode (a tied LM is untied for the new rows only), the same way for every
mode, so arms of an init study differ in their input rows alone. :class:`InitRequest` defaults to ``tied`` (the
library's behaviour when no treatment is named); the generator config's default is ``calibrated``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from tokalign.align.errors import TokalignError
from tokalign.align.formats.generator_init import SPECIAL_TOKENS, VocabLayout, read_generator_init
from tokalign.align.formats.hashing import tensor_sha256
from tokalign.generate.model.base import BaseLM, is_tied
from tokalign.generate.model.heads import HEADS, Calibration, apply_head
from tokalign.generate.model.image_marker import MARKERS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitRequest:
    """What an init mode needs besides the base LM."""

    layout: VocabLayout
    seed: int = 0
    init_from: Path | None = None  #: ``aligned``: the generator-init file
    image_tokenizer: dict | None = None  #: the corpus's image tokenizer identity (``codebook_size``, ``sha256``)
    untie: bool = False
    head: str = "tied"  #: the head treatment (module docstring)
    marker: str = "none"  #: ``aligned``: the image marker rule (:mod:`~tokalign.generate.model.image_marker`)
    calibration: Calibration | None = None  #: training rows the ``calibrated`` head is fitted on


@dataclass
class InitResult:
    model: Any  #: the expanded model (``layout.total_rows`` rows)
    provenance: dict  #: JSON: which rows came from where
    pretrained: bool  #: whether the LM's weights were kept (text-side KL is meaningful)


@dataclass(frozen=True)
class InitMode:
    name: str
    pretrained: bool
    apply: Callable[[BaseLM, InitRequest], tuple[Any, dict]]  #: -> (model, provenance of the new rows)


INIT_MODES: dict[str, InitMode] = {}


def init_mode(name: str, *, pretrained: bool = True):
    """Register ``function(base, request) -> (model, provenance)`` as init mode ``name``."""
    def register(function):
        INIT_MODES[name] = InitMode(name, pretrained, function)
        return function
    return register


def initialize(base: BaseLM, mode: str, request: InitRequest) -> InitResult:
    """Expand ``base`` to ``request.layout`` with init ``mode`` (module docstring)."""
    entry = INIT_MODES.get(mode)
    if entry is None:
        raise TokalignError(f"unknown --init {mode!r}; one of {', '.join(INIT_MODES)}")
    layout = request.layout
    if layout.text_rows != base.text_rows:
        raise TokalignError(f"the vocabulary layout has {layout.text_rows} text rows but LM {base.spec!r} has "
                            f"{base.text_rows}; build the layout from this LM")
    if request.marker not in MARKERS:
        raise TokalignError(f"unknown --marker {request.marker!r}; one of {', '.join(MARKERS)}")
    if request.head not in HEADS:
        raise TokalignError(f"unknown --head {request.head!r}; one of {', '.join(HEADS)}")
    if base.model.get_input_embeddings().weight.shape[0] != base.text_rows:
        raise TokalignError(f"LM {base.spec!r} was already expanded by an init mode; load it again for another init")
    was_tied = base.tied
    model, rows = entry.apply(base, request)
    assert model.get_input_embeddings().num_embeddings == layout.total_rows, "expanded model has the wrong rows"
    head = apply_head(model, layout, request.head, request.calibration)
    if head is not None:
        rows["output_rows"] = head
    provenance = {"mode": mode, "seed": int(request.seed), "pretrained": entry.pretrained,
                  "tied": is_tied(model), "untie": bool(request.untie and was_tied),
                  "head": request.head, "layout": layout.to_json(),
                  "base_lm": {"spec": base.spec, "identity": base.identity, "embedding_sha256": base.embedding_sha256},
                  **rows}
    logger.info("init %s: %d rows (%d text, %d image, %d structure, %d padding), %s", mode, layout.total_rows,
                layout.text_rows, layout.codebook_size, len(SPECIAL_TOKENS), len(layout.padding_ids),
                "tied" if provenance["tied"] else f"untied head ({request.head})")
    return InitResult(model, provenance, entry.pretrained)


def untie_head(model) -> None:
    """Give a tied model its own output head (a copy of the embedding) and mark the config untied."""
    if not is_tied(model):
        return
    head = model.get_output_embeddings()
    head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    model.config.tie_word_embeddings = False
    assert not is_tied(model)


# ------------------------------------------------------------------ the modes


@init_mode("aligned")
def _aligned(base: BaseLM, request: InitRequest) -> tuple[Any, dict]:
    export = read_checked_export(base, request)
    text = base.model.get_input_embeddings().weight.detach()[:base.text_rows]  # a view; a rule converts what it reads
    marker = MARKERS[request.marker](export.image_rows, text)
    new_rows = torch.cat([marker.apply(export.image_rows), export.special_rows.float()])
    model, head = _expand(base, request, new_rows)
    where = f"generator-init {request.init_from}"
    meta = export.metadata
    return model, {"input_rows": _row_table(request.layout, where, where, "zeros"), "output_rows": head,
                   "init_from": {"path": str(Path(request.init_from).resolve()), "tensor_sha256": meta["tensor_sha256"],
                                 "source_run": meta.get("source_run", ""), "source_steps": meta.get("source_steps", ""),
                                 "rescale": meta.get("rescale", {}), "special_init": meta.get("special_init", {}),
                                 "variant": meta.get("variant", {"rows": "input and output (written before variants)"})},
                   "image_marker": marker.to_json(request.marker)}


@init_mode("random-rows")
def _random_rows(base: BaseLM, request: InitRequest) -> tuple[Any, dict]:
    text = base.model.get_input_embeddings().weight.detach().float()
    count = request.layout.used_rows - request.layout.text_rows
    new_rows = lm_gaussian_rows(text, count, request.seed)
    model, head = _expand(base, request, new_rows)
    where = f"lm-diagonal-gaussian-at-mean-norm (seed {request.seed})"
    return model, {"input_rows": _row_table(request.layout, where, where, "zeros"), "output_rows": head}


@init_mode("mean")
def _mean(base: BaseLM, request: InitRequest) -> tuple[Any, dict]:
    model = base.model
    if request.untie:
        untie_head(model)
    _resize(model, request.layout.total_rows, mean_resizing=True, seed=request.seed)
    where = "hf-mean-resizing"
    head = {"rule": "tied: the input rows"} if is_tied(model) else {"rule": "hf-mean-resizing of the head's own rows"}
    return model, {"input_rows": _row_table(request.layout, where, where, where), "output_rows": head}


@init_mode("scratch", pretrained=False)
def _scratch(base: BaseLM, request: InitRequest) -> tuple[Any, dict]:
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(base.model.config)
    config.vocab_size = request.layout.total_rows
    if request.untie:
        config.tie_word_embeddings = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(request.seed))
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    where = f"model-init (seed {request.seed})"
    table = _row_table(request.layout, where, where, where)
    table[0]["from"] = where  # the text rows are re-initialized too
    head = {"rule": "tied: the input rows"} if is_tied(model) else {"rule": "model-init"}
    return model, {"input_rows": table, "output_rows": head, "all_weights": where}


# ------------------------------------------------------------------ helpers


def read_checked_export(base: BaseLM, request: InitRequest):
    """The generator-init file of ``request``, refused unless it fits this LM and corpus (module docstring)."""
    if request.init_from is None:
        raise TokalignError("--init aligned needs --init-from FILE (a `tokalign export --to generator-init` file)")
    assert request.image_tokenizer is not None, "aligned init needs the corpus's image tokenizer identity"
    path = Path(request.init_from)
    export = read_generator_init(path, base.model.get_input_embeddings().weight.detach(), lm_identity=base.identity,
                                 codebook_size=request.layout.codebook_size)
    theirs, ours = export.metadata["image_tokenizer"].get("sha256"), request.image_tokenizer.get("sha256")
    if theirs != ours:
        raise TokalignError(f"{path} was exported for image tokenizer {str(theirs)[:12]}, the corpus was made with "
                            f"{str(ours)[:12]}; export from a run fit on this corpus's image tokenizer")
    for name in ("image_rows", "special_rows"):
        rows = getattr(export, name)
        if not bool(torch.isfinite(rows).all()):
            bad = int((~torch.isfinite(rows)).any(dim=1).sum())
            raise TokalignError(f"{path}: {bad} of its {name} hold NaN or infinity; re-run the fit and export again")
    return export


def lm_gaussian_rows(text_rows: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """``count`` draws from the diagonal Gaussian of ``text_rows``, each scaled to their mean row norm."""
    from tokalign.align.fit.export import special_token_rows

    rows, _ = special_token_rows(text_rows.float(), count, int(seed), "gaussian")
    return rows


def _resize(model, rows: int, *, mean_resizing: bool, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model.resize_token_embeddings(rows, mean_resizing=mean_resizing)


def _expand(base: BaseLM, request: InitRequest, new_rows: torch.Tensor) -> tuple[Any, dict]:
    """Resize without mean resizing, write ``new_rows`` after the text rows, zero the padding rows."""
    model, layout = base.model, request.layout
    if request.untie:
        untie_head(model)
    _resize(model, layout.total_rows, mean_resizing=False, seed=request.seed)
    v, used = layout.text_rows, layout.used_rows
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        weight[v:used] = new_rows.to(weight.dtype)
        weight[used:] = 0
        if is_tied(model):
            return model, {"rule": "tied: the input rows"}
        head = model.get_output_embeddings().weight
        factor = float(head[:v].norm(dim=1).mean() / new_rows.norm(dim=1).mean().clamp_min(1e-12))
        head[v:used] = (new_rows * factor).to(head.dtype)
        head[used:] = 0
        bias = getattr(model.get_output_embeddings(), "bias", None)
        if bias is not None:
            bias[v:] = 0
    rule = {"rule": "new input rows times one factor: the head's mean text-row norm over the new rows' mean norm",
            "factor": factor, "text_rows": "the head's own", "padding_rows": "zeros"}
    return model, rule


def _row_table(layout: VocabLayout, image: str, special: str, padding: str) -> list[dict]:
    so = layout.special_offset
    return [{"kind": "text", "rows": [0, layout.text_rows], "from": "lm"},
            {"kind": "image", "rows": [layout.image_offset, so], "from": image},
            {"kind": "structure", "rows": [so, layout.used_rows], "from": special},
            {"kind": "padding", "rows": [layout.used_rows, layout.total_rows], "from": padding}]


def rows_sha256(model, layout: VocabLayout) -> dict[str, str]:
    """sha256 of the input text rows and of the new rows (for run records and resume checks)."""
    embedding = model.get_input_embeddings()
    weight = (embedding.full_weight() if hasattr(embedding, "full_weight") else embedding.weight).detach()
    return {"text": tensor_sha256(weight[:layout.text_rows]), "new": tensor_sha256(weight[layout.text_rows:])}


def _check_names() -> None:
    from tokalign.generate.config import INIT_MODES as NAMES

    assert set(INIT_MODES) == set(NAMES), f"init modes {sorted(INIT_MODES)} differ from config's {sorted(NAMES)}"


_check_names()
