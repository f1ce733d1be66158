"""The fit run folder (torch-free): its names, its readers, and the rules its writer follows.

What a fit writes and what probes and export read::

    config.json        the FitConfig, the LM and corpus identities, the split, versions
    metrics.jsonl      one JSON object per logged step (step, loss, logit_scale, temperature, lr, pairs_per_s)
    checkpoints/       step_N/ folders, written atomically (see checkpoint.py)
    lm/                lm.json, embeddings.safetensors (key ``embeddings``) and tokenizer/ of the frozen LM,
                       so probes never reload the LM
    table.safetensors  the final image-token table: ``image_embeddings`` (codebook_size, d_model) float32 and
                       ``logit_scale`` (1,); header metadata (strings) ``format`` ("tokalign-table"), ``version``,
                       ``lm`` (JSON identity), ``lm_embedding_sha256``, ``d_model``, ``codebook_size``,
                       ``image_tokenizer`` (JSON identity), ``steps``, ``final_loss``, ``final_logit_scale``,
                       ``final_temperature``, ``corpus``, ``tensor_sha256`` (``tensors_sha256`` of
                       ``{"image_embeddings": ...}``, verified by :func:`read_table`; tables written before it
                       existed read unverified); a table with a non-finite row is never written
    eval.json          held-out retrieval at the end of the fit
    summary.json       final loss, temperature, retrieval and throughput
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tokalign.align.errors import TokalignError
from tokalign.align.formats import atomic, outputs
from tokalign.align.formats.hashing import canonical_bytes, tensor_sha256, tensors_sha256

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
LM = "lm"
TABLE = "table.safetensors"
EVAL = "eval.json"
SUMMARY = "summary.json"
LM_JSON = "lm.json"
EMBEDDING_FILE = "embeddings.safetensors"
EMBEDDING_KEY = "embeddings"
TOKENIZER = "tokenizer"
TABLE_FORMAT = "tokalign-table"
TABLE_VERSION = "1"
TABLE_JSON_FIELDS = ("lm", "image_tokenizer")
REPORT_DIR, CAPTION_CACHE = "report", "caption_ids"  # written by the report and the caption cache
outputs.register_kind(outputs.FIT_RUN, owned=(CONFIG, METRICS, CHECKPOINTS, LM, TABLE, EVAL, SUMMARY, REPORT_DIR,
                                              CAPTION_CACHE),
                      signature=(CONFIG, "trajectory", lambda v: isinstance(v, dict)))
_REFIT = "re-run `tokalign fit` (or pass the right --run)"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokalignError(f"{path} is missing: {path.parent} is not a finished tokalign run (pass the folder `tokalign fit --run` wrote)") from None
    except ValueError:
        raise TokalignError(f"{path} is not valid JSON; the run folder is damaged") from None


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (same file system), else copy it; atomic either way."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def store_lm(run: Path, lm) -> None:
    """Put the LM's cached embeddings and tokenizer into ``run/lm`` (hard links when possible)."""
    target = run / LM
    if (target / LM_JSON).is_file() and read_json(target / LM_JSON).get("embedding_sha256") == lm.embedding_sha256:
        return
    with atomic.atomic_dir(target) as tmp:
        link_or_copy(Path(lm.cache_dir) / EMBEDDING_FILE, tmp / EMBEDDING_FILE)
        shutil.copytree(Path(lm.cache_dir) / TOKENIZER, tmp / TOKENIZER)
        (tmp / LM_JSON).write_text(json.dumps({"spec": lm.spec, "identity": lm.identity,
                                                 "embedding_sha256": lm.embedding_sha256,
                                                 "vocab_size": lm.vocab_size, "d_model": lm.d_model}, indent=2) + "\n")


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """The run's ``metrics.jsonl`` rows (see :mod:`tokalign.align.training.metrics`)."""
    from tokalign.align.training.metrics import read_metrics as read_rows

    return read_rows(Path(run) / METRICS)


# ------------------------------------------------------------------ the table and the LM matrix


