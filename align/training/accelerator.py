"""Building the Accelerate ``Accelerator`` for a training run, with the rule that makes CPU runs correct.

Without a visible GPU, Accelerate must be told ``cpu=True`` even for ``--device auto``: only then does it treat
``accelerate launch --multi_gpu`` / torchrun-started CPU processes as one gloo group instead of N lone runs.
"""

from __future__ import annotations

from typing import Any

from tokalign.align.errors import TokalignError

DEVICES = ("auto", "cpu", "cuda")


def build_accelerator(device: str = "auto", **kwargs: Any):
    """An ``accelerate.Accelerator`` on ``device`` (``auto``: a GPU when one is visible); ``kwargs`` pass through."""
    import torch
    from accelerate import Accelerator

    if device not in DEVICES:
        raise TokalignError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise TokalignError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return Accelerator(cpu=device == "cpu" or not torch.cuda.is_available(), **kwargs)


def end_processes() -> None:
    """Tear down the process group of a launched run once the process's work is done (a no-op for one process).

    Left to interpreter exit, gloo's background threads can be destroyed while still joinable, and a rank that has
    finished and saved everything then aborts (SIGABRT), failing the launch. A command that owns its process calls
    this last; a library caller that trains several runs in one process group (a study) must not."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
