"""The one progress-bar factory: a tqdm bar when enabled, else a silent stand-in with the same methods."""

from __future__ import annotations

from typing import Any


class _Silent:
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(enabled: bool, *, desc: str, unit: str, total: int | None = None, initial: int = 0):
    """A bar over ``total`` ``unit`` s (tqdm, to stderr) when ``enabled``; a no-op object otherwise."""
    if not enabled:
        silent = _Silent()
        silent.n = initial
        return silent
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
