"""Guards that keep a fit honest: it stops when it diverges, and resumes only what it can continue.

* :func:`check_finite_loss` runs before every optimizer step: a NaN or infinite loss stops the fit with one
  line naming the step, the learning rate and the fix (a lower ``--lr``), instead of training on into an
  all-NaN table.  :class:`LossWatch` makes that check on a GPU without waiting on the device each step.
* :func:`clamp_logit_scale_` keeps the learnable logit scale in open_clip's range ``[0, ln 100]`` on both
  sides (temperature between 0.01 and 1); from above only, a large learning rate drives it down without bound.
* :func:`~tokalign.align.formats.corpus.corpus_fingerprint` (owned by the corpus format) identifies a corpus
  beyond its size and tokenizers.  The run records it in ``config.json``; :func:`check_corpus_fingerprint`
  refuses ``--resume`` on another corpus (a run without one, from an older tokalign, is not checked).
* :func:`carry_final_figures`: a run killed after its last checkpoint but before ``summary.json`` resumes with
  no step left to train; its final loss and throughput are then carried from the last ``metrics.jsonl`` row,
  so the summary never reports NaN.
* :func:`check_seed` (owned by :mod:`tokalign.align.training.seeds`): seeds are unsigned 64-bit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


from tokalign.align.errors import TokalignError
from tokalign.align.formats.corpus import corpus_fingerprint  # noqa: F401  (the format owns it)
from tokalign.align.formats import run_folder as rd
from tokalign.align.formats.faults import crash_point
from tokalign.align.training.seeds import SEED_LIMIT, check_seed  # noqa: F401  (the seeds module owns them)

MIN_LOGIT_SCALE = 0.0


def check_finite_loss(loss: Any, step: int, lr: float, peak_lr: float) -> None:
    """Refuse to take optimizer step ``step`` (1-based) on a non-finite loss (a torch scalar)."""
    crash_point(f"fit:step:{step}")
    _refuse_non_finite(float(loss.detach()) if hasattr(loss, "detach") else float(loss), step, lr, peak_lr)


class LossWatch:
    """:func:`check_finite_loss` for every step, at once (``every_step``: on a CPU reading a loss costs nothing)
    or at the next :meth:`flush` (on a GPU the losses stay on the device until the loop reads them anyway:
    before it logs, evaluates, checkpoints or ends), still naming the first step whose loss was not finite.
    A deferred failure has let the optimizer step on; the fit stops before anything is written from it."""

    def __init__(self, every_step: bool, peak_lr: float) -> None:
        self.every_step, self.peak_lr, self.pending = every_step, peak_lr, []

    def record(self, loss: Any, step: int, lr: float) -> None:
        if self.every_step:
            check_finite_loss(loss, step, lr, self.peak_lr)
            return
        crash_point(f"fit:step:{step}")
        self.pending.append((step, lr, loss.detach()))

    def flush(self) -> None:
        """Read every pending loss at once (one wait for the device) and refuse the first non-finite one."""
        if not self.pending:
            return
        import torch

        pending, self.pending = self.pending, []
        values = torch.stack([loss.float() for _, _, loss in pending]).cpu().tolist()
        for (step, lr, _), value in zip(pending, values):
            _refuse_non_finite(value, step, lr, self.peak_lr)


def _refuse_non_finite(value: float, step: int, lr: float, peak_lr: float) -> None:
    if not math.isfinite(value):
        raise TokalignError(f"the loss is {value} at step {step} (learning rate {lr:.3g}): the fit diverged; start a "
                            f"new --run with a lower --lr (e.g. {peak_lr / 10:.3g}) or more --warmup-steps")


def clamp_logit_scale_(logit_scale: Any, maximum: float, minimum: float = MIN_LOGIT_SCALE) -> None:
    """Clamp the logit-scale parameter in place to ``[minimum, maximum]`` (open_clip: ``[0, ln 100]``)."""
    import torch

    with torch.no_grad():
        logit_scale.clamp_(min=minimum, max=maximum)


# ------------------------------------------------------------------ the corpus fingerprint
def check_corpus_fingerprint(saved: dict, corpus, fix: str) -> None:
    """Refuse to resume on a corpus whose fingerprint differs from the one ``config.json`` recorded."""
    recorded = (saved.get("corpus") or {}).get("fingerprint")
    if not isinstance(recorded, dict):
        return  # a run from before fingerprints: nothing to compare
    current = corpus_fingerprint(corpus)
    changed = [name for name in ("shards", "text", "tokens") if recorded.get(name) != current[name]]
    if changed:
        raise TokalignError(f"corpus {corpus.root} is not the corpus the run was fit on (its {' and '.join(changed)} "
                            f"differ, though its size and tokenizers match); {fix}")


# ------------------------------------------------------------------ the final figures
def carry_final_figures(run_dir: Path, step: int, loss: float, pairs_per_s: float) -> tuple[float, float]:
    """(final loss, pairs/s): these, or when this invocation trained no step, the last logged row's."""
    crash_point("fit:final")
    if math.isfinite(loss) and pairs_per_s > 0:
        return loss, pairs_per_s
    from tokalign.align.training.metrics import read_metrics

    rows = [r for r in read_metrics(Path(run_dir) / rd.METRICS)
            if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] <= step]
    for row in reversed(rows):
        value = row.get("loss")
        if isinstance(value, (int, float)) and math.isfinite(value):
            carried = row.get("pairs_per_s")
            rate = pairs_per_s if pairs_per_s > 0 else (float(carried) if isinstance(carried, (int, float)) else 0.0)
            return (loss if math.isfinite(loss) else float(value)), rate
    return loss, pairs_per_s
