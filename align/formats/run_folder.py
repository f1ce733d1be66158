"""The fit run folder: what a fit writes and what probes and export read.

::

    config.json        the FitConfig, the LM and corpus identities, the split, versions
    metrics.jsonl      one JSON object per logged step (step, loss, logit_scale, temperature, lr, pairs_per_s)
    checkpoints/       step_N/ folders, written atomically (see checkpoint.py)
    lm/                the frozen LM's input embeddings and tokenizer, so probes never reload the LM
    table.safetensors  the final image-token table (see table.py)
    eval.json          held-out retrieval at the end of the fit
    summary.json       final loss, temperature, retrieval and throughput
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from tokalign.align.formats import atomic
from tokalign.align.errors import TokalignError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
LM = "lm"
TABLE = "table.safetensors"
EVAL = "eval.json"
SUMMARY = "summary.json"


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
    if (target / "lm.json").is_file() and read_json(target / "lm.json").get("embedding_sha256") == lm.embedding_sha256:
        return
    with atomic.atomic_dir(target) as tmp:
        link_or_copy(Path(lm.cache_dir) / "embeddings.safetensors", tmp / "embeddings.safetensors")
        shutil.copytree(Path(lm.cache_dir) / "tokenizer", tmp / "tokenizer")
        (tmp / "lm.json").write_text(json.dumps({"spec": lm.spec, "identity": lm.identity,
                                                 "embedding_sha256": lm.embedding_sha256,
                                                 "vocab_size": lm.vocab_size, "d_model": lm.d_model}, indent=2) + "\n")


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """The run's ``metrics.jsonl`` rows (see :mod:`tokalign.align.training.metrics`)."""
    from tokalign.align.training.metrics import read_metrics as read_rows

    return read_rows(Path(run) / METRICS)
