"""Checkpoints of a sharded (FSDP) run: Accelerate's ``save_state`` inside the same atomic ``step_N`` folders.

Under FSDP neither the model's nor the optimizer's state is whole on one process, so every process writes its
part with ``accelerator.save_state`` into a temporary folder, and the main process adds ``trainer.json`` (the same
record as :func:`tokalign.align.training.checkpoint.save_checkpoint`) and moves the folder into place. A folder
without ``trainer.json`` is incomplete and ignored by :func:`~tokalign.align.training.checkpoint.list_checkpoints`.
Written for multi-GPU FSDP; this workplace's CPU machines cannot run FSDP, so it is exercised only there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tokalign.align.formats import atomic
from tokalign.align.training.checkpoint import TRAINER, list_checkpoints


def save_sharded(accelerator, folder: Path, step: int, info: dict[str, Any], keep: int) -> Path:
    """Collective: every process calls it. Returns the ``step_N`` folder."""
    # one temp name every process agrees on, in atomic.py's temp pattern so a killed run's leftover is cleaned
    target, tmp = folder / f"step_{step}", folder / f".step_{step}.fsdpsave.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / TRAINER).write_text(json.dumps(dict(info, step=step), indent=2) + "\n")
        atomic.commit_dir(tmp, target)
        for old in list_checkpoints(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def load_sharded(accelerator, path: Path) -> dict[str, Any]:
    """Collective: restore model, optimizer and RNG from ``path``; return its ``trainer.json``."""
    accelerator.load_state(str(path))
    return json.loads((path / TRAINER).read_text(encoding="utf-8"))