def table_header(metadata: dict[str, Any], image_embeddings: Any = None) -> dict[str, str]:
    """The writer's contract for ``table.safetensors`` metadata: format, version, JSON fields encoded.

    Given the table's ``image_embeddings``, also its ``tensor_sha256``; a table with a non-finite value is
    refused (a diverged fit) with a one-line error.
    """
    header = {"format": TABLE_FORMAT, "version": TABLE_VERSION}
    for key, value in metadata.items():
        header[key] = json.dumps(value, sort_keys=True) if key in TABLE_JSON_FIELDS else str(value)
    if image_embeddings is not None:
        array = canonical_bytes(image_embeddings)
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).any(axis=1).sum())
            raise TokalignError(f"the fitted table has {bad} rows with NaN or infinite values (the fit diverged); "
                                "start a new --run with a lower --lr")
        header["tensor_sha256"] = tensors_sha256({"image_embeddings": array})
    return header


def _read_safetensors(path: Path, key: str, what: str, fix: str) -> tuple[np.ndarray, dict[str, str]]:
    from safetensors import safe_open

    if not path.is_file():
        raise TokalignError(f"{what} {path} is missing; {fix}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = dict(handle.metadata() or {})
            array = handle.get_tensor(key)
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise TokalignError(f"{what} {path} is damaged or not safetensors ({type(exc).__name__}); {fix}") from None
    return array, meta


def read_table(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """(image_embeddings float32 numpy, metadata with JSON fields decoded); one-line errors on any defect."""
    path = Path(path)
    if not path.is_file():
        raise TokalignError(f"no table at {path}: run `tokalign fit` to completion first (or pass the right --run)")
    weight, meta = _read_safetensors(path, "image_embeddings", "table", _REFIT)
    if meta.get("format") != TABLE_FORMAT:
        raise TokalignError(f"{path} is not a tokalign table (format {meta.get('format')!r}); {_REFIT}")
    try:
        for key in TABLE_JSON_FIELDS:
            meta[key] = json.loads(meta[key])
        shape = (int(meta["codebook_size"]), int(meta["d_model"]))
    except (KeyError, ValueError):
        raise TokalignError(f"table {path} has damaged metadata; {_REFIT}") from None
    if weight.shape != shape or weight.dtype != np.float32:
        raise TokalignError(f"table {path} holds {weight.dtype} {weight.shape}, its metadata says {shape}; {_REFIT}")
    if "tensor_sha256" in meta and tensors_sha256({"image_embeddings": weight}) != meta["tensor_sha256"]:
        raise TokalignError(f"table {path} fails its tensor checksum (damaged or altered); {_REFIT}")
    return weight, meta


def read_lm_info(run: Path) -> dict[str, Any]:
    return read_json(Path(run) / LM / LM_JSON)


def read_lm_embeddings(run: Path, lm_info: dict[str, Any], *, verify: bool = False) -> np.ndarray:
    """(rows, d_model) float32 LM input embeddings stored in the run; ``verify`` re-hashes them against lm.json."""
    path = Path(run) / LM / EMBEDDING_FILE
    array, meta = _read_safetensors(path, EMBEDDING_KEY, "LM embedding file", "re-run `tokalign fit` to restore it")
    if meta.get("embedding_sha256") != lm_info.get("embedding_sha256"):
        raise TokalignError(f"{path} does not carry the embedding sha256 that {Path(run) / LM / LM_JSON} names "
                            "(damaged or replaced); re-run `tokalign fit`")
    if array.ndim != 2 or array.dtype != np.float32:
        raise TokalignError(f"{path} holds {array.dtype} {array.shape}, not float32 rows; re-run `tokalign fit`")
    if verify:
        verify_embeddings(run, array, lm_info)
    return array


def verify_embeddings(run: Path, array: np.ndarray, lm_info: dict[str, Any]) -> None:
    """Re-hash the matrix with the one tensor hasher against ``lm/lm.json``."""
    if tensor_sha256(array) != lm_info.get("embedding_sha256"):
        raise TokalignError(f"{Path(run) / LM / EMBEDDING_FILE} fails its sha256 check (damaged); re-run `tokalign fit`")


def check_table_matches_lm(run: Path, table: np.ndarray, table_meta: dict[str, Any], lm_info: dict[str, Any],
                           embeddings: np.ndarray | None = None) -> None:
    """The table must have been fit against the LM matrix stored in the run."""
    same_d = embeddings is None or table.shape[1] == embeddings.shape[1]
    if table_meta.get("lm_embedding_sha256") != lm_info.get("embedding_sha256") or not same_d:
        raise TokalignError(f"the table in {run} was fit against another LM than the one stored in its lm/ folder; {_REFIT}")
