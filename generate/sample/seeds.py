"""Per-sample randomness: each image owns a ``torch.Generator`` seeded from (seed, prompt index, sample index).

The generator draws that image's uniforms for all its steps at once, on the CPU, so the same (seed, prompt,
sample) gives the same numbers whatever the batch it is sampled in and whatever the device.
"""

from __future__ import annotations

import hashlib

import torch


def sample_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A 63-bit seed for one image, stable across runs, machines and versions of Python."""
    digest = hashlib.sha256(f"tokalign-sample:{seed}:{prompt_index}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def uniforms(seeds: list[int], steps: int) -> torch.Tensor:
    """(len(seeds), steps) float64 uniforms in [0, 1), row i from ``seeds[i]`` alone."""
    rows = [torch.rand(steps, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds]
    return torch.stack(rows) if rows else torch.zeros(0, steps, dtype=torch.float64)
