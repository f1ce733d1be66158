"""Seeds: their one limit, the splitmix64 mixer, and the tags that keep the streams of one ``--seed`` apart.

Every ``--seed`` is an unsigned 64-bit integer (what torch's and NumPy's generators take): :func:`check_seed`
is the one check, :data:`SEED_LIMIT` the one limit. Counter-based draws (the fit's keyed permutation, the
generator's caption dropout) hash integers with :func:`mix64`, splitmix64's finalizer. Streams seeded by the
same ``--seed`` are told apart by a tag mixed into their keys: :data:`FIT_ORDER_TAG` (the fit's data order),
:data:`GENERATOR_TAG` (the generator's data order and its per-step torch seeds).
"""

from __future__ import annotations

import numpy as np

from tokalign.align.errors import TokalignError

SEED_LIMIT = 2 ** 64
FIT_ORDER_TAG = 0x0DE5
GENERATOR_TAG = 0x6E4
GOLDEN_GAMMA = 0x9E3779B97F4A7C15  #: splitmix64's increment


def check_seed(seed: int, option: str = "--seed") -> int:
    """``seed`` when it is an integer in ``0 .. 2**64 - 1``; else a one-line error."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise TokalignError(f"{option} {seed!r} is outside 0..{SEED_LIMIT - 1} (seeds are unsigned 64-bit); "
                            "pass an integer in that range")
    return seed


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def splitmix64(x: np.ndarray) -> np.ndarray:
    """One splitmix64 output per uint64 state in ``x``: :func:`mix64` of ``x`` plus the golden gamma."""
    with np.errstate(over="ignore"):
        return mix64(x + np.uint64(GOLDEN_GAMMA))
