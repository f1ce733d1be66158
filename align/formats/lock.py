"""One output folder, one writer: an exclusive ``fcntl`` lock on ``FOLDER/.tokalign.lock``.

:func:`exclusive_lock` takes a non-blocking ``flock`` on the lock file and holds it until the block ends; a
second writer is refused at once with one line naming the holder's pid.  The kernel drops the lock when its
holder dies (``kill -9``, a crash, a power-off of the process), so a lock file left by a dead run is *stale*
by construction: the next writer takes it over (and says so in the log).  A clean exit unlinks the file while
still holding it, and a taker checks that the file it locked is still the one at the path, so an unlink
never lets two writers in.  Local file systems only (flock over NFS is not reliable).

:func:`writing_folder` is what a long-running in-place writer (``fit``, ``tokenize``, the generator) uses: it
claims the folder with the output rule (:func:`tokalign.align.formats.outputs.claim_output_dir`), creates it,
locks it, removes temp files left by killed runs, writes the kind marker, and on a failure that wrote
nothing removes what it created (so a refused command leaves no folder behind).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

from tokalign.align.errors import TokalignError
from tokalign.align.formats import atomic, outputs
from tokalign.align.formats.faults import crash_point

log = logging.getLogger(__name__)


def _open_locked(path: Path) -> int | None:
    """An fd holding the exclusive lock on ``path`` (created if needed), or None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, atomic.FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder unlinked it between our open and our lock: lock the new file


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        return "unknown"


@contextlib.contextmanager
def exclusive_lock(folder: Path, what: str, option: str = "--out") -> Iterator[Path]:
    """Hold the exclusive lock of existing ``folder`` for the block; refuse (one line) when another process holds it."""
    path = Path(folder) / outputs.LOCK
    fd = _open_locked(path)
    if fd is None:
        raise TokalignError(f"{option} {folder} is being written by another tokalign process (pid {_holder(path)}); "
                            f"wait for it to finish, or choose another {option}")
    try:
        previous = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
        if previous and previous[0] != str(os.getpid()):
            log.info("%s: taking over the stale lock of process %s, which ended without releasing it", folder, previous[0])
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _first_missing(path: Path) -> Path | None:
    """The topmost ancestor-or-self of ``path`` that does not exist yet (what mkdir(parents=True) creates)."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _undo(path: Path, top: Path | None, wrote_marker: bool) -> None:
    """Remove what a failed call created, when nothing but tokalign's bookkeeping is there."""
    if not path.is_dir() or outputs.user_entries(path):
        return
    if wrote_marker:
        (path / outputs.MARKER).unlink(missing_ok=True)
    if top is None:
        return
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            folder.rmdir()
        if folder == top:
            break


@contextlib.contextmanager
def writing_folder(path: Path, kind: str, *, what: str, inputs: Iterable[Path] = (), keep: Iterable[Path] = (),
                   option: str = "--out", subfolders: Iterable[str] = (), lock: bool = True) -> Iterator[outputs.Claim]:
    """Claim, create, lock and mark folder ``path`` for ``kind``; yield the :class:`outputs.Claim`.

    ``subfolders``: owned subfolders whose temp leftovers are removed too (e.g. "checkpoints", "shards").
    ``lock=False`` (a non-main process of a multi-process run) only claims.
    """
    path = Path(path)
    claim = outputs.claim_output_dir(path, kind, inputs=inputs, keep=keep, option=option)
    if not lock:
        yield claim
        return
    top = _first_missing(path)
    path.mkdir(parents=True, exist_ok=True)
    wrote_marker = outputs.read_marker(path) is None
    done = False
    try:
        with exclusive_lock(path, what, option):
            for folder in (path, *(path / s for s in subfolders)):
                atomic.remove_stale_temps(folder)
            outputs.write_marker(path, kind)
            crash_point(f"{what}:locked")
            yield claim
            done = True
    finally:
        if not done and claim.state in ("new", "empty"):
            _undo(path, top, wrote_marker)
