"""``torch.compile`` of the generator's decoder body, in place, timed, with an eager fallback.

:func:`compile_model` compiles each decoder layer in place (``nn.Module.compile``: parameter and state-dict names
do not change, so checkpoints and the saved model are those of the plain model; the layers share one code object
whose parameters are graph inputs, so one compiled graph serves every layer and the compile time does not grow
with depth) and, on a GPU, the fused loss's per-chunk element-wise work. Compilation happens at the first call; :meth:`Compiled.first_step` runs the first
training step, logs its time (compile included), and if compiling fails there, logs a warning, undoes the
compilation and runs the step eagerly, so a run (or a benchmark) always gives figures. :func:`wants_compile`
resolves ``--compile auto|on|off``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, TypeVar

import torch

from tokalign.align.errors import TokalignError
from tokalign.generate.train.fused_forward import fused_parts
from tokalign.generate.train.fused_loss import compiled_chunk_math
from tokalign.generate.train.step import LossOptions

log = logging.getLogger(__name__)
T = TypeVar("T")


def wants_compile(setting: str, device: torch.device) -> bool:
    """``on``: always; ``off``: never; ``auto``: on a GPU only."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


@dataclass
class Compiled:
    """What :func:`compile_model` compiled, and the first step's time once it ran."""

    modules: list  #: modules compiled in place
    options: LossOptions  #: the loss options to train with (the compiled chunk math on a GPU)
    first_seconds: float | None = None  #: the first step's wall time, compilation included
    failed: str | None = None  #: why compiling was abandoned (None: it worked)
    _proven: bool = field(default=False, repr=False)

    def first_step(self, run: Callable[[LossOptions], T], optimizer, device: torch.device) -> T:
        """Run ``run(options)`` (the first step) timed; on a compile error, undo compiling and run it eagerly."""
        start = time.perf_counter()
        try:
            result = run(self.options)
            _sync(device)
        except TokalignError:
            raise
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager
            self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            log.warning("torch.compile failed at the first step (%s); training eagerly", self.failed)
            self.undo()
            optimizer.zero_grad(set_to_none=True)
            result = run(self.options)
            _sync(device)
        self.first_seconds = time.perf_counter() - start
        self._proven = True
        log.info("first step %.1f s (torch.compile %s)", self.first_seconds,
                 "fell back to eager" if self.failed else "compilation included")
        return result

    @property
    def proven(self) -> bool:
        return self._proven

    def undo(self) -> None:
        for module in self.modules:
            module._compiled_call_impl = None
        self.options = replace(self.options, math=None)
        torch._dynamo.reset()


def compile_model(model, device: torch.device, fused: bool = True, loss: LossOptions | None = None) -> Compiled:
    """Compile ``model``'s decoder layers in place (its body, or the whole model, where it has no layer list) and,
    on a GPU with the fused loss, its chunk math; the returned :class:`Compiled` runs the first step. ``loss``: the
    options to start from (its ``fused`` then wins over ``fused``)."""
    loss = loss if loss is not None else LossOptions(fused=fused)
    fused = loss.fused
    parts = fused_parts(model) if fused else None
    body = getattr(model, getattr(model, "base_model_prefix", ""), None) or model
    layers = getattr(body, "layers", None)
    targets = list(layers) if isinstance(layers, torch.nn.ModuleList) and len(layers) else [body]
    math = compiled_chunk_math() if parts is not None and device.type == "cuda" else None
    torch._dynamo.config.suppress_errors = True  # a graph that fails to compile runs eagerly (logged by torch)
    for target in targets:
        target.compile()
    log.info("torch.compile: %d x %s (compiled at the first use)", len(targets), type(targets[0]).__name__)
    return Compiled(targets, replace(loss, math=math))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
