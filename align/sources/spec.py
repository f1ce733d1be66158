"""Input sources for ``tokalign tokenize``: which reader handles ``--input``, and the contract every reader keeps.

Formats (``--input-format``, detected when not given):

* ``webdataset``: tar shards in img2dataset's layout (``KEY.jpg|png|webp|...``
  with ``KEY.txt`` and/or ``KEY.json``), a path, a folder of ``*.tar``, or a
  brace pattern such as ``shards/{00000..00099}.tar`` (``webdataset.py``);
* ``folder``: image files with a ``captions.jsonl|csv`` (or Hugging Face
  ImageFolder's ``metadata.jsonl|csv``) mapping file names to captions
  (``folder.py``);
* ``parquet``: a parquet file, or a folder of them, with an image column and a
  caption column (``table.py``);
* ``hf``: a Hugging Face dataset saved with ``save_to_disk`` (Arrow files),
  read with pyarrow, no ``datasets`` needed (``table.py``);
* ``npy``: one ``.npy`` array of pretokenized image tokens (N, L) with a
  captions file, row i to line i (``npy.py``).

Every reader is a picklable object (DataLoader workers receive it) with:

* ``kind``: the format name above;
* ``parts() -> list[Part]``: the input cut into parts, deterministic and
  cheap (no image decoding); indices 0..n-1 in order;
* ``read(part) -> Iterator[RawSample]``: the part's samples in a fixed
  order; every input item appears exactly once, as a sample (possibly with
  ``image``/``caption`` None or ``skip`` set), never dropped silently;
* ``describe() -> dict``: JSON for the manifest's ``source`` field.

A reader raises ``TokalignError`` (one line, with the fix) when the input as a
whole is unusable: missing, empty, or without the columns/files it needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

from tokalign.align.errors import TokalignError
from tokalign.align.sources.samples import Part, RawSample

FORMATS = ("webdataset", "folder", "parquet", "hf", "npy")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class SourceSpec:
    """Where the input is and how to read it; validated at construction."""

    input: str
    format: str | None = None  # one of FORMATS; None = detect
    image_column: str | None = None  # parquet/hf: column with image bytes (or token lists); None = detect
    caption_column: str | None = None  # parquet/hf: caption column; None = detect
    captions_file: str | None = None  # folder/npy: captions file; None = detect inside the folder
    split: str | None = None  # hf DatasetDict: which split (default "train")
    part_size: int = 8192  # folder/parquet/hf/npy: items per part (a tar is always one part)
    tokens: bool = False  # pretokenized input: read token arrays (.npy members/files, list columns) instead of images

    def __post_init__(self) -> None:
        if not str(self.input).strip():
            raise TokalignError("--input is empty; pass a tar shard pattern, an image folder, a parquet file or a saved dataset")
        if self.format is not None and self.format not in FORMATS:
            raise TokalignError(f"--input-format {self.format!r} is unknown; use one of {', '.join(FORMATS)}")
        if self.part_size < 1:
            raise TokalignError(f"--shard-size {self.part_size} must be at least 1")


class Source(Protocol):
    kind: str

    def parts(self) -> list[Part]: ...

    def read(self, part: Part) -> Iterator[RawSample]: ...

    def describe(self) -> dict: ...


def is_remote(spec: str) -> bool:
    return spec.startswith(("pipe:", "http://", "https://", "gs://", "s3://"))


def detect_format(spec: SourceSpec) -> str:
    """The input's format: the one given, or the one its path says."""
    if spec.format:
        return spec.format
    text = str(spec.input)
    if is_remote(text) or "{" in text or text.endswith(_TAR_SUFFIXES):
        return "webdataset"
    path = Path(text)
    if not path.exists():
        raise TokalignError(f"--input {text} does not exist; pass an existing file, folder or brace pattern")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return "parquet"
        if suffix == ".npy":
            return "npy"
        raise TokalignError(f"cannot tell the format of {text}; pass --input-format ({', '.join(FORMATS)})")
    names = set(os.listdir(path))
    if names & set(_HF_MARKERS):
        return "hf"
    if any(n.endswith(_TAR_SUFFIXES) for n in names):
        return "webdataset"
    if any(n.endswith(".parquet") for n in names):
        return "parquet"
    return "folder"


def open_source(spec: SourceSpec) -> Source:
    """The reader for ``spec``; raises ``TokalignError`` when the input is missing or unusable."""
    kind = detect_format(spec)
    if kind == "webdataset":
        from tokalign.align.sources.webdataset import WebDatasetSource

        return WebDatasetSource.open(spec)
    if kind == "folder":
        from tokalign.align.sources.folder import FolderSource

        return FolderSource.open(spec)
    if kind == "parquet":
        from tokalign.align.sources.table import ParquetSource

        return ParquetSource.open(spec)
    if kind == "hf":
        from tokalign.align.sources.table import HFDiskSource

        return HFDiskSource.open(spec)
    from tokalign.align.sources.npy import NpySource

    return NpySource.open(spec)
