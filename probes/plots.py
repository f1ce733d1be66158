"""PNG plots of a fit: loss and temperature against step (the paper's Figure 7), similarity histograms."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from tokalign.align.formats.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(metrics: Sequence[dict], path: str | os.PathLike) -> Path:
    """Two stacked panels: contrastive loss and learned temperature against step."""
    plt = _pyplot()
    steps = [m["step"] for m in metrics]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True)
    top.plot(steps, [m["loss"] for m in metrics], color="tab:blue")
    top.set_ylabel("contrastive loss")
    top.set_title("image-text token contrastive alignment")
    bottom.plot(steps, [m["temperature"] for m in metrics], color="tab:orange")
    bottom.set_ylabel("learned temperature")
    bottom.set_xlabel("step")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_histogram(values: Sequence[float], path: str | os.PathLike, *, xlabel: str, title: str, bins: int = 50) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(list(values), bins=bins, color="tab:green")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("image tokens")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
