"""Fixtures of the generator-probe tests (the builders live in tests/helpers/probe_models.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from threads import one_thread

from probe_models import make_corpus, make_generator, text_words, train_lm


_one_thread = one_thread  # tiny models on one torch thread (tests/helpers/threads.py)


@pytest.fixture(scope="session")
def probe_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("probe-cache")


@pytest.fixture(autouse=True)
def _cache_in_tmp(monkeypatch, probe_cache):
    """The base-LM figure cache and the frozen-LM cache live in a temporary folder, never in ~/.cache."""
    monkeypatch.setenv("TOKALIGN_CACHE", str(probe_cache))


@pytest.fixture(scope="session")
def trained_lm(tmp_path_factory) -> Path:
    """A tiny word-level LM fitted to ``probe_models.TEXT`` (a few seconds)."""
    from tiny_lm import make_tiny_lm

    folder = make_tiny_lm(tmp_path_factory.mktemp("probe-lm") / "lm", text_words(), d_model=32, seed=0)
    train_lm(folder)
    return folder


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("probe-corpus") / "corpus")


@pytest.fixture(scope="session")
def good_generator(tmp_path_factory, trained_lm, corpus) -> Path:
    """The trained LM expanded by the trainer's ``aligned`` init (0 steps): its image rows are its init's."""
    return make_generator(tmp_path_factory.mktemp("probe-gen") / "model", trained_lm, corpus)


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory) -> Path:
    """A tiny randomly initialized open_clip model in the hub layout (config + safetensors)."""
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    folder.mkdir()
    torch.manual_seed(0)
    model = CLIP(**cfg)
    save_file({k: v.contiguous().clone() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}))
    return folder
