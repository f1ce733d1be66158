"""Held-out loss curves of a study's arms: read from each run's ``metrics.jsonl``, EMA-smoothed, drawn on one plot.

Tokens seen at step ``s`` are ``s x sequences per step x sequence length`` (every position, as the paper's
budgets count them). The smoothing is the paper's: an exponential moving average with weight ``ema`` on the
previous smoothed value, started at the first evaluation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from tokalign.align.formats import atomic

BUCKET_LABEL = {"": "total", "image": "image", "text": "text", "structure": "structure"}


@dataclass(frozen=True)
class Curve:
    """One arm's held-out evaluations: tokens seen and the loss of each bucket (NaN where a bucket had no target)."""

    arm: str
    tokens: tuple[int, ...]
    losses: dict[str, tuple[float, ...]]  #: bucket ("" = total) -> loss per evaluation

    def smoothed(self, bucket: str, ema: float) -> list[float]:
        return smooth(self.losses.get(bucket, ()), ema)

    def final(self, bucket: str, ema: float) -> float:
        values = self.smoothed(bucket, ema)
        return values[-1] if values else math.nan

    def first(self, bucket: str) -> float:
        values = self.losses.get(bucket, ())
        return values[0] if values else math.nan

    def tail(self, bucket: str, count: int) -> list[float]:
        """The last ``count`` raw evaluations of ``bucket`` (finite ones)."""
        return [v for v in self.losses.get(bucket, ())[-count:] if math.isfinite(v)]


def smooth(values, ema: float) -> list[float]:
    out: list[float] = []
    for value in values:
        if not math.isfinite(value):
            out.append(out[-1] if out else math.nan)
            continue
        out.append(value if not out or not math.isfinite(out[-1]) else ema * out[-1] + (1 - ema) * value)
    return out


def read_curve(arm: str, run_dir: Path, tokens_per_step: int, buckets: tuple[str, ...]) -> Curve:
    """The held-out rows of ``run_dir/metrics.jsonl`` (the last row of each step, in step order)."""
    rows: dict[int, dict] = {}
    from tokalign.generate.train.run_folder import METRICS

    path = Path(run_dir) / METRICS
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("split") == "heldout":
                rows[int(row["step"])] = row
    steps = sorted(rows)
    losses = {b: tuple(_float(rows[s].get(f"{b}_loss" if b else "loss")) for s in steps) for b in buckets}
    return Curve(arm, tuple(s * tokens_per_step for s in steps), losses)


def _float(value) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def plot_curves(path: Path, curves: list[Curve], buckets: tuple[str, ...], ema: float, title: str) -> Path:
    """``curves.png``: one panel per bucket, every arm's smoothed held-out loss against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(buckets), figsize=(5.2 * len(buckets), 4.0), squeeze=False)
    for ax, bucket in zip(axes[0], buckets):
        for curve in curves:
            values = curve.smoothed(bucket, ema)
            if any(math.isfinite(v) for v in values):
                ax.plot(curve.tokens, values, marker="o", markersize=3, label=curve.arm)
        ax.set_title(f"held-out {BUCKET_LABEL.get(bucket, bucket)} loss")
        ax.set_xlabel("tokens seen")
        ax.set_ylabel(f"loss (nats, EMA {ema:g})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
