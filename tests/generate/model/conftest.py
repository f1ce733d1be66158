"""Fixtures of the generator model tests: tiny LLaMA folders (tied and untied) and export writers."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_llama_tied(tmp_path_factory) -> str:
    from tiny_llama import make_tiny_llama

    return str(make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-tied"), tied=True, seed=0))


@pytest.fixture(scope="session")
def tiny_llama_untied(tmp_path_factory) -> str:
    from tiny_llama import make_tiny_llama

    return str(make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-untied"), tied=False, seed=1))


@pytest.fixture(params=["tied", "untied"])
def tiny_llama(request, tiny_llama_tied, tiny_llama_untied) -> str:
    return tiny_llama_tied if request.param == "tied" else tiny_llama_untied


IMAGE_TOKENIZER = {"kind": "synthetic", "codebook_size": 64, "grid": [4, 4], "sha256": "a" * 64}


@pytest.fixture
def image_tokenizer() -> dict:
    """The image tokenizer identity the exports of :func:`write_export` are made for."""
    return dict(IMAGE_TOKENIZER)


@pytest.fixture
def write_export(tmp_path):
    """``write_export(base, codebook=64, image_tokenizer=..., lm=..., sha=..., nan=False) -> (path, image, special)``."""
    from tokalign.align.formats.generator_init import SPECIAL_TOKENS, VocabLayout, write_generator_init

    def write(base, codebook=64, image_tokenizer=None, lm=None, sha=None, nan=False, name="init.safetensors"):
        generator = torch.Generator().manual_seed(7)
        image = torch.randn(codebook, base.d_model, generator=generator)
        special = torch.randn(len(SPECIAL_TOKENS), base.d_model, generator=generator)
        if nan:
            image[3, 5] = float("nan")
        meta = {"lm": lm or base.identity, "lm_spec": base.spec, "lm_embedding_sha256": sha or base.embedding_sha256,
                "d_model": base.d_model, "image_tokenizer": image_tokenizer or dict(IMAGE_TOKENIZER, codebook_size=codebook),
                "source_run": "test", "source_table_sha256": "", "source_steps": "0", "rescale": {}, "special_init": {}}
        path = tmp_path / name
        write_generator_init(path, image, special, VocabLayout(base.text_rows, codebook), meta)
        return path, image, special

    return write
