"""Crash points for the kill tests: ``TOKALIGN_CRASH_AT=NAME`` makes the process SIGKILL itself at point NAME.

Writers call :func:`crash_point` at the moments a real interruption is most harmful (start-up, between a
part's files, after the last checkpoint, before the final writes).  Unset (always, outside tests) it costs one
environment lookup.  ``NAME`` may carry a count, ``fit:step:5``; the point is reached when the caller's name
equals it.
"""

from __future__ import annotations

import os
import signal

ENV = "TOKALIGN_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process when ``$TOKALIGN_CRASH_AT`` equals ``name`` (tests only)."""
    wanted = os.environ.get(ENV)
    if wanted is not None and wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)
