"""Held-out curves of a fit (torch-free): the ``heldout_*`` rows of ``metrics.jsonl``, the best held-out step,
and the rule that tells a plateau from overfitting.

A held-out row is ``{"step", "heldout_loss", "heldout_i2t_R@1", "heldout_i2t_R@5", "heldout_i2t_R@10",
"heldout_t2i_R@1", ..., "heldout_pairs"}``; training rows carry ``loss`` instead, so readers tell them apart
by their keys.

The verdict (:func:`heldout_verdict`), with ``TOLERANCE`` = 2% relative change:

* **overfitted**: by the last evaluation the held-out loss has risen more than ``TOLERANCE`` above its
  minimum, while the training loss fell from the best held-out step to the end;
* **improving**: otherwise, when the held-out loss still fell by more than ``TOLERANCE`` between the middle
  evaluation and the last one;
* **plateaued**: otherwise (held-out loss flat within ``TOLERANCE`` over the second half of the run, or
  rising together with the training loss);
* **unknown**: fewer than ``MIN_EVALUATIONS`` evaluations.

The training loss at an evaluation step is the mean of the training rows logged since the previous
evaluation (a single logged loss is too noisy to compare).
"""

from __future__ import annotations

import math
from typing import Sequence

TOLERANCE = 0.02
MIN_EVALUATIONS = 3
PREFIX = "heldout_"


def heldout_row(step: int, result: dict) -> dict:
    """The ``metrics.jsonl`` row of one held-out evaluation (``result``: :func:`evaluate_holdout`'s dict)."""
    row = {"step": step, f"{PREFIX}loss": result.get("loss")}
    for direction in ("i2t", "t2i"):
        row.update({f"{PREFIX}{direction}_{k}": v for k, v in result[direction].items()})
    row[f"{PREFIX}pairs"] = result["pairs"]
    return row


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def heldout_rows(rows: Sequence[dict]) -> list[dict]:
    """The held-out rows with a finite loss, by step."""
    return sorted((r for r in rows if _finite(r.get(f"{PREFIX}loss")) and isinstance(r.get("step"), int)),
                  key=lambda r: r["step"])


def training_rows(rows: Sequence[dict]) -> list[dict]:
    return sorted((r for r in rows if _finite(r.get("loss")) and isinstance(r.get("step"), int)), key=lambda r: r["step"])


def best_heldout(rows: Sequence[dict]) -> dict | None:
    """``{"step", "heldout_loss", "heldout_i2t_R@1", "heldout_t2i_R@1"}`` of the lowest held-out loss (earliest on ties)."""
    evals = heldout_rows(rows)
    if not evals:
        return None
    best = min(evals, key=lambda r: r[f"{PREFIX}loss"])
    keys = ("step", f"{PREFIX}loss", f"{PREFIX}i2t_R@1", f"{PREFIX}t2i_R@1")
    return {k: best.get(k) for k in keys}


def _training_loss_at(train: list[dict], step: int, since: int) -> float | None:
    window = [r["loss"] for r in train if since < r["step"] <= step]
    if not window:
        window = [r["loss"] for r in train if r["step"] <= step][-1:]
    return sum(window) / len(window) if window else None


def heldout_verdict(rows: Sequence[dict]) -> dict:
    """``{"verdict", "sentence", "best_step"}`` by the rule of the module docstring."""
    evals, train = heldout_rows(rows), training_rows(rows)
    if len(evals) < MIN_EVALUATIONS:
        return {"verdict": "unknown", "best_step": None,
                "sentence": f"Too few held-out evaluations ({len(evals)}) to tell a plateau from overfitting; "
                            "fit with a smaller --eval-every."}
    key = f"{PREFIX}loss"
    steps = [r["step"] for r in evals]
    best_i = min(range(len(evals)), key=lambda i: evals[i][key])
    best, last, mid = evals[best_i], evals[-1], evals[len(evals) // 2]
    train_best = _training_loss_at(train, best["step"], steps[best_i - 1] if best_i else 0)
    train_last = _training_loss_at(train, last["step"], steps[-2])
    rise = last[key] - best[key]
    if rise > TOLERANCE * abs(best[key]) and train_best is not None and train_last is not None and train_last < train_best:
        verdict = "overfitted"
        sentence = (f"The run overfitted: held-out loss was lowest at step {best['step']} ({best[key]:.3f}) and rose to "
                    f"{last[key]:.3f} by step {last['step']} while the training loss kept falling ({train_best:.3f} -> "
                    f"{train_last:.3f}); the table memorizes its training pairs: stop near step {best['step']} or fit on more data.")
    elif mid[key] - last[key] > TOLERANCE * abs(mid[key]):
        verdict = "improving"
        sentence = (f"The run was still improving: held-out loss fell from {mid[key]:.3f} (step {mid['step']}) to "
                    f"{last[key]:.3f} (step {last['step']}); more steps may help.")
    elif rise > TOLERANCE * abs(best[key]):
        verdict = "plateaued"
        sentence = (f"The run plateaued: held-out loss rose from its lowest {best[key]:.3f} (step {best['step']}) to "
                    f"{last[key]:.3f}, but the training loss did not fall meanwhile; a lower --lr may steady it.")
    else:
        verdict = "plateaued"
        against = f", against a training loss of {train_last:.3f}" if train_last is not None else ""
        sentence = (f"The run plateaued: held-out loss changed by less than {TOLERANCE:.0%} over the second half of the "
                    f"run (lowest {best[key]:.3f} at step {best['step']}{against}); more steps alone are unlikely to help.")
    return {"verdict": verdict, "sentence": sentence, "best_step": best["step"]}
