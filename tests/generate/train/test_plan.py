"""The generator's data order: each epoch visits every training item once, the same for the same seed."""

from __future__ import annotations

import numpy as np

from tokalign.generate.train.data import StepPlan


def _plan(train: np.ndarray, world: int = 1, rank: int = 0, seed: int = 3) -> StepPlan:
    return StepPlan(train, global_sequences=6, micro_batch=2, world=world, rank=rank, seed=seed)


def test_an_epoch_of_global_batches_visits_each_training_item_once():
    train = np.sort(np.random.default_rng(0).choice(1000, size=61, replace=False))  # uneven: 10 batches, 1 left over
    plan = _plan(train)
    seen = np.concatenate([plan.global_batch(s) for s in range(plan.steps_per_epoch)])
    assert len(seen) == 60 and len(set(seen.tolist())) == 60 and set(seen.tolist()) <= set(train.tolist())
    second = np.concatenate([plan.global_batch(s) for s in range(plan.steps_per_epoch, 2 * plan.steps_per_epoch)])
    assert not np.array_equal(seen, second)  # a new order each epoch
    assert np.array_equal(plan.global_batch(7), _plan(train).global_batch(7))  # a pure function of (seed, step)
    assert not np.array_equal(plan.global_batch(7), _plan(train, seed=4).global_batch(7))


def test_processes_split_the_same_global_batch():
    train = np.arange(40)
    whole = _plan(train).global_batch(5)
    shares = [np.concatenate(_plan(train, world=3, rank=r).local_micro_batches(5)) for r in range(3)]
    assert np.array_equal(np.concatenate(shares), whole)
