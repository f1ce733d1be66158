"""Opening what sampling needs: the generator folder (record, model, tokenizer) and its corpus's image tokenizer.

:func:`load_generator` refuses a folder that is not a tokalign generator or whose model disagrees with its
record. :func:`corpus_for_decoding` finds the corpus whose image tokenizer decodes the samples and refuses one
whose tokenizer identity (kind, codebook size, grid, sha256) differs from the one the generator was trained on;
the decode step then reloads that tokenizer and checks its weights against the same sha256.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokalign.align.errors import TokalignError
from tokalign.align.formats.corpus import MANIFEST, read_manifest
from tokalign.generate.model_folder import GeneratorRecord, model_hidden_size, read_record

log = logging.getLogger(__name__)
IDENTITY_KEYS = ("kind", "codebook_size", "grid", "sha256")
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@dataclass(frozen=True)
class LoadedGenerator:
    record: GeneratorRecord
    model: Any  # a transformers causal LM, in eval mode on its device
    tokenizer: Any


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TokalignError(f"--device {device} was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return getattr(torch, DTYPES[dtype])


def native_cpu_bf16() -> bool:
    """True when this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), where bf16 halves a step's time."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


BF16_CPU_MIN_WIDTH = 256  # narrower models are bound by per-op overhead, where bf16 on a CPU is slower


def sampling_dtype(dtype: str, device: str, hidden_size: int = 0) -> str:
    """``--dtype`` of ``generator sample``: auto is bfloat16 on a GPU, and on a CPU with native bf16 for a model
    at least :data:`BF16_CPU_MIN_WIDTH` wide (halving the bytes a step reads); else float32."""
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        return "bfloat16"
    return "bfloat16" if hidden_size >= BF16_CPU_MIN_WIDTH and native_cpu_bf16() else "float32"


def hidden_size(folder: Path) -> int:
    """The model's ``hidden_size`` from its ``config.json`` (0 when unreadable)."""
    return model_hidden_size(folder)


def load_generator(folder: Path, device: str = "auto", dtype: str = "auto") -> LoadedGenerator:
    """The record, the model (eval mode, on ``device``) and the tokenizer of a generator folder."""
    record = read_record(folder)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=resolve_dtype(dtype, device))
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:  # a truncated or damaged weights file surfaces as several library error types
        raise TokalignError(f"{folder} has a tokalign record but its model or tokenizer does not load "
                            f"({type(exc).__name__}: {_first_line(exc)}); save the generator again") from None
    rows = model.get_output_embeddings().weight.shape[0]
    if rows != record.layout.total_rows:
        raise TokalignError(f"{folder}: the model's output layer has {rows} rows but its record's vocabulary layout "
                            f"has {record.layout.total_rows}; the folder is damaged, save the generator again")
    model.to(device).eval()
    return LoadedGenerator(record, model, tokenizer)


def corpus_for_decoding(record: GeneratorRecord, corpus: Path | None = None) -> Path:
    """The corpus folder whose image tokenizer decodes this generator's tokens (identity checked)."""
    root = Path(corpus) if corpus is not None else (Path(record.corpus) if record.corpus else None)
    if root is None:
        raise TokalignError("the generator's record names no corpus; pass --corpus with the corpus it was trained on")
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise TokalignError(f"the generator's corpus {root} is missing (no {MANIFEST}); pass --corpus where it "
                            "moved to")
    try:
        identity = read_manifest(root)["image_tokenizer"]
    except (TokalignError, KeyError, TypeError):
        raise TokalignError(f"{manifest} is unreadable or names no image tokenizer; pass another --corpus") from None
    for key in IDENTITY_KEYS:
        if _norm(identity.get(key)) != _norm(record.image_tokenizer.get(key)):
            raise TokalignError(f"the corpus {root} has another image tokenizer than the generator was trained with "
                                f"({key} {identity.get(key)!r} vs {record.image_tokenizer.get(key)!r}); pass "
                                "--corpus of the generator's own corpus")
    if record.image_tokenizer.get("codebook_size") != record.layout.codebook_size:
        raise TokalignError("the generator's record is inconsistent (image tokenizer codebook size differs from "
                            "its vocabulary layout); save the generator again")
    return root


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else "no message"


def _norm(value):
    return list(value) if isinstance(value, (list, tuple)) else value
