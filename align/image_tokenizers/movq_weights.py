"""MoVQ weights on disk: finding and loading them, checking their configuration, and hashing them.

A weights folder holds ``config.json`` and ``diffusion_pytorch_model.safetensors``
(diffusers' ``VQModel`` layout), directly or in a ``movq/`` subfolder as a
snapshot of kandinsky-community/kandinsky-2-2-decoder does; anything else that
looks like a hub id is loaded with ``subfolder="movq"`` where a network (or a
populated Hugging Face cache) exists.  Only safetensors are read.  Every
failure becomes a one-line :class:`TokalignError` that says how to get the
weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import torch

from tokalign.align.errors import TokalignError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
SUBFOLDER = "movq"
IMAGE_SIZE = 256
MAX_CODES = 65536  # ids are stored as uint16
# The config keys that decide the computation; ``act_fn`` and ``norm_num_groups`` change no weight shape,
# so the sha256 alone cannot tell them apart and the identity records them.
ARCH_KEYS = ("in_channels", "out_channels", "latent_channels", "down_block_types", "up_block_types",
             "num_vq_embeddings", "block_out_channels", "vq_embed_dim", "layers_per_block", "norm_type",
             "norm_num_groups", "act_fn", "mid_block_add_attention")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FETCH_HINT = ("download them on a machine with network access (see README, 'Getting the MoVQ weights') "
               "and pass the local folder")



def arch_config(config) -> dict:
    """The architecture keys of a ``VQModel`` config as plain JSON values (tuples become lists)."""
    return {k: list(config[k]) if isinstance(config[k], (list, tuple)) else config[k] for k in ARCH_KEYS if k in config}


def check_config(config: dict, where: str) -> None:
    """Raise unless ``config`` (a VQModel config) has a codebook that fits uint16 and tiles 256 x 256 images."""
    codes = config.get("num_vq_embeddings")
    if not isinstance(codes, int) or not 1 <= codes <= MAX_CODES:
        raise TokalignError(f"{where} has a codebook of {codes} codes; token ids are stored as uint16, so use "
                            f"weights with at most {MAX_CODES}")
    blocks = config.get("block_out_channels") or ()
    if not blocks or IMAGE_SIZE % 2 ** (len(blocks) - 1):
        raise TokalignError(f"{where} has {len(blocks)} encoder blocks, which do not tile {IMAGE_SIZE} x {IMAGE_SIZE} "
                            "images; use MoVQ weights (Kandinsky 2.2 configuration)")


def state_sha256(model) -> str:
    """sha256 over the sorted state dict: key, dtype-and-shape text, float32 little-endian bytes."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(state):
        array = state[key].detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False)
        digest.update(key.encode() + b"\0" + f"float32 {tuple(array.shape)}".encode() + b"\0")
        digest.update(array.tobytes())
    return digest.hexdigest()


def load_model(path: str):
    """(float32 CPU VQModel, where it came from) for a local folder or a hub id; failures become TokalignError."""
    from diffusers import VQModel

    folder = _weights_folder(path)
    if folder is not None:
        source, kwargs, where = str(folder), {"local_files_only": True}, str(folder.resolve())
    else:
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")
        source, kwargs, where = path, {"subfolder": SUBFOLDER, "local_files_only": offline}, path
    try:
        config = VQModel.load_config(source, **kwargs)
    except Exception as exc:  # hub and file errors come in many types
        raise TokalignError(f"could not load MoVQ weights from {path} ({_reason(exc)}); {_FETCH_HINT}") from None
    if config.get("_class_name", "VQModel") != "VQModel":
        raise TokalignError(f"{path} holds a {config['_class_name']}, not a VQModel; pass the MoVQ weights "
                            "(the movq/ folder of kandinsky-2-2-decoder)")
    check_config(config, path)
    try:
        model = VQModel.from_pretrained(source, use_safetensors=True, torch_dtype=torch.float32, **kwargs)
    except Exception as exc:
        raise TokalignError(f"could not load MoVQ weights from {path} ({_reason(exc)}); {_FETCH_HINT}") from None
    log.info("MoVQ weights loaded from %s", where)
    return model, where


def _weights_folder(path: str) -> Path | None:
    """The local folder holding the weight files, or None when ``path`` is a hub id (raises for a bad folder)."""
    p = Path(path).expanduser()
    if not p.exists():
        if _HUB_ID.match(path):
            return None
        raise TokalignError(f"MoVQ weights folder {path} does not exist; pass the folder holding {CONFIG_FILE} and "
                            f"{WEIGHTS_FILE} (or its parent with a {SUBFOLDER}/ subfolder)")
    if not p.is_dir():
        raise TokalignError(f"MoVQ weights path {path} is a file; pass the folder holding {CONFIG_FILE} and {WEIGHTS_FILE}")
    if not (p / CONFIG_FILE).exists() and (p / SUBFOLDER).is_dir():
        p = p / SUBFOLDER
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (p / name).is_file()]
    if missing:
        raise TokalignError(f"MoVQ weights folder {p} lacks {' and '.join(missing)}; pass a folder holding "
                            f"{CONFIG_FILE} and {WEIGHTS_FILE} (or its parent with a {SUBFOLDER}/ subfolder)")
    return p


def _reason(exc: Exception) -> str:
    """A short one-line reason for a loading failure."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
