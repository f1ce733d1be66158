"""The fit and the generator validate seeds and AdamW settings the same way: one check, one limit, one message."""

from __future__ import annotations

import pytest

from tokalign.align.errors import TokalignError
from tokalign.align.fit.config import FitConfig
from tokalign.align.training.seeds import FIT_ORDER_TAG, GENERATOR_TAG, SEED_LIMIT
from tokalign.generate.config import OptimConfig, RunConfig

BAD_ADAMW = [{"lr": 0.0}, {"lr": float("inf")}, {"min_lr_ratio": 1.5}, {"weight_decay": -0.1},
             {"weight_decay": float("nan")}, {"betas": (1.0, 0.9)}, {"betas": (0.9,)}, {"eps": 0.0},
             {"warmup_steps": -1}]


def _message(build) -> str:
    with pytest.raises(TokalignError) as caught:
        build()
    return str(caught.value)


@pytest.mark.parametrize("bad", BAD_ADAMW, ids=[next(iter(b)) + "=" + str(next(iter(b.values()))) for b in BAD_ADAMW])
def test_a_bad_adamw_setting_is_refused_alike_by_the_fit_and_the_generator(bad):
    fit = _message(lambda: FitConfig(corpus="c", run_dir="r", **bad))
    generator = _message(lambda: OptimConfig(**bad))
    assert fit == generator and "\n" not in fit


def test_both_stages_take_every_unsigned_64_bit_seed_and_nothing_else():
    for seed in (0, SEED_LIMIT - 1):
        assert FitConfig(corpus="c", run_dir="r", seed=seed).seed == RunConfig(run_dir="r", seed=seed).seed == seed
    for seed in (-1, SEED_LIMIT, True, 1.0):
        fit = _message(lambda: FitConfig(corpus="c", run_dir="r", seed=seed))
        generator = _message(lambda: RunConfig(run_dir="r", seed=seed))
        assert fit == generator and "64-bit" in fit


def test_the_streams_of_one_seed_carry_distinct_tags():
    assert FIT_ORDER_TAG != GENERATOR_TAG
