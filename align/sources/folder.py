"""The ``folder`` input: a folder of image files plus one captions file that maps file names to captions.

The captions file is ``--captions`` (relative to the folder, or a path) or the
first of ``captions.jsonl``, ``captions.csv``, ``metadata.jsonl`` and
``metadata.csv`` in the folder (the last two are Hugging Face ImageFolder's
convention).  JSONL holds one object per line, CSV a header row and one row
per item; either names the file under one of :data:`FILE_FIELDS` (``file_name``,
``file``, ``image``, ``path``, ``filename``, ``img``, ...; relative to the folder,
posix style) and the caption under one of :data:`CAPTION_FIELDS` (``caption``,
``text``, ...).  A captions file none of whose rows names a file is refused
at once, with the keys its rows have.

Images are found recursively (suffixes :data:`samples.IMAGE_SUFFIXES`, any
case; ``.npy`` token arrays instead for pretokenized input).  Each relative
path that has an image file or a caption row is one sample, keyed by that
path, in sorted key order: an image without a row has caption None, a row
without a file has image None (the pipeline counts them as ``no_caption`` and
``no_image``).  A caption row that cannot be used is its own sample with
``skip`` set: ``unreadable_caption`` (bad JSON, no file or caption field, a
caption that is not a string; keyed ``captions.jsonl:LINE``) or
``duplicate_key`` (a second row for a file; the first row wins).

File names that are not UTF-8 are kept under an escaped key (``tokalign.align.sources.keys``; listed as
``escaped_key``).  Symbolic links: a linked *file* is followed, also when it points outside the folder, and
such an item is listed in ``adjusted.jsonl`` as ``symlink_outside``; linked *folders* are not entered.

The captions file is read into memory once, when the source is opened, and
the parts carry their keys and captions (a few hundred bytes per row: fine up
to millions of rows).  Image bytes are read only in :meth:`FolderSource.read`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Optional

import numpy as np

from tokalign.align.errors import TokalignError
from tokalign.align.sources.samples import IMAGE_SUFFIXES, TOKEN_SUFFIX, Part, Payload, RawSample
from tokalign.align.sources.spec import SourceSpec

log = logging.getLogger(__name__)

__all__ = ["CAPTION_FILES", "FILE_FIELDS", "CAPTION_FIELDS", "FolderSource"]

CAPTION_FILES = ("captions.jsonl", "captions.csv", "metadata.jsonl", "metadata.csv")
FILE_FIELDS = ("file_name", "file", "image", "path", "filename", "img", "image_path", "image_file", "file_path")
CAPTION_FIELDS = ("caption", "text", "prompt", "description")

Row = tuple[str, Optional[str], Optional[tuple[str, str]]]  # (key, caption or None, skip or None)


@dataclass(frozen=True)
class FolderSource:
    """Image files (or ``.npy`` token files) in ``root`` with captions from ``captions_path``."""

    root: str
    captions_path: str
    tokens: bool
    items: int
    part_list: tuple[Part, ...]
    outside: frozenset[str] = frozenset()  # keys of file links that point outside the folder
    kind: ClassVar[str] = "folder"

    @classmethod
    def open(cls, spec: SourceSpec) -> "FolderSource":
        root = Path(spec.input)
        if root.exists() and not root.is_dir():
            raise TokalignError(f"--input {root} is a file, not an image folder; pass the folder, or --input-format "
                                "for a file input")
        if not root.is_dir():
            raise TokalignError(f"image folder {root} does not exist; pass an existing folder of images with a captions file")
        captions_path = _find_captions(root, spec.captions_file)
        captions, extra = _read_captions(captions_path)
        if not captions and extra:
            _refuse_unusable(captions_path, extra)
        files, outside = _list_files(root, (TOKEN_SUFFIX,) if spec.tokens else IMAGE_SUFFIXES)
        rows = _merge(files, captions, extra)
        if not rows:
            raise TokalignError(f"image folder {root} has no image files and {captions_path.name} has no rows; "
                                "pass a folder with images and captions")
        log.info("folder %s: %d files, %d caption rows from %s", root, len(files), len(captions), captions_path.name)
        parts = tuple(_part(i, root, start, rows[start:start + spec.part_size], files)
                      for i, start in enumerate(range(0, len(rows), spec.part_size)))
        if outside:
            log.info("folder %s: %d file links point outside it (followed; listed as symlink_outside)", root, len(outside))
        return cls(str(root), str(captions_path), spec.tokens, len(rows), parts, frozenset(outside))

    def parts(self) -> list[Part]:
        return list(self.part_list)

    def read(self, part: Part) -> Iterator[RawSample]:
        for key, caption, skip in part.locator:
            if skip is not None:
                yield RawSample(key, skip=skip)
            else:
                notes = ("symlink_outside",) if key in self.outside else ()
                yield RawSample(key, self._payload(key), caption, notes=notes)

    def describe(self) -> dict:
        return {"kind": self.kind, "input": self.root, "captions": self.captions_path, "tokens": self.tokens,
                "items": self.items, "parts": len(self.part_list)}

    def _payload(self, key: str) -> Payload:
        """The file's bytes (or token array); None when it does not exist (any more)."""
        try:
            data = (Path(self.root) / key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            log.warning("cannot read %s in %s (%s); counted as having no image", key, self.root, exc)
            return None
        return _token_array(data) if self.tokens else data


def _token_array(data: bytes) -> Payload:
    """An integer ``.npy`` as int64 ids; anything else stays bytes, which the pipeline reports as unreadable."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception:  # numpy raises several types for a damaged or pickled file
        return data
    return array.astype(np.int64) if array.dtype.kind in "iu" else array


def _find_captions(root: Path, given: str | None) -> Path:
    if given is not None:
        for path in (root / given, Path(given)):
            if path.is_file():
                return path
        raise TokalignError(f"captions file {given} does not exist (in {root} or as a path); pass an existing --captions file")
    for name in CAPTION_FILES:
        if (root / name).is_file():
            return root / name
    raise TokalignError(f"image folder {root} has no {'/'.join(CAPTION_FILES)}; write one mapping file_name to caption, "
                        "or pass --captions")


def _read_captions(path: Path) -> tuple[dict[str, str], list[Row]]:
    """Captions by key (first row wins) and the rows that are samples of their own (unreadable, duplicate)."""
    captions: dict[str, str] = {}
    where: dict[str, int] = {}
    extra: list[Row] = []
    reader = _csv_rows if path.suffix.lower() == ".csv" else _jsonl_rows
    for line, name, caption, problem in reader(path):
        label = f"{path.name}:{line}"
        key = _relative_key(name) if problem is None else None
        if problem is None and key is None:
            problem = f"file name {name!r} is not a path inside the folder"
        if problem is not None or key is None:
            extra.append((label, None, ("unreadable_caption", f"{label}: {problem}")))
        elif key in captions:
            extra.append((key, None, ("duplicate_key", f"{label} is a second caption row for {key}; the row on line "
                                                       f"{where[key]} is used")))
        else:
            captions[key], where[key] = caption, line
    return captions, extra


def _refuse_unusable(path: Path, extra: list[Row]) -> None:
    """One line for a captions file of which no row is usable, naming the first problem (the keys it found)."""
    problems = [skip[1] for _, _, skip in extra if skip is not None and skip[0] == "unreadable_caption"]
    if len(problems) == len(extra):
        raise TokalignError(f"no row of {path} can be used ({len(problems)} rows); first: {problems[0]}; name the "
                            f"image under one of {', '.join(FILE_FIELDS)} and the caption under one of "
                            f"{', '.join(CAPTION_FIELDS)}")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, str, str, str | None]]:
    """(line number, file name, caption, problem) per non-blank line."""
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            yield number, "", "", "line is not valid UTF-8 JSON"
            continue
        yield (number, *_fields(row if isinstance(row, dict) else {}))


def _fields(row: dict) -> tuple[str, str, str | None]:
    name = next((row[f] for f in FILE_FIELDS if f in row), None)
    field = next((f for f in CAPTION_FIELDS if f in row), None)
    found = f"; the row has keys {', '.join(map(str, row)) or 'none'}"
    if not isinstance(name, str) or not name:
        return "", "", f"no file name (one of {', '.join(FILE_FIELDS)}){found}"
    if field is None:
        return name, "", f"no caption (one of {', '.join(CAPTION_FIELDS)}){found}"
    if row[field] is None:
        return name, "", f"caption ({field}) is null or missing"
    if not isinstance(row[field], str):
        return name, "", f"caption is {type(row[field]).__name__}, not a string"
    return name, row[field], None


def _csv_rows(path: Path) -> Iterator[tuple[int, str, str, str | None]]:
    """(line number, file name, caption, problem) per data row; the header must name both columns."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames or []
            name_field = next((f for f in FILE_FIELDS if f in header), None)
            caption_field = next((f for f in CAPTION_FIELDS if f in header), None)
            if name_field is None or caption_field is None:
                raise TokalignError(f"{path} has columns {', '.join(header) or 'none'}; its header needs a file column "
                                    f"({', '.join(FILE_FIELDS)}) and a caption column ({', '.join(CAPTION_FIELDS)})")
            for row in reader:
                yield (reader.line_num, *_fields({name_field: row.get(name_field) or None,
                                                  caption_field: row.get(caption_field)}))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise TokalignError(f"{path} is not a readable UTF-8 CSV ({type(exc).__name__}); save it as UTF-8 CSV "
                                "with a header row") from None


def _relative_key(name: str) -> str | None:
    """``name`` as a normalised posix path inside the folder, or None when it points outside."""
    key = posixpath.normpath(name.replace("\\", "/"))
    if key.startswith(("/", "../")) or key in (".", ".."):
        return None
    return key


def _list_files(root: Path, suffixes: tuple[str, ...]) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """(size, mtime_ns) of every file under ``root`` with one of ``suffixes``, by relative posix path; and the
    keys of file links that point outside ``root``."""
    files: dict[str, tuple[int, int]] = {}
    outside: set[str] = set()
    real_root = root.resolve()
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in names:
            if name.lower().endswith(suffixes):
                path = Path(folder) / name
                try:
                    stat = path.stat()
                except OSError:  # a broken link or a file deleted while listing
                    continue
                key = path.relative_to(root).as_posix()
                files[key] = (stat.st_size, stat.st_mtime_ns)
                if path.is_symlink() and real_root not in path.resolve().parents:
                    outside.add(key)
    return files, outside


def _merge(files: dict[str, tuple[int, int]], captions: dict[str, str], extra: list[Row]) -> list[Row]:
    """Every sample in key order; a duplicate row right after the row it repeats."""
    keyed = [(key, 0, (key, captions.get(key), None)) for key in set(files) | set(captions)]
    keyed += [(row[0], 1 + i, row) for i, row in enumerate(extra)]
    keyed.sort(key=lambda item: item[:2])
    return [row for _, _, row in keyed]


def _part(index: int, root: Path, start: int, rows: list[Row], files: dict[str, tuple[int, int]]) -> Part:
    """Part ``index``: samples ``start`` onwards; its fingerprint hashes every key, caption, file size and mtime."""
    digest = hashlib.sha256()
    for key, caption, skip in rows:
        digest.update(json.dumps([key, caption, skip, files.get(key)]).encode())
    fingerprint = {"folder": str(root), "items": [start, start + len(rows)], "first": rows[0][0], "last": rows[-1][0],
                   "sha256": digest.hexdigest()}
    return Part(index, f"{root.name or root}/[{start}:{start + len(rows)}]", fingerprint, tuple(rows))
