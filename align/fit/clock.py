"""The fit's throughput clock: pairs/s per logged window, overall, and steady.

* a window runs from one logged step to the next; evaluations and checkpoints inside it are left out
  (:meth:`Clock.paused`, which first flushes the loss watch so queued device work is not counted as paused);
* overall: every step of the invocation over its whole wall time, evaluations and checkpoints included;
* steady: the windows after the first (which holds start-up: allocations, kernel selection), their steps over
  their training time.
"""

from __future__ import annotations

import contextlib
import time


class Clock:
    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.begun = self.window_start = time.perf_counter()
        self.window_steps, self.excluded, self.windows = 0, 0.0, []

    def tick(self) -> None:
        self.window_steps += 1

    def window(self) -> float:
        """Pairs/s of the window ending now (the caller has waited for the device), and a new window."""
        now = time.perf_counter()
        seconds = max(now - self.window_start - self.excluded, 1e-9)
        self.windows.append((self.window_steps, seconds))
        self.window_start, self.window_steps, self.excluded = now, 0, 0.0
        return self.windows[-1][0] * self.batch_size / seconds

    @contextlib.contextmanager
    def paused(self, watch=None):
        if watch is not None:
            watch.flush()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - start

    def overall(self, steps: int) -> float:
        return steps * self.batch_size / max(time.perf_counter() - self.begun, 1e-9)

    def steady(self) -> float:
        later = self.windows[1:] or self.windows
        seconds = sum(s for _, s in later)
        return sum(n for n, _ in later) * self.batch_size / seconds if seconds else 0.0
