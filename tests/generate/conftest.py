"""Fixtures shared by the generator's test folders: a tiny tied LLaMA and a small synthetic corpus (built once)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def gen_lm(tmp_path_factory) -> str:
    from tiny_llama import make_tiny_llama

    return str(make_tiny_llama(tmp_path_factory.mktemp("gen-train-lm"), tied=True, seed=0))


@pytest.fixture(scope="session")
def gen_corpus(tmp_path_factory, lm) -> Path:
    """96 pairs, 64 codes, 4x4 images, captions tokenized by the tiny LM's tokenizer (the tiny LLaMA's too)."""
    from synthetic_corpus import write_synthetic_corpus

    return write_synthetic_corpus(tmp_path_factory.mktemp("gen-train-corpus") / "corpus", lm, items=96, codebook=64,
                                  length=16)
