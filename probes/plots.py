"""PNG plots of a fit: training and held-out loss, temperature and held-out R@1 against step (the paper's Figure 7), similarity histograms."""

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


def plot_training_curves(metrics: Sequence[dict], path: str | os.PathLike, heldout: Sequence[dict] = ()) -> Path:
    """Stacked panels against step: contrastive loss (training, and held-out when ``heldout`` rows are given),
    learned temperature, and held-out R@1 both ways (only with ``heldout`` rows: ``heldout_loss``,
    ``heldout_i2t_R@1``, ``heldout_t2i_R@1``)."""
    plt = _pyplot()
    panels = 3 if heldout else 2
    fig, axes = plt.subplots(panels, 1, figsize=(6, 2.75 * panels), sharex=True)
    top, middle = axes[0], axes[1]
    top.plot([m["step"] for m in metrics], [m["loss"] for m in metrics], color="tab:blue", label="training")
    if heldout:
        steps = [m["step"] for m in heldout]
        top.plot(steps, [m["heldout_loss"] for m in heldout], color="tab:red", marker="o", label="held-out")
        top.legend()
        bottom = axes[2]
        bottom.plot(steps, [m.get("heldout_i2t_R@1") for m in heldout], marker="o", color="tab:purple", label="image->text")
        bottom.plot(steps, [m.get("heldout_t2i_R@1") for m in heldout], marker="s", color="tab:green", label="text->image")
        bottom.set_ylabel("held-out R@1")
        bottom.legend()
    top.set_ylabel("contrastive loss")
    top.set_title("image-text token contrastive alignment")
    middle.plot([m["step"] for m in metrics], [m["temperature"] for m in metrics], color="tab:orange")
    middle.set_ylabel("learned temperature")
    axes[-1].set_xlabel("step")
    for ax in axes:
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
