"""The per-epoch data order and the compact held-out split: bijections, pure functions of (seed, step)."""

from __future__ import annotations

import numpy as np
import pytest

from tokalign.align.fit.data_order import EpochOrder, permute, round_keys
from tokalign.align.fit.split import holdout_indices, make_split


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 17, 64, 1000, 4097])
def test_permute_is_a_bijection_of_the_range(n):
    image = permute(np.arange(n), n, round_keys(7, n))
    assert sorted(image.tolist()) == list(range(n))


def test_permute_depends_on_its_key_and_refuses_positions_outside_the_range():
    a, b = permute(np.arange(500), 500, round_keys(1)), permute(np.arange(500), 500, round_keys(2))
    assert not np.array_equal(a, b)
    assert np.array_equal(a, permute(np.arange(500), 500, round_keys(1)))
    with pytest.raises(ValueError):
        permute(np.array([500]), 500, round_keys(1))


def test_split_holds_out_the_asked_count_and_ranks_the_rest_in_order():
    split = make_split(1000, 37, seed=3)
    assert len(split.holdout) == 37 and np.all(np.diff(split.holdout) > 0)
    train = split.train_item(np.arange(split.train_items))
    assert np.all(np.diff(train) > 0)  # ascending: rank r is the r-th training index
    assert not set(train.tolist()) & set(split.holdout.tolist())
    assert len(train) + len(split.holdout) == 1000
    assert np.array_equal(make_split(1000, 37, seed=3).holdout, split.holdout)
    assert not np.array_equal(make_split(1000, 37, seed=4).holdout, split.holdout)


def test_split_record_is_compact_and_recomputes_its_indices():
    split = make_split(10_000_000, 5000, seed=1)
    record = split.record()
    assert "holdout" not in record and len(str(record)) < 400
    assert np.array_equal(holdout_indices(record), split.holdout)
    assert holdout_indices({"holdout": [5, 2, 9]}).tolist() == [5, 2, 9]  # a run written before the record


def test_each_epoch_visits_distinct_training_items_in_a_fresh_order():
    split = make_split(230, 20, seed=0)
    order = EpochOrder(split.train_items, 16, seed=5, rank_to_item=split.train_item)
    assert order.steps_per_epoch == 13
    epochs = [np.concatenate([order.batch(e * 13 + p) for p in range(13)]) for e in range(3)]
    held = set(split.holdout.tolist())
    for items in epochs:
        assert len(set(items.tolist())) == 13 * 16  # no item twice within an epoch
        assert not set(items.tolist()) & held
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_the_order_is_a_pure_function_of_seed_and_step_so_a_resume_sees_the_same_batches():
    split = make_split(500, 50, seed=2)
    whole = EpochOrder(split.train_items, 32, seed=9, rank_to_item=split.train_item)
    batches = [whole.batch(s) for s in range(40)]
    resumed = EpochOrder(split.train_items, 32, seed=9, rank_to_item=split.train_item)  # a new process
    assert all(np.array_equal(resumed.batch(s), batches[s]) for s in range(17, 40))
    assert not np.array_equal(EpochOrder(split.train_items, 32, seed=8, rank_to_item=split.train_item).batch(0), batches[0])
