"""Atomic writes: a reader sees the old file, the new file, or nothing.

Everything tokalign writes goes to a temporary name in the destination folder
and is moved into place with ``os.replace`` once complete, so an interrupted
or failed command never leaves a half-written output behind.  Temporary names
are ``.NAME.XXXXXXXX[.SUFFIX].tmp`` (files and folders) and ``.NAME.XXXXXXXX.old``
(a folder being replaced); a killed process can leave them behind, and
:func:`remove_stale_temps` (called by the next writer holding the folder's lock)
removes them.  JSON is always standard JSON: non-finite floats become ``null``.
Errors of the safetensors writer that are I/O errors (a full disk) are raised
as ``OSError`` naming the path, like every other write.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from tokalign.align.errors import TokalignError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()
FILE_MODE = 0o666 & ~_UMASK  # what open() would give; mkstemp/mkdtemp alone give 0600/0700
DIR_MODE = 0o777 & ~_UMASK


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path, path.suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        named = _named(exc, path) if isinstance(exc, Exception) else None
        if named is None:
            raise
        raise named from None  # an I/O error names the file being written


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def standard_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by ``None``, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: standard_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [standard_json(v) for v in value]
    return value


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Standard JSON (no NaN/Infinity: they are written as ``null``), atomically."""
    write_text(path, json.dumps(standard_json(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def _named(exc: BaseException, path: Path) -> OSError | None:
    """An OSError for ``exc`` that names ``path`` when it named no file; None when ``exc`` is no I/O error
    (or already names one, and is then re-raised as it is)."""
    if isinstance(exc, TokalignError):
        return None
    error = as_os_error(exc, path)
    if error is None or error.errno is None or (error is exc and exc.filename is not None):
        return None
    if error is not exc:
        return error
    return OSError(exc.errno, exc.strerror, str(path))


_OS_ERROR = re.compile(r"(?:os error|code:)\s*(\d+)")


def as_os_error(exc: BaseException, path: str | os.PathLike) -> OSError | None:
    """An ``OSError`` for a library error that wraps one (safetensors' ``IoError(Os { code: 28 ...})``), else None."""
    if isinstance(exc, OSError):
        return exc
    if not type(exc).__module__.startswith("safetensors"):  # only a wrapper of an OS error, never any text
        return None
    match = _OS_ERROR.search(str(exc))
    if match is None:
        return None
    code = int(match.group(1))
    return OSError(code, os.strerror(code) if code in errno.errorcode else str(exc), str(path))


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    """Write torch or numpy tensors (not mixed) to ``path`` atomically."""
    first = next(iter(tensors.values()))
    if type(first).__module__.startswith("numpy"):
        from safetensors.numpy import save_file
    else:
        from safetensors.torch import save_file
    with atomic_path(path) as tmp:
        try:
            save_file(dict(tensors), str(tmp), metadata=dict(metadata) if metadata else None)
        except Exception as exc:  # safetensors reports a full disk as its own error type
            error = as_os_error(exc, path)
            if error is None or error is exc:
                raise
            raise error from None


_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}(\.[A-Za-z0-9_-]+)?\.(tmp|old)$")


def is_temp_name(name: str) -> bool:
    """True for the names :func:`atomic_path` and :func:`atomic_dir` give their temporaries."""
    return bool(_TEMP_NAME.match(name))


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries a killed writer left directly in ``folder``; return them.

    Only safe while holding the folder's lock (:mod:`tokalign.align.formats.lock`): a live writer's
    temporaries look the same.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if is_temp_name(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def commit_dir(tmp: Path, path: Path) -> None:
    """Move the complete folder ``tmp`` to ``path`` (a sibling); an existing ``path`` is swapped out, never lost."""
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, old / "x")
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it to ``path`` on success.

    An existing ``path`` is replaced only after the new folder is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, DIR_MODE)
    try:
        try:
            yield tmp
        except Exception as exc:  # an I/O error (also one a library wrapped) names the folder being written
            named = _named(exc, path)
            if named is None:
                raise
            raise named from None
        commit_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
