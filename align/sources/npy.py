"""The ``npy`` input: one ``.npy`` array of pretokenized image token ids plus a captions file, row i to line i.

The array holds integers of shape (N, L), or (N, h, w) (each row flattened
row-major to h*w ids); it is memory-mapped (``np.load(mmap_mode="r")``, never
unpickled), so it may be larger than memory.  The captions file is
``--captions`` or the first of ``<stem>.jsonl``, ``<stem>.txt``,
``captions.jsonl`` and ``captions.txt`` beside the array:

* ``.jsonl``: one ``{"caption": str, "key": optional}`` object per line; a
  line that is not such an object is its row's sample, skipped as
  ``unreadable_caption``;
* ``.txt``: one caption per line (without its line break).

The file must have exactly N lines (a final line break does not start a new
one).  Keys are the ``key`` fields or the row number (``000000042``); a key
given twice is skipped as ``duplicate_key`` the second time.  Parts are runs
of ``part_size`` rows; each sample's payload is a copy of its row as int64.

Captions and keys are read into memory when the source is opened.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Optional

import numpy as np

from tokalign.align.errors import TokalignError
from tokalign.align.sources.samples import Part, RawSample
from tokalign.align.sources.spec import SourceSpec

log = logging.getLogger(__name__)

__all__ = ["NpySource"]

Line = tuple[str, Optional[str], Optional[tuple[str, str]]]  # (key, caption or None, skip or None)


@dataclass(frozen=True)
class NpySource:
    """Rows of a token array at ``path``, with captions (and keys) from ``captions_path``."""

    path: str
    captions_path: str
    shape: tuple[int, ...]
    lines: tuple[Line, ...]
    part_list: tuple[Part, ...]
    kind: ClassVar[str] = "npy"

    @classmethod
    def open(cls, spec: SourceSpec) -> "NpySource":
        if not spec.tokens:
            raise TokalignError("a .npy input holds token ids; use --image-tokenizer pretokenized")
        path = Path(spec.input)
        tokens = _load(path)
        captions_path = _find_captions(path, spec.captions_file)
        lines = _read_lines(captions_path)
        if len(lines) != len(tokens):
            raise TokalignError(f"{path.name} has {len(tokens)} rows but {captions_path.name} has {len(lines)} lines; "
                                "they must match row for row")
        parts = _parts(path, captions_path, len(tokens), spec.part_size)
        log.info("npy %s: %d rows of %d token ids, captions from %s", path, len(tokens), _row_length(tokens.shape),
                 captions_path.name)
        return cls(str(path), str(captions_path), tuple(tokens.shape), lines, parts)

    def parts(self) -> list[Part]:
        return list(self.part_list)

    def read(self, part: Part) -> Iterator[RawSample]:
        start, stop = part.locator
        tokens = np.load(self.path, mmap_mode="r", allow_pickle=False)
        for row in range(start, stop):
            key, caption, skip = self.lines[row]
            if skip is not None:
                yield RawSample(key, skip=skip)
            else:
                yield RawSample(key, np.array(tokens[row], dtype=np.int64).reshape(-1), caption)

    def describe(self) -> dict:
        return {"kind": self.kind, "input": self.path, "captions": self.captions_path, "shape": list(self.shape),
                "items": len(self.lines), "parts": len(self.part_list)}


def _parts(path: Path, captions_path: Path, rows: int, part_size: int) -> tuple[Part, ...]:
    """Runs of ``part_size`` rows; a fingerprint names both files' size and mtime and the row range."""
    array, captions = path.stat(), captions_path.stat()
    base = {"file": str(path), "size": array.st_size, "mtime_ns": array.st_mtime_ns, "captions": str(captions_path),
            "captions_size": captions.st_size, "captions_mtime_ns": captions.st_mtime_ns}
    parts = []
    for start in range(0, rows, part_size):
        stop = min(rows, start + part_size)
        parts.append(Part(len(parts), f"{path.name}[{start}:{stop}]", {**base, "rows": [start, stop]}, (start, stop)))
    return tuple(parts)


def _row_length(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[1:]))


def _load(path: Path) -> np.ndarray:
    """The memory-mapped array, refused unless it holds integers of shape (N, L) or (N, h, w)."""
    if not path.is_file():
        raise TokalignError(f"token array {path} does not exist; pass an existing .npy of token ids")
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a damaged or pickled file
        raise TokalignError(f"{path} is not a readable .npy array ({type(exc).__name__}); save the token ids with "
                            "numpy.save") from None
    if tokens.dtype.kind not in "iu" or tokens.ndim not in (2, 3) or 0 in tokens.shape:
        raise TokalignError(f"{path} holds {tokens.dtype} of shape {tokens.shape}; expected integer token ids of "
                            "shape (N, L) or (N, h, w)")
    return tokens


def _find_captions(path: Path, given: str | None) -> Path:
    if given is not None:
        for candidate in (path.parent / given, Path(given)):
            if candidate.is_file():
                return candidate
        raise TokalignError(f"captions file {given} does not exist; pass an existing --captions file")
    names = (f"{path.stem}.jsonl", f"{path.stem}.txt", "captions.jsonl", "captions.txt")
    for name in names:
        if (path.parent / name).is_file():
            return path.parent / name
    raise TokalignError(f"{path.name} has no captions file beside it ({', '.join(names)}); write one caption per row, "
                        "or pass --captions")


def _read_lines(path: Path) -> tuple[Line, ...]:
    """One (key, caption, skip) per line of the captions file."""
    raw = path.read_bytes().split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()  # the final line break ends the last line
    raw = [line[:-1] if line.endswith(b"\r") else line for line in raw]
    lines = [_jsonl_line(i, line, path.name) if path.suffix.lower() == ".jsonl" else _text_line(i, line, path.name)
             for i, line in enumerate(raw)]
    return tuple(_mark_duplicates(lines))


def _text_line(row: int, line: bytes, name: str) -> Line:
    try:
        return f"{row:09d}", line.decode("utf-8"), None
    except UnicodeDecodeError:
        return f"{row:09d}", None, ("unreadable_caption", f"{name}:{row + 1} is not valid UTF-8")


def _jsonl_line(row: int, line: bytes, name: str) -> Line:
    key = f"{row:09d}"
    try:
        value = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return key, None, ("unreadable_caption", f"{name}:{row + 1} is not valid UTF-8 JSON")
    if not isinstance(value, dict) or not isinstance(value.get("caption"), str):
        return key, None, ("unreadable_caption", f"{name}:{row + 1} has no string \"caption\" field")
    given = value.get("key")
    if isinstance(given, (str, int)) and not isinstance(given, bool) and str(given):
        key = str(given)
    return key, value["caption"], None


def _mark_duplicates(lines: list[Line]) -> list[Line]:
    seen: dict[str, int] = {}
    out = []
    for row, (key, caption, skip) in enumerate(lines):
        if key in seen:
            out.append((key, None, ("duplicate_key", f"row {row} repeats key {key} of row {seen[key]}; the first is used")))
        else:
            seen.setdefault(key, row)
            out.append((key, caption, skip))
    return out
