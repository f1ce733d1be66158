"""Row retention: 1.0 for a generator compared with its own init, near chance for random rows."""

from __future__ import annotations

import numpy as np
import pytest

from tokalign.generate.probe.row_retention import chance_overlap, probe_rows, row_retention


def test_chance_formula_matches_a_simulation():
    vocab, k = 200, 10
    chance = chance_overlap(k, vocab)
    assert chance["shared_tokens"] == pytest.approx(k * k / vocab) and chance["overlap"] == pytest.approx(k / vocab)
    rng = np.random.default_rng(0)
    draws = [len(set(rng.choice(vocab, k, replace=False)) & set(rng.choice(vocab, k, replace=False))) for _ in range(4000)]
    assert np.mean(draws) == pytest.approx(k * k / vocab, abs=0.05)
    assert np.mean(np.array(draws) > 0) == pytest.approx(chance["kept_any_neighbour"], abs=0.03)


def test_rows_compared_with_themselves_keep_everything():
    rng = np.random.default_rng(0)
    text, rows = rng.normal(size=(500, 16)).astype(np.float32), rng.normal(size=(64, 16)).astype(np.float32)
    got = row_retention(rows, text, rows.copy(), text.copy(), 10)
    assert got["cosine"]["min"] == pytest.approx(1.0, abs=1e-5) and got["overlap"]["min"] == 1.0
    assert got["kept_any_neighbour"] == 1.0 and got["kept_top1"] == 1.0 and got["rows"] == 64


def test_independent_random_rows_overlap_at_chance():
    rng = np.random.default_rng(1)
    text = rng.normal(size=(400, 16)).astype(np.float32)
    a, b = rng.normal(size=(2, 3000, 16)).astype(np.float32)
    got = row_retention(a, text, b, text, 10)
    chance = got["chance"]
    assert abs(got["cosine"]["mean"]) < 0.02
    assert got["overlap"]["mean"] == pytest.approx(chance["overlap"], rel=0.25)
    assert got["kept_any_neighbour"] == pytest.approx(chance["kept_any_neighbour"], abs=0.06)


def test_probe_rows_subset_is_even_and_complete_by_default():
    assert probe_rows(10, 0).tolist() == list(range(10)) and probe_rows(10, 20).tolist() == list(range(10))
    assert probe_rows(101, 3).tolist() == [0, 50, 100]
