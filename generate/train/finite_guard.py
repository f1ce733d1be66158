"""The finiteness check of each step's loss and gradient norm, exact about the step that failed.

Two forms, one message. :meth:`FiniteGuard.eager` reads both figures on the host before every optimizer step
(a device synchronization per step; free on a CPU, where the device is the host). :meth:`FiniteGuard.deferred`
keeps the check on the device: a sticky flag, set at the first step whose loss or gradient norm is not finite,
is handed to the fused AdamW kernel as its ``found_inf`` (the kernel then leaves weights, moments and step count
untouched), so that step and every later one change nothing; the step, loss and norm of the first failure are
kept on the device, and :meth:`FiniteGuard.check` (called by the loop before it logs, evaluates or saves) raises
naming that step. Either way no weight is ever updated from a non-finite step, and a run that stops has the
weights from before that step.
"""

from __future__ import annotations

import math

import torch

from tokalign.align.errors import TokalignError


def _message(what: str, value: float, step: int) -> str:
    return (f"the {what} is not finite ({value}) at step {step}, before its optimizer step: training diverged; "
            "lower --lr or raise --warmup-steps, then start a new --run or --resume from a checkpoint before the "
            "divergence")


def check_finite(what: str, value: float, step: int) -> None:
    """Raise the divergence error if ``value`` (the ``what`` of 1-based step ``step``) is not finite."""
    if not math.isfinite(value):
        raise TokalignError(_message(what, value, step))


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # under an Accelerate wrapper, the torch optimizer


def supports_deferred(optimizer) -> bool:
    """Whether ``optimizer`` honours ``found_inf`` (torch's fused Adam/AdamW/SGD)."""
    return bool(_inner(optimizer).defaults.get("fused"))


class FiniteGuard:
    """See the module docstring; ``before_update(optimizer, step, loss, norm)`` runs before every optimizer step."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.deferred = device is not None
        if self.deferred:
            self.tripped = torch.zeros((), dtype=torch.float32, device=device)  # 1.0 once a step failed
            self.first_step = torch.zeros((), dtype=torch.int64, device=device)
            self.first_values = torch.zeros(2, dtype=torch.float64, device=device)  # its loss and gradient norm

    @classmethod
    def eager(cls) -> "FiniteGuard":
        return cls()

    @classmethod
    def deferred_for(cls, optimizer, device: torch.device) -> "FiniteGuard":
        """A deferred guard; raises ValueError if ``optimizer`` cannot skip a step on the device."""
        if not supports_deferred(optimizer):
            raise ValueError("a deferred finiteness check needs a fused optimizer (found_inf)")
        return cls(device)

    @classmethod
    def for_run(cls, optimizer, device: torch.device, allow: bool = True) -> "FiniteGuard":
        """Deferred on a GPU with a fused optimizer (when ``allow``), eager otherwise."""
        if allow and device.type == "cuda" and supports_deferred(optimizer):
            return cls(device)
        return cls()

    def before_update(self, optimizer, step: int, loss: torch.Tensor, norm: torch.Tensor) -> None:
        """Check step ``step`` (0-based) now (eager) or arm the device flag the optimizer step reads (deferred)."""
        if not self.deferred:
            check_finite("loss", float(loss), step + 1)
            check_finite("gradient norm", float(norm), step + 1)
            return
        loss, norm = loss.detach().double().reshape(()), norm.detach().double().reshape(())
        bad = ~(torch.isfinite(loss) & torch.isfinite(norm))
        first = bad & (self.tripped == 0)
        self.first_step.copy_(torch.where(first, step + 1, self.first_step))
        self.first_values.copy_(torch.where(first, torch.stack([loss, norm]), self.first_values))
        torch.maximum(self.tripped, bad.float(), out=self.tripped)
        _inner(optimizer).found_inf = self.tripped

    def check(self) -> None:
        """Raise the divergence error naming the first failed step, if any (one device synchronization)."""
        if not self.deferred or not bool(self.tripped.item()):
            return
        step = int(self.first_step.item())
        loss, norm = self.first_values.tolist()
        if math.isfinite(loss):
            check_finite("gradient norm", norm, step)
        check_finite("loss", loss, step)
