"""Fixtures of the sampling tests: a tiny k-means corpus and tiny random generators on it (built once)."""

from __future__ import annotations

from pathlib import Path

import pytest
from threads import one_thread


_one_thread = one_thread  # tiny models on one torch thread (tests/helpers/threads.py)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    from tiny_generator import make_tiny_corpus

    return make_tiny_corpus(tmp_path_factory.mktemp("sample-corpus") / "corpus")


@pytest.fixture(scope="session")
def generator(tmp_path_factory, tiny_corpus) -> Path:
    """A text-to-image generator (caption dropout 0.1) whose samples decode to 256x256 images of 16 tokens."""
    from tiny_generator import make_tiny_generator

    return make_tiny_generator(tmp_path_factory.mktemp("gen") / "model", tiny_corpus)


@pytest.fixture(scope="session")
def loaded(generator):
    from tokalign.generate.sample.loading import load_generator

    return load_generator(generator, "cpu")
