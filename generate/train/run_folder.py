"""The generator run folder: what ``tokalign generator train --run`` writes, its rules and its lock.

::

    run.json          the kind marker: the config, its trajectory, the LM/corpus/export identities, the layout
    .tokalign.json    the shared output marker (kind "generator-run"); .tokalign.lock: the writer's lock
    diagnostics.json  step-0 diagnostics, written before the first step
    metrics.jsonl     one JSON object per logged step (training buckets, held-out rows, throughput)
    checkpoints/      step_N/ folders, written atomically
    model/            the final model folder (see :mod:`tokalign.generate.model_folder`)
    summary.json      the step-0 and final figures
    sequences/        the corpus packed into memory-mapped training rows (built once)

Rules (issue 10), through the shared output rule (:mod:`tokalign.align.formats.outputs`, kind
:data:`KIND`) and lock (:func:`tokalign.align.formats.lock.writing_folder`): a run folder is written only if it
is new, empty, or a generator run; anything else (user files, a fit run, a folder inside the corpus) is refused in
one line, and so is a second writer (an exclusive ``fcntl`` lock the kernel drops when its holder dies). A
generator run with checkpoints or a model is continued only with ``--resume``; one that stopped before its first
checkpoint holds nothing worth keeping and starts again. A refused run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from tokalign.align.errors import TokalignError
from tokalign.align.formats import atomic, outputs
from tokalign.align.formats.lock import writing_folder
from tokalign.align.training.checkpoint import list_checkpoints

RECORD = "run.json"
DIAGNOSTICS = "diagnostics.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
MODEL = "model"
SUMMARY = "summary.json"
SEQUENCES = "sequences"
FORMAT = "tokalign-generator-run"
KIND = "generator-run"


def read_record(run: Path) -> dict[str, Any] | None:
    """The run's ``run.json`` if it is a generator run, else None."""
    try:
        body = json.loads((run / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) and body.get("format") == FORMAT else None


def claim(run: Path, inputs: Iterable[Path]) -> outputs.Claim:
    """May a generator run write ``run``? (read-only; one-line refusal)."""
    return outputs.claim_output_dir(Path(run), KIND, inputs=[p for p in inputs if p is not None], option="--run")


@contextlib.contextmanager
def writing_run(run: Path, inputs: Iterable[Path], main: bool) -> Iterator[Path]:
    """Claim, create, lock and mark ``run`` for the block (the main process; the others only claim)."""
    with writing_folder(Path(run), KIND, what="generator train", inputs=[p for p in inputs if p is not None],
                        option="--run", subfolders=(CHECKPOINTS,), lock=main):
        yield Path(run)


def resume_point(run: Path, resume: bool) -> Path | None:
    """The checkpoint ``--resume`` continues from, or None for a fresh start; refuses what cannot be done."""
    run = Path(run)
    mine = read_record(run) is not None
    checkpoints = list_checkpoints(run / CHECKPOINTS)
    if not resume:
        if mine and (checkpoints or (run / MODEL).exists()):
            raise TokalignError(f"--run {run} already holds a generator run; pass --resume to continue it or choose "
                                "another --run")
        return None
    if not mine or not checkpoints:
        raise TokalignError(f"nothing to resume in {run}: it holds no generator checkpoint; drop --resume to start a "
                            "new run")
    return checkpoints[-1]


def check_resume_record(run: Path, trajectory: dict[str, Any], identities: dict[str, Any]) -> None:
    """A resumed run must have the settings and the inputs (by identity) it started with."""
    saved = read_record(run) or {}
    changed = [k for k in trajectory if saved.get("trajectory", {}).get(k) != trajectory[k]]
    changed += [k for k in identities if saved.get("identities", {}).get(k) != identities[k]]
    if changed:
        raise TokalignError(f"--resume with settings or inputs that differ from the run's ({', '.join(changed)}); "
                            "resume with the original options, --lm, --corpus and --init-from, or start a new --run")


def write_record(run: Path, body: dict[str, Any]) -> None:
    atomic.write_json(run / RECORD, {"format": FORMAT, "version": 1, **body})
