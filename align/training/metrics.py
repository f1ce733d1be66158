"""The metrics log of a training run: ``metrics.jsonl``, one standard-JSON object per logged step.

Append-only while training; on resume, rows past the resumed step (and a last line cut off by an interruption)
are dropped, so the file reads as if the run had never stopped. Non-finite floats are written as ``null``:
the file stays standard JSON that any reader accepts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokalign.align.formats import atomic


finite_or_none = atomic.standard_json  # NaN/inf -> None, recursively: the file stays standard JSON


class MetricsLog:
    """Append-only JSON-lines log; ``resume_step`` keeps only rows with ``step <= resume_step``."""

    def __init__(self, path: Path, resume_step: int = 0) -> None:
        self.path = Path(path)
        kept = []
        if resume_step and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by the interruption
                if row.get("step", 0) <= resume_step:
                    kept.append(line + "\n")
        atomic.write_text(self.path, "".join(kept))

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(finite_or_none(row), allow_nan=False) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every complete row of a metrics file (a missing file reads as none; a cut-off last line is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):  # a line cut off by a kill may still parse as a number
                rows.append(row)
    return rows
