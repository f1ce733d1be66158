"""Recall@k counts a query's own partner among its k best matches, beside chance."""

from __future__ import annotations

import pytest
import torch

from tokalign.align.fit.retrieval import recall_at_k


def test_identical_features_retrieve_their_partner_at_rank_one():
    x = torch.nn.functional.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    r = recall_at_k(x, x, ks=(1, 5))
    assert r["i2t"] == {"R@1": 1.0, "R@5": 1.0} and r["t2i"] == {"R@1": 1.0, "R@5": 1.0}
    assert r["chance"] == {"R@1": pytest.approx(1 / 50), "R@5": pytest.approx(5 / 50)}


def test_shifted_partners_are_found_at_rank_two_not_one():
    x = torch.eye(4)
    text = 0.9 * x.roll(1, 0) + 0.1 * x  # each caption looks most like the next image
    r = recall_at_k(x, text, ks=(1, 2))
    assert r["i2t"]["R@1"] == 0.0 and r["i2t"]["R@2"] == 1.0


def test_ties_and_nan_scores_never_count_as_hits():
    flat = torch.ones(6, 3)  # every score ties: only the first index wins its tie
    assert recall_at_k(flat, flat, ks=(1,))["i2t"]["R@1"] == pytest.approx(1 / 6)
    nan = torch.full((6, 3), float("nan"))
    assert recall_at_k(nan, nan, ks=(1,))["i2t"]["R@1"] == 0.0
