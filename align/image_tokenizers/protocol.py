"""The contract every image tokenizer keeps, stated as ``Protocol`` s instead of duck-typed ``getattr`` checks.

:class:`ImageTokenizer` is what ``tokalign tokenize``, ``decode`` and the probes rely on. :class:`TensorEncoder`
is the optional fast path of tokenizers that encode on a device (MoVQ): the pipeline hands them uint8 tensors
(pinned when the device is a GPU) instead of numpy arrays. :class:`SavableTokenizer` is a tokenizer small
enough for a corpus to keep (the k-means codebook).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ImageTokenizer(Protocol):
    kind: str  #: the registry name ("kmeans", "movq", "pretokenized")

    @property
    def codebook_size(self) -> int: ...

    @property
    def grid(self) -> tuple[int, int]: ...

    @property
    def tokens_per_image(self) -> int: ...

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, S, S, 3) -> uint16 token ids (N, tokens_per_image)."""

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids (N, tokens_per_image) -> uint8 images (N, S, S, 3)."""

    def identity(self) -> dict[str, Any]:
        """The JSON a corpus manifest records: kind, codebook size, grid, sha256 of the weights."""


@runtime_checkable
class TensorEncoder(ImageTokenizer, Protocol):
    device: Any  #: the torch device it encodes on

    def encode_tensor(self, images: Any) -> Any:
        """uint8 tensor (N, S, S, 3) on any device -> int64 token ids (N, tokens_per_image) on ``device``."""


@runtime_checkable
class SavableTokenizer(ImageTokenizer, Protocol):
    def save(self, path: str | Path) -> None:
        """Write the tokenizer's weights (safetensors) so that a corpus can keep them."""
