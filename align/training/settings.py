"""Settings the fit and the generator share: checks of integer options and of AdamW with its schedule, and the
field metadata that carries an option's command-line help (:func:`option_help`).

Each check raises :class:`~tokalign.align.errors.TokalignError` with one line naming the option (as the command
line spells it) and what it must be. The configs call them from ``__post_init__``, so a bad setting is refused
when the config is built, whichever stage builds it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from tokalign.align.errors import TokalignError


def option_help(text: str) -> dict[str, str]:
    """Metadata of a config field that is a command-line option: its help (``tokalign.cli.options`` builds the
    option, name, default and help, from the field)."""
    return {"help": text}


def positive_int(option: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TokalignError(f"{option} {value!r} must be a positive integer")


def nonnegative_int(option: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TokalignError(f"{option} {value!r} must be a non-negative integer")


def check_adamw(*, lr: float, warmup_steps: int, min_lr_ratio: float, weight_decay: float,
                betas: Sequence[float], eps: float) -> tuple[float, ...]:
    """Refuse a bad AdamW / warm-up-then-cosine setting; return ``betas`` as a tuple of floats."""
    betas = tuple(float(b) for b in betas)
    nonnegative_int("--warmup-steps", warmup_steps)
    if not (lr > 0 and math.isfinite(lr)):
        raise TokalignError(f"--lr {lr} must be a positive number")
    if not 0 <= min_lr_ratio <= 1:
        raise TokalignError(f"--min-lr-ratio {min_lr_ratio} must lie in [0, 1]")
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise TokalignError(f"--weight-decay {weight_decay} must be a finite number >= 0")
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas) or not eps > 0:
        raise TokalignError("AdamW betas must be two numbers in [0, 1) and eps must be > 0")
    return betas
