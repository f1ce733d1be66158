"""Shared set-up of the reliability tests: two same-sized synthetic corpora and one finished fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability_helpers import FIT_FAST, lm_args


@pytest.fixture(scope="session")
def corpora(tmp_path_factory, lm) -> tuple[Path, Path]:
    """Two synthetic corpora of the same size and tokenizers but other items (seeds 0 and 1)."""
    from synthetic_corpus import write_synthetic_corpus

    root = tmp_path_factory.mktemp("corpora")
    return write_synthetic_corpus(root / "a", lm, seed=0), write_synthetic_corpus(root / "b", lm, seed=1)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, corpora, tiny_lm, lm_cache) -> Path:
    """A finished 4-step fit on corpus a (checkpoints at steps 2 and 4)."""
    from cli_run import run_main

    run = tmp_path_factory.mktemp("runs") / "run"

    class _Capsys:  # run_main needs only readouterr; the session fixture has no capsys
        def readouterr(self):
            return "", ""

    code, _, err = run_main(_Capsys(), "fit", "--corpus", corpora[0], "--run", run, *lm_args(tiny_lm, lm_cache), *FIT_FAST)
    assert code == 0, err
    return run
