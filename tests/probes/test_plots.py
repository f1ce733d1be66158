"""The report's plots are real, non-empty PNG images."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from tokalign.probes.plots import plot_histogram, plot_training_curves


def _is_drawn_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("L"))
    return pixels.size > 10_000 and pixels.std() > 5  # something besides a blank canvas


def test_training_curves_plot_loss_and_temperature(tmp_path):
    metrics = [{"step": s, "loss": 7 - math.log(s), "temperature": 0.07 * 0.99 ** s} for s in range(1, 60)]
    path = plot_training_curves(metrics, tmp_path / "figure7.png")
    assert _is_drawn_png(path)
    assert [p.name for p in tmp_path.iterdir()] == ["figure7.png"]  # no temporary left


def test_training_curves_with_heldout_rows_add_the_heldout_loss_and_recall(tmp_path):
    metrics = [{"step": s, "loss": 7 - math.log(s), "temperature": 0.07} for s in range(1, 60)]
    heldout = [{"step": s, "heldout_loss": 6 - math.log(s) + s / 30, "heldout_i2t_R@1": s / 100,
                "heldout_t2i_R@1": s / 120} for s in (15, 30, 45, 59)]
    plain = plot_training_curves(metrics, tmp_path / "plain.png")
    path = plot_training_curves(metrics, tmp_path / "figure7.png", heldout=heldout)
    assert _is_drawn_png(path)
    with Image.open(plain) as a, Image.open(path) as b:
        assert b.size[1] > a.size[1]  # a third panel: held-out R@1


def test_histogram_plot(tmp_path):
    values = np.random.default_rng(0).normal(0.2, 0.05, size=500)
    assert _is_drawn_png(plot_histogram(values, tmp_path / "hist.png", xlabel="top-1 cosine", title="t"))
