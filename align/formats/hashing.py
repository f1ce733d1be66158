"""The one tensor hasher: sha256 over float32, little-endian, C-contiguous bytes (numpy or torch in, torch-free).

:func:`tensor_sha256` hashes one matrix (the LM embedding identity every artifact records);
:func:`tensors_sha256` hashes a named set, each tensor prefixed by its name and shape (the checksums inside
generator-init files and tables). Both feed the same canonical bytes, so a matrix hashes the same everywhere.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

import numpy as np


def canonical_bytes(tensor: Any) -> np.ndarray:
    """``tensor`` (numpy array or torch tensor, any float dtype) as a C-contiguous float32 little-endian array."""
    if hasattr(tensor, "detach"):  # a torch tensor: to CPU float32 without importing torch here
        tensor = tensor.detach().cpu().float().numpy()
    return np.ascontiguousarray(tensor, dtype="<f4")


def tensor_sha256(tensor: Any) -> str:
    """sha256 of one tensor's canonical bytes (no name, no shape)."""
    return hashlib.sha256(canonical_bytes(tensor).data).hexdigest()


def tensors_sha256(tensors: Mapping[str, Any]) -> str:
    """sha256 over each tensor's name, shape and canonical bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = canonical_bytes(tensors[name])
        digest.update(f"{name}:{list(array.shape)};".encode("utf-8"))
        digest.update(array.data)
    return digest.hexdigest()
