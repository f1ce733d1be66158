"""Let glibc keep and reuse large freed blocks, so a CPU fit does not map its gradient afresh every step.

Every step allocates the table's gradient (codebook x d: 38 MB at the paper's shape) and frees it after the
optimizer step.  glibc serves blocks above its mmap threshold (at most 32 MB by default) with a fresh
``mmap`` each time, and touching 38 MB of fresh pages costs ~15 ms of page faults per step on the development
CPU, more than the whole bag backward.  :func:`reuse_large_blocks` raises the threshold (and the trim
threshold) to ``limit`` bytes, once per process: blocks up to that size come from the heap and are reused.
It changes where freed memory waits (the heap keeps the high-water mark instead of returning it), not how
much a step uses.  A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
LIMIT = 512 << 20
_done: list[bool] = []


def reuse_large_blocks(limit: int = LIMIT) -> bool:
    """Raise glibc's mmap and trim thresholds to ``limit`` bytes (once); whether that took effect."""
    if _done:
        return _done[0]
    ok = False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, limit)) and bool(libc.mallopt(M_TRIM_THRESHOLD, limit))
    except (OSError, AttributeError):
        pass
    log.debug("glibc large-block reuse %s", "on" if ok else "unavailable")
    _done.append(ok)
    return ok
