"""The table inputs: parquet files (``parquet``) and datasets saved by Hugging Face ``save_to_disk`` (``hf``).

Both are Arrow tables with one row per item, read with pyarrow alone (the
``datasets`` library is not needed).  Columns:

* image: ``--image-column``, else a column the Hugging Face features mark as
  ``Image``, else the first of :data:`IMAGE_COLUMNS`.  It holds encoded image
  bytes (binary) or Hugging Face Image structs ``{bytes, path}``; a struct
  whose ``bytes`` is null is read from the file at ``path`` (relative paths
  are taken from the data file's folder) when that file exists.  Pretokenized
  input reads a list-of-integers column instead (first of
  :data:`TOKEN_COLUMNS`), delivered as int64 arrays;
* caption: ``--caption-column``, else the first of :data:`CAPTION_COLUMNS`;
* key: a ``key`` column when there is one, else ``{file}/{row}`` (the data
  file's path inside the input without its suffix, and the row index within
  that file).  A key repeated within a part is skipped as ``duplicate_key``.

Nulls become None, so the pipeline counts them (``no_image``, ``no_caption``).

Parts: a parquet file's row groups, grouped greedily into parts of about
``part_size`` rows (a row group is never split), read with
``ParquetFile.iter_batches`` so memory stays bounded; a saved dataset's Arrow
stream files (``state.json`` lists them) cut into runs of ``part_size`` rows,
memory-mapped.  A ``DatasetDict`` (``dataset_dict.json``) is read one split
at a time (``--split``, default ``train``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tokalign.align.errors import TokalignError
from tokalign.align.sources.samples import Part, Payload, RawSample
from tokalign.align.sources.spec import SourceSpec

log = logging.getLogger(__name__)

__all__ = ["CAPTION_COLUMNS", "IMAGE_COLUMNS", "TOKEN_COLUMNS", "Columns", "HFDiskSource", "ParquetSource"]

IMAGE_COLUMNS = ("image", "jpg", "png", "webp", "img", "image_bytes")
TOKEN_COLUMNS = ("image_tokens", "tokens", "codes")
CAPTION_COLUMNS = ("caption", "text", "txt", "prompt")
KEY_COLUMN = "key"
_BATCH_ROWS = 256


@dataclass(frozen=True)
class Columns:
    """Which columns hold the image (or tokens), the caption and the key, and how to turn a row into a sample."""

    image: str
    caption: str
    key: str | None
    tokens: bool

    @classmethod
    def choose(cls, schema: pa.Schema, spec: SourceSpec, where: str, features: dict | None = None) -> "Columns":
        """The columns ``spec`` asks for or the first candidates present; refuse unusable ones with the fix."""
        typed = [] if spec.tokens else [n for n, f in (features or {}).items() if isinstance(f, dict) and f.get("_type") == "Image"]
        image = _pick(schema, spec.image_column, [*typed, *(TOKEN_COLUMNS if spec.tokens else IMAGE_COLUMNS)],
                      where, "token" if spec.tokens else "image", "--image-column")
        caption = _pick(schema, spec.caption_column, CAPTION_COLUMNS, where, "caption", "--caption-column")
        columns = cls(image, caption, KEY_COLUMN if KEY_COLUMN in schema.names else None, spec.tokens)
        columns.check(schema, where)
        return columns

    def check(self, schema: pa.Schema, where: str) -> None:
        """Refuse ``schema`` when it lacks these columns or their types do not fit."""
        for name, option in ((self.image, "--image-column"), (self.caption, "--caption-column")):
            if name not in schema.names:
                raise TokalignError(f"{where} has no column {name!r} (its columns: {', '.join(schema.names)}); "
                                    f"give all files the same columns, or pass {option}")
        image, caption = schema.field(self.image).type, schema.field(self.caption).type
        if self.tokens and not _is_int_list(image):
            raise TokalignError(f"column {self.image!r} of {where} holds {image}, not lists of integer token ids; "
                                "pass --image-column naming the token column")
        if not self.tokens and not (_is_binary(image) or (pa.types.is_struct(image) and _struct_bytes(image))):
            raise TokalignError(f"column {self.image!r} of {where} holds {image}, not encoded image bytes or "
                                "{bytes, path} image structs; pass --image-column naming the image column")
        if not (pa.types.is_string(caption) or pa.types.is_large_string(caption) or pa.types.is_null(caption)):
            raise TokalignError(f"column {self.caption!r} of {where} holds {caption}, not text; "
                                "pass --caption-column naming the caption column")

    def names(self) -> list[str]:
        return [self.image, self.caption] + ([self.key] if self.key else [])

    def samples(self, batch: pa.RecordBatch, first_row: int, stem: str, folder: Path) -> Iterator[RawSample]:
        """The batch's rows as samples; ``first_row`` is the batch's row index within its file."""
        images = batch.column(self.image)
        captions = batch.column(self.caption).to_pylist()
        keys = batch.column(self.key).to_pylist() if self.key else [None] * batch.num_rows
        for i in range(batch.num_rows):
            key = str(keys[i]) if keys[i] is not None else f"{stem}/{first_row + i}"
            yield RawSample(key, self._payload(images[i], folder), captions[i])

    def _payload(self, value: pa.Scalar, folder: Path) -> Payload:
        if not value.is_valid:
            return None
        if self.tokens:
            return _token_array(value)
        if not pa.types.is_struct(value.type):
            return value.as_py()
        item = value.as_py()
        if item.get("bytes") is not None:
            return item["bytes"]
        return _file_bytes(item.get("path"), folder)


def _pick(schema: pa.Schema, given: str | None, candidates: Any, where: str, what: str, option: str) -> str:
    names = schema.names
    if given is not None and given not in names:
        raise TokalignError(f"{where} has no column {given!r} ({option}); its columns are {', '.join(names)}")
    chosen = given if given is not None else next((c for c in candidates if c in names), None)
    if chosen is None:
        raise TokalignError(f"{where} has no {what} column ({', '.join(dict.fromkeys(candidates))}); its columns are "
                            f"{', '.join(names)}; pass {option} NAME")
    return chosen


def _is_binary(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)


def _struct_bytes(kind: pa.StructType) -> bool:
    index = kind.get_field_index("bytes")
    return index >= 0 and _is_binary(kind.field(index).type)


def _is_int_list(kind: pa.DataType) -> bool:
    while pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        kind = kind.value_type
    return pa.types.is_integer(kind)


def _token_array(value: pa.Scalar) -> np.ndarray:
    """A (possibly nested) list of ids as a flat int64 array; nulls inside make it float (which the pipeline refuses)."""
    values = value.values
    while isinstance(values, (pa.ListArray, pa.LargeListArray, pa.FixedSizeListArray)):
        values = values.flatten()
    array = values.to_numpy(zero_copy_only=False)
    return array.astype(np.int64) if array.dtype.kind in "iu" else array


def _file_bytes(path: str | None, folder: Path) -> bytes | None:
    """The bytes of an image struct's ``path`` (relative to the data file's folder), None when there is no such file."""
    if not path:
        return None
    file = Path(path) if Path(path).is_absolute() else folder / path
    try:
        return file.read_bytes() if file.is_file() else None
    except OSError as exc:
        log.warning("cannot read image file %s (%s); counted as having no image", file, exc)
        return None


def _hf_features(schema: pa.Schema) -> dict:
    """The Hugging Face features stored in an Arrow/parquet schema's metadata, or {}."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(raw)["info"]["features"] if raw else {}
    except (ValueError, KeyError, TypeError):
        return {}
    return features if isinstance(features, dict) else {}


