"""OS errors as one line: what failed, on which path, and the fix (the CLI boundary's policy for ``OSError``).

Every writer writes atomically (``tokalign.align.formats.atomic``), so when the disk fills up or a folder
is not writable nothing half-written is left; the command only has to say so in one line and exit 2.
"""

from __future__ import annotations

import errno
import os
import re

_FIXES = {
    errno.ENOSPC: "the disk is full; free some space (or write to another disk) and run the command again",
    errno.EDQUOT: "the disk quota is exhausted; free some space and run the command again",
    errno.EACCES: "permission denied; choose a path you may write (or fix its permissions)",
    errno.EPERM: "operation not permitted; choose a path you may write (or fix its permissions)",
    errno.EROFS: "the file system is read-only; write to another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder, not a file; pass a file name",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    errno.ENOENT: "it does not exist; check the path",
    errno.EEXIST: "it already exists; choose another path",
    errno.ENOTEMPTY: "the folder is not empty; choose another path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) or use fewer --workers",
}


_ERRNO = re.compile(r"\[Errno (\d+)\] ([^\n]*)")


def _unwrap(exc: OSError) -> OSError:
    """An error re-raised from a DataLoader worker keeps only its text: recover errno and reason from it."""
    if exc.errno is not None:
        return exc
    found = _ERRNO.findall(str(exc))
    if not found:
        return exc
    code, rest = found[-1]
    reason, _, path = rest.partition(": ")
    return OSError(int(code), reason, path.strip("'\"") or None)


def describe_os_error(exc: OSError) -> str:
    """``exc`` as one line: its path(s), the system's reason, and a fix."""
    exc = _unwrap(exc)
    paths = [p for p in (exc.filename, getattr(exc, "filename2", None)) if p not in (None, "")]
    where = " -> ".join(os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in paths)
    reason = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
    fix = _FIXES.get(exc.errno or -1, "check the path and the disk, then run the command again")
    text = f"{reason} ({where})" if where else reason
    return " ".join(f"{text}: {fix}".encode("utf-8", "backslashreplace").decode("utf-8").split())
