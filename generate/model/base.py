"""The generator's starting point: a plain, trainable causal LM from any ``--lm`` spec ``fit --lm`` takes.

:func:`load_base_lm` resolves the spec with :func:`tokalign.align.lm.load.resolve_lm_spec` (the default alias,
a Hugging Face id or folder, a ``.gguf`` file) and loads the model in float32 with its tokenizer.

Contracts:

* The model is a plain ``transformers`` model: ``save_pretrained`` works and no quantizer is attached. A
  gguf-loaded model keeps ``hf_quantizer`` and refuses ``save_pretrained``, so it is rebuilt from its config
  (without ``quantization_config``) and its state dict. Its weights still carry the file's quantization error
  (Q4_1 for the default). Other quantized checkpoints are refused.
* ``num_layers`` keeps only the first N decoder layers (same rebuild: config with N layers, the state dict
  without the dropped layers' tensors).
* :attr:`BaseLM.embedding_sha256` is :func:`~tokalign.align.formats.hashing.tensor_sha256` of the input
  embedding matrix, the value :func:`~tokalign.align.lm.load.load_frozen_lm` records for the same spec, so a
  generator-init export made for this LM matches it. :attr:`BaseLM.identity` is the spec's identity.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tokalign.align.errors import TokalignError
from tokalign.align.formats.hashing import tensor_sha256
from tokalign.align.defaults import DEFAULT_LM
from tokalign.align.lm.load import LMSource, resolve_lm_spec

logger = logging.getLogger(__name__)

_LAYER_KEY = re.compile(r"\.layers\.(\d+)\.")


@dataclass(frozen=True)
class BaseLM:
    """A plain trainable causal LM and what identifies it."""

    model: Any  #: a ``transformers`` ``PreTrainedModel`` (float32, train mode off)
    tokenizer: Any
    spec: str
    source: str  #: "gguf" | "local" | "hub"
    identity: dict
    embedding_sha256: str  #: of the input embedding rows (the one hasher)
    text_rows: int  #: the LM's embedding rows V, as loaded (the init modes resize ``model`` in place)
    d_model: int

    @property
    def tied(self) -> bool:
        return is_tied(self.model)


def is_tied(model) -> bool:
    """Whether the output layer shares the input embedding's weight (or, split, both its row blocks)."""
    out, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    if out is None:
        return False
    if hasattr(out, "base") and hasattr(embedding, "base"):  # split tables: tied only if both blocks are shared
        return out.base is embedding.base and out.new is embedding.new
    return out.weight is embedding.weight


def load_base_lm(spec: str = DEFAULT_LM, *, num_layers: int | None = None) -> BaseLM:
    """Load ``spec`` as a plain float32 causal LM (module docstring); one-line errors for what cannot load."""
    source = resolve_lm_spec(spec)
    try:
        model = _from_pretrained(source)
        tokenizer = _tokenizer(source)
    except TokalignError:
        raise
    except Exception as exc:
        raise TokalignError(f"cannot load LM {spec!r} ({source.source}) as a trainable model: {_one_line(exc)}") from exc
    quantized = getattr(model, "hf_quantizer", None) is not None or hasattr(model.config, "quantization_config")
    if quantized and source.source != "gguf":
        raise TokalignError(f"LM {spec!r} is a quantized checkpoint; pass a full-precision model (or a .gguf file)")
    if quantized or num_layers is not None:
        model = plain_copy(model, num_layers)
    model.eval()
    weight = model.get_input_embeddings().weight
    rows, d_model = (int(n) for n in weight.shape)
    logger.info("base LM %r: %d layers, %d text rows, d_model %d, %s", spec, model.config.num_hidden_layers, rows,
                d_model, "tied" if is_tied(model) else "untied")
    return BaseLM(model, tokenizer, str(spec), source.source, dict(source.identity), tensor_sha256(weight), rows, d_model)


def plain_copy(model, num_layers: int | None = None):
    """A plain model of ``model``'s architecture (no quantizer) holding its weights, optionally truncated."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    if num_layers is not None:
        _truncate_config(config, num_layers)
    keep = config.num_hidden_layers
    state = {k: v for k, v in model.state_dict().items() if not _dropped(k, keep)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the init is overwritten; seeding only keeps the global RNG untouched
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(state, strict=False)
    tied_aliases = {"lm_head.weight"} if is_tied(plain) else set()
    assert not unexpected and set(missing) <= tied_aliases, f"rebuild lost weights: {missing} {unexpected}"
    return plain


def _truncate_config(config, num_layers: int) -> None:
    layers = int(config.num_hidden_layers)
    if not isinstance(num_layers, int) or not 1 <= num_layers <= layers:
        raise TokalignError(f"--num-layers {num_layers!r} must lie in 1..{layers} (the LM's decoder layers)")
    config.num_hidden_layers = num_layers
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:num_layers]


def _dropped(key: str, keep: int) -> bool:
    match = _LAYER_KEY.search(key)
    return match is not None and int(match.group(1)) >= keep


def _where(source: LMSource) -> tuple[str, dict]:
    """(name or path, kwargs) for ``from_pretrained`` of a resolved spec."""
    identity = source.identity
    if source.source == "gguf":
        path = Path(identity["path"])
        return str(path.parent), {"gguf_file": path.name}
    if source.source == "local":
        return identity["path"], {}
    from tokalign.align.lm.load import _offline

    return source.spec, {"revision": identity.get("revision"), "local_files_only": _offline()}


def _from_pretrained(source: LMSource):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    name, kwargs = _where(source)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # library code does not print
    try:
        with _quiet_gguf_bar():
            return AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, **kwargs)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _quiet_gguf_bar():
    """transformers' gguf loader draws a raw tqdm bar that ignores its progress-bar switch; silence it here."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # transformers without gguf support: nothing to silence
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar


def _tokenizer(source: LMSource):
    from transformers import AutoTokenizer

    name, kwargs = _where(source)
    return AutoTokenizer.from_pretrained(name, **kwargs)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
