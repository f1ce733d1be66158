"""The one exception type that reaches users.

Library code raises :class:`TokalignError` for anything the user can fix (a
missing file, a bad option value, a corrupt shard).  Its message is a single
line that names the problem and how to fix it; the CLI prints it and exits
with status 2.  Internal invariants use ``assert`` instead.
"""

from __future__ import annotations


class TokalignError(Exception):
    """A user-facing problem, described in one line with its fix."""

    def __init__(self, message: str) -> None:
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)