def _stat(path: Path) -> dict:
    stat = path.stat()
    return {"file": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _unique(samples: Iterator[RawSample], part: Part) -> Iterator[RawSample]:
    """The samples, a repeated key after its first row skipped as ``duplicate_key``."""
    seen: set[str] = set()
    for sample in samples:
        if sample.key in seen:
            yield RawSample(sample.key, skip=("duplicate_key", f"key {sample.key} appears again in {part.name}; "
                                                               "the first row is used"))
            continue
        seen.add(sample.key)
        yield sample


@dataclass(frozen=True)
class ParquetSource:
    """A parquet file, or every ``*.parquet`` under a folder (sorted), read by row groups."""

    input: str
    columns: Columns
    files: int
    items: int
    part_list: tuple[Part, ...]
    kind: ClassVar[str] = "parquet"

    @classmethod
    def open(cls, spec: SourceSpec) -> "ParquetSource":
        root = Path(spec.input)
        files = _parquet_files(root)
        columns, parts, items = None, [], 0
        for path in files:
            stem = (path.relative_to(root) if root.is_dir() else Path(path.name)).with_suffix("").as_posix()
            meta = _parquet_meta(path)
            schema = meta.schema.to_arrow_schema()
            if columns is None:
                columns = Columns.choose(schema, spec, str(path), _hf_features(schema))
            columns.check(schema, str(path))
            sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            parts += _row_group_parts(len(parts), path, stem, sizes, spec.part_size)
            items += sum(sizes)
        if not items:
            raise TokalignError(f"{root} has no rows; pass parquet files that hold image-caption rows")
        log.info("parquet %s: %d files, %d rows, %d parts", root, len(files), items, len(parts))
        return cls(str(root), columns, len(files), items, tuple(parts))

    def parts(self) -> list[Part]:
        return list(self.part_list)

    def read(self, part: Part) -> Iterator[RawSample]:
        return _unique(self._rows(part), part)

    def _rows(self, part: Part) -> Iterator[RawSample]:
        path, stem, groups, row = part.locator
        with pq.ParquetFile(path) as table:
            for batch in table.iter_batches(batch_size=_BATCH_ROWS, row_groups=list(groups), columns=self.columns.names()):
                yield from self.columns.samples(batch, row, stem, Path(path).parent)
                row += batch.num_rows

    def describe(self) -> dict:
        return {"kind": self.kind, "input": self.input, "files": self.files, "items": self.items,
                "parts": len(self.part_list), "image_column": self.columns.image,
                "caption_column": self.columns.caption, "key_column": self.columns.key, "tokens": self.columns.tokens}


def _parquet_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise TokalignError(f"parquet input {root} does not exist; pass a .parquet file or a folder of them")
    files = sorted((p for p in root.rglob("*.parquet") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise TokalignError(f"folder {root} has no .parquet files; pass a .parquet file or a folder of them")
    return files


def _parquet_meta(path: Path) -> pq.FileMetaData:
    try:
        return pq.read_metadata(path)
    except (pa.ArrowException, OSError) as exc:
        raise TokalignError(f"{path} is not a readable parquet file ({type(exc).__name__}); "
                            "pass parquet files written by pyarrow, pandas or Hugging Face") from None


def _row_group_parts(first: int, path: Path, stem: str, sizes: list[int], part_size: int) -> list[Part]:
    """Consecutive row groups gathered while they fit in ``part_size`` rows (a part has at least one group)."""
    groups: list[list[int]] = []
    rows = 0
    for g, size in enumerate(sizes):
        if not groups or rows + size > part_size:
            groups.append([])
            rows = 0
        groups[-1].append(g)
        rows += size
    parts, start, stat = [], 0, _stat(path)
    for run in groups:
        stop = start + sum(sizes[g] for g in run)
        fingerprint = {**stat, "row_groups": run, "rows": [start, stop]}
        parts.append(Part(first + len(parts), f"{stem}[{start}:{stop}]", fingerprint, (str(path), stem, tuple(run), start)))
        start = stop
    return parts


@dataclass(frozen=True)
class HFDiskSource:
    """A dataset written by ``datasets.Dataset.save_to_disk`` (one split of a ``DatasetDict``)."""

    input: str
    split: str | None
    columns: Columns
    files: int
    items: int
    part_list: tuple[Part, ...]
    kind: ClassVar[str] = "hf"

    @classmethod
    def open(cls, spec: SourceSpec) -> "HFDiskSource":
        folder, split = _split_folder(Path(spec.input), spec.split)
        names, features = _saved_layout(folder)
        columns, parts, items = None, [], 0
        for name in names:
            path = folder / name
            schema, rows = _stream_shape(path)
            if columns is None:
                columns = Columns.choose(schema, spec, str(path), features or _hf_features(schema))
            columns.check(schema, str(path))
            stat, stem = _stat(path), Path(name).with_suffix("").as_posix()
            for start in range(0, rows, spec.part_size):
                stop = min(rows, start + spec.part_size)
                parts.append(Part(len(parts), f"{stem}[{start}:{stop}]", {**stat, "rows": [start, stop]},
                                  (str(path), stem, start, stop)))
            items += rows
        if not items:
            raise TokalignError(f"saved dataset {folder} has no rows; pass a dataset that holds image-caption rows")
        log.info("saved dataset %s: %d files, %d rows, %d parts", folder, len(names), items, len(parts))
        return cls(str(folder), split, columns, len(names), items, tuple(parts))

    def parts(self) -> list[Part]:
        return list(self.part_list)

    def read(self, part: Part) -> Iterator[RawSample]:
        return _unique(self._rows(part), part)

    def _rows(self, part: Part) -> Iterator[RawSample]:
        path, stem, start, stop = part.locator
        row = 0
        with pa.memory_map(path) as source:
            for batch in pa.ipc.open_stream(source):
                lo, hi = max(start, row), min(stop, row + batch.num_rows)
                if lo < hi:
                    yield from self.columns.samples(batch.slice(lo - row, hi - lo), lo, stem, Path(path).parent)
                row += batch.num_rows
                if row >= stop:
                    return

    def describe(self) -> dict:
        return {"kind": self.kind, "input": self.input, "split": self.split, "files": self.files, "items": self.items,
                "parts": len(self.part_list), "image_column": self.columns.image,
                "caption_column": self.columns.caption, "key_column": self.columns.key, "tokens": self.columns.tokens}


def _split_folder(root: Path, split: str | None) -> tuple[Path, str | None]:
    """The folder of the dataset to read: ``root`` itself, or its ``split`` when it is a DatasetDict."""
    if not root.is_dir():
        raise TokalignError(f"saved dataset {root} does not exist; pass the folder save_to_disk wrote")
    if not (root / "dataset_dict.json").is_file():
        if split is not None:
            raise TokalignError(f"saved dataset {root} is a single dataset without splits; drop --split")
        return root, None
    splits = _json(root / "dataset_dict.json").get("splits") or []
    split = split or "train"
    if split not in splits or not (root / split).is_dir():
        raise TokalignError(f"saved dataset {root} has no split {split!r}; its splits are "
                            f"{', '.join(map(str, splits)) or 'none'}; pass --split NAME")
    return root / split, split


def _saved_layout(folder: Path) -> tuple[list[str], dict]:
    """The Arrow file names ``state.json`` lists, and the features ``dataset_info.json`` declares."""
    if not (folder / "state.json").is_file():
        raise TokalignError(f"{folder} has no state.json, so it is not a dataset saved with save_to_disk; "
                            "pass the folder save_to_disk wrote (or --input-format)")
    entries = _json(folder / "state.json").get("_data_files") or []
    names = [e.get("filename") for e in entries if isinstance(e, dict)]
    if not names or not all(isinstance(n, str) and (folder / n).is_file() for n in names):
        raise TokalignError(f"{folder}/state.json lists data files {names} that are missing; save the dataset again")
    info = _json(folder / "dataset_info.json") if (folder / "dataset_info.json").is_file() else {}
    features = info.get("features")
    return names, features if isinstance(features, dict) else {}


def _stream_shape(path: Path) -> tuple[pa.Schema, int]:
    """The schema and row count of an Arrow IPC stream file (memory-mapped: only batch headers are touched)."""
    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_stream(source)
            return reader.schema, sum(batch.num_rows for batch in reader)
    except (pa.ArrowException, OSError) as exc:
        raise TokalignError(f"{path} is not a readable Arrow stream ({type(exc).__name__}); save the dataset again "
                            "with save_to_disk") from None


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise TokalignError(f"{path} is not valid JSON ({type(exc).__name__}); save the dataset again") from None
    return value if isinstance(value, dict) else {}
