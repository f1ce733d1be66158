"""Helpers of the reliability tests (tests/reliability): CLI arguments and a file-tree snapshot."""

from __future__ import annotations

import hashlib
from pathlib import Path

FIT_FAST = ("--steps", "4", "--batch-size", "16", "--holdout", "16", "--warmup-steps", "1", "--lr", "0.01",
            "--checkpoint-every", "2", "--log-every", "1")


def lm_args(tiny_lm, lm_cache) -> list[str]:
    return ["--lm", str(tiny_lm), "--cache-dir", str(lm_cache), "--no-progress"]


def tree(*roots: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``roots``: (size, sha256); folders as (-1, "")."""
    out = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file():
                out[str(path)] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                out[str(path)] = (-1, "")
    return out
