"""Shared test set-up: no network, few threads, tiny sizes."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> str:
    """A tiny word-level causal LM folder covering every shapes caption word."""
    from tiny_lm import make_tiny_lm

    from tokalign.align.sources.shapes import CAPTION_WORDS

    return str(make_tiny_lm(tmp_path_factory.mktemp("tiny-lm"), CAPTION_WORDS, d_model=32, seed=0))


@pytest.fixture(scope="session")
def lm_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lm-cache")


@pytest.fixture(scope="session")
def shapes_corpus(tmp_path_factory, tiny_lm, lm_cache) -> Path:
    """A small shapes corpus: 1,536 scenes, a 256-code k-means tokenizer, tiny-LM captions."""
    from tokalign.align.tokenize.demo_corpus import DemoCorpusConfig, build_demo_corpus

    out = tmp_path_factory.mktemp("shapes") / "corpus"
    return build_demo_corpus(DemoCorpusConfig(out=out, items=1536, codebook_size=256, codebook_images=96,
                                              lm=tiny_lm, cache_root=lm_cache, progress=False))


@pytest.fixture
def synthetic_corpus(tmp_path, tiny_lm, lm_cache):
    """Factory: ``synthetic_corpus(name, **kwargs)`` builds a small random-token corpus."""
    from tokalign.align.lm.load import load_frozen_lm

    from synthetic_corpus import write_synthetic_corpus

    lm = load_frozen_lm(tiny_lm, lm_cache)
    return lambda name="corpus", **kw: write_synthetic_corpus(tmp_path / name, lm, **kw)


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI calls ``logging.basicConfig(force=True)`` on a captured stderr; undo that after each test."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def lm(tiny_lm, lm_cache):
    """The tiny LM, loaded (frozen embeddings and tokenizer)."""
    from tokalign.align.lm.load import load_frozen_lm

    return load_frozen_lm(tiny_lm, lm_cache)
