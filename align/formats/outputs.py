"""The output rule: may this command write here?  One helper, used by every tokalign writer.

Rule.  A command never deletes or overwrites what it did not write:

* a **folder output** (a run, a corpus, a report, a decode folder, a generator run/model/sample folder) is
  written only when it is missing, empty, or recognisably the command's own kind of output: it holds the
  marker file :data:`MARKER` naming that kind, or a legacy signature of the kind (a corpus manifest, a fit's
  ``config.json``, ``report.json``).  Any other non-empty folder (the user's files, or another kind of
  tokalign output) is refused with one line naming another path: no option replaces it, ``--force``
  included (a command's ``--force`` only rebuilds its own kind of output, which the caller decides with
  :attr:`Claim.state`).  Never allowed either: the current folder or one of its ancestors (``--out .``), a
  folder that is, contains or lies inside one of ``inputs``, a folder that is or contains one of ``keep``
  (``report --out RUN``), and a path below a file.
* a **file output** (``export --out``, ``neighbors --show``) never lands on a folder, on one of the inputs,
  or on an existing file that another tokalign artifact owns: a tokalign safetensors/JSON/PNG file of another
  format, or a reserved name inside a tokalign folder (``RUN/table.safetensors``, ``RUN/checkpoints/...``,
  ``CORPUS/manifest.json``, the marker and lock files).  A file of the command's own format (the format it
  declares in its safetensors metadata, JSON ``format`` field or PNG text chunk) is replaced; any other existing
  file (the user's) is refused in one line unless ``force`` (a command's ``--force``), which is logged.
* a folder that a command **replaces or clears** keeps the entries its kind does not own
  (:func:`foreign_entries`), or refuses over them (:func:`check_no_foreign`).

API (what run, model and sample folders are claimed, marked and checked with)::

    claim = claim_output_dir(path, kind, inputs=(), keep=(), option="--out")
    # -> Claim(path, state) with state "new" | "empty" | "own"; raises TokalignError otherwise
    write_marker(folder, kind)        # mark a folder as this kind's output (atomic; idempotent)
    check_output_file(path, fmt, inputs=(), option="--out", force=False)   # -> Path; raises TokalignError
    check_output_place(path, fmt, inputs=(), option="--out")   # the same, less the user-file rule (a pre-check)

Kinds are plain strings (:data:`FIT_RUN`, :data:`CORPUS`, :data:`REPORT`, :data:`DECODE`, or any
``"generator-..."`` name); :func:`folder_kind` tells what a folder is.  This module spells no other format's
file names: each format declares the names its kind owns and its legacy signature with :func:`register_kind`.  For folders written in place by a
long-running command, :func:`tokalign.align.formats.lock.writing_folder` combines the claim with the
exclusive lock and the marker.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from tokalign.align.errors import TokalignError
from tokalign.align.formats import atomic

log = logging.getLogger(__name__)

MARKER = ".tokalign.json"
MARKER_FORMAT = "tokalign-output"
LOCK = ".tokalign.lock"
FIT_RUN, CORPUS, REPORT, DECODE = "fit-run", "corpus", "report", "decode"
GENERATOR_MODEL = "generator-model"  # a saved generator folder (everything inside is its own)
INTERNAL = (MARKER, LOCK)  # files that never make a folder "non-empty" on their own


@dataclass(frozen=True)
class Signature:
    """How a folder written before markers existed shows its kind: JSON file ``record`` whose ``field`` passes
    ``test``."""

    kind: str
    record: str
    field: str
    test: Callable[[object], bool]


# Each format declares its own names here (:func:`register_kind`), from its own module; the modules below are
# imported the first time a folder's kind or owned names are asked for, in this order (the order signatures are
# tried in).
_PROVIDERS = ("tokalign.align.formats.corpus", "tokalign.align.tokenize.state", "tokalign.align.formats.run_folder",
              "tokalign.probes.report", "tokalign.generate.train.run_folder", "tokalign.generate.model_folder")
# names each kind owns inside its folder (a file output may not land on them); None = everything inside
_OWNED: dict[str, frozenset[str] | None] = {REPORT: None, DECODE: frozenset()}
_SIGNATURES: list[Signature] = []
_loaded: list[bool] = []


def register_kind(kind: str, *, owned: Iterable[str] | None = None,
                  signature: tuple[str, str, Callable] | None = None) -> None:
    """A format declares the names ``kind`` owns in its folder (a kind that declares none owns everything inside)
    and, for folders written before markers existed, its record file, the field and the test that recognise it."""
    if owned is not None:
        _OWNED[kind] = frozenset(_OWNED.get(kind) or ()) | frozenset(owned)
    if signature is not None and not any(s.kind == kind and s.record == signature[0] for s in _SIGNATURES):
        _SIGNATURES.append(Signature(kind, *signature))


def _registry() -> tuple[dict[str, frozenset[str] | None], list[Signature]]:
    if not _loaded:
        import importlib

        _loaded.append(True)
        for name in _PROVIDERS:
            try:
                importlib.import_module(name)
            except ImportError:  # a format whose package is not installed declares nothing
                log.debug("no output kinds from %s", name)
    return _OWNED, _SIGNATURES


def owned_names(kind: str) -> frozenset[str] | None:
    """The names ``kind`` owns inside its folder (None: everything)."""
    return _registry()[0].get(kind)


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim_output_dir`: the path and what was there ("new", "empty", "own")."""

    path: Path
    state: str

    @property
    def existed(self) -> bool:
        return self.state != "new"


# ------------------------------------------------------------------ what a folder is
def read_marker(folder: Path) -> dict | None:
    """The marker's content when ``folder`` holds a readable tokalign marker, else None."""
    try:
        body = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) and body.get("format") == MARKER_FORMAT else None


def write_marker(folder: Path, kind: str, **extra) -> None:
    """Mark ``folder`` as ``kind``'s output, with ``extra`` JSON fields (kept fields of the same kind stay).

    Rewritten (atomically) only when the content changes.
    """
    old = read_marker(folder)
    kept = old if old is not None and old.get("kind") == kind else {}
    body = {**kept, "format": MARKER_FORMAT, "kind": kind, **json.loads(json.dumps(extra))}
    if body != old:
        atomic.write_json(Path(folder) / MARKER, body)


def _json_field(path: Path, field: str) -> object:
    try:
        if path.stat().st_size > 1 << 22:
            return None
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return body.get(field) if isinstance(body, dict) else None


def folder_kind(folder: Path) -> str | None:
    """What tokalign output ``folder`` is (marker first, then the legacy signatures), or None."""
    folder = Path(folder)
    marker = read_marker(folder)
    if marker is not None:
        return str(marker.get("kind"))
    for signature in _registry()[1]:
        if signature.test(_json_field(folder / signature.record, signature.field)):
            return signature.kind
    return None


def user_entries(folder: Path) -> list[str]:
    """The names in ``folder`` other than tokalign's marker, lock and atomic-write leftovers (sorted)."""
    return sorted(name for name in os.listdir(folder) if name not in INTERNAL and not atomic.is_temp_name(name))


def foreign_entries(folder: Path, kind: str) -> list[str]:
    """The entries of ``folder`` that ``kind`` does not own (files a user put there); [] when it owns everything."""
    owned = owned_names(kind)
    if owned is None or not Path(folder).is_dir():
        return []
    return [name for name in user_entries(folder) if name not in owned]


def check_no_foreign(folder: Path, kind: str, option: str = "--out") -> None:
    """Refuse (one line) to replace folder ``folder`` wholesale while it holds entries ``kind`` did not write."""
    foreign = foreign_entries(folder, kind)
    if foreign:
        raise TokalignError(f"{option} {folder} holds files tokalign did not write ({_sample(foreign)}); move them "
                            f"out of the folder, or choose another {option}: tokalign never deletes them")


# ------------------------------------------------------------------ folders
def _below_file(path: Path) -> Path | None:
    for parent in path.parents:
        if parent.exists():
            return parent if not parent.is_dir() else None
    return None


def _related(a: Path, b: Path) -> str | None:
    """How resolved ``a`` relates to ``b``: "is", "contains", "inside", or None."""
    if a == b:
        return "is"
    if a in b.parents:
        return "contains"
    if b in a.parents:
        return "inside"
    return None


def check_location(path: Path, *, inputs: Iterable[Path] = (), keep: Iterable[Path] = (), option: str = "--out") -> Path:
    """The checks no ``--force`` lifts: not the current folder (or above), not below a file, clear of the inputs."""
    path = Path(path)
    resolved = path.resolve()
    fix = f"choose another {option}"
    blocker = _below_file(path)
    if blocker is not None:
        raise TokalignError(f"{option} {path} lies below {blocker}, which is a file, not a folder; {fix}")
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise TokalignError(f"{option} {path} is the current folder{'' if resolved == cwd else ' or above it'}; "
                            f"pass a new subfolder such as {path / 'out'}")
    for given in inputs:
        how = _related(resolved, Path(given).resolve())
        if how is not None:
            raise TokalignError(f"{option} {path} {how} the input {given}; {fix} outside the input")
    for given in keep:
        how = _related(resolved, Path(given).resolve())
        if how in ("is", "contains"):
            raise TokalignError(f"{option} {path} {how} {given}, which this command reads and must keep; {fix}")
    return path


def claim_output_dir(path: Path, kind: str, *, inputs: Iterable[Path] = (), keep: Iterable[Path] = (),
                     option: str = "--out") -> Claim:
    """May ``kind`` write folder ``path``?  Returns the :class:`Claim`; raises ``TokalignError`` when not.

    Nothing is created or changed here.
    """
    path = check_location(Path(path), inputs=inputs, keep=keep, option=option)
    if not path.exists():
        return Claim(path, "new")
    if not path.is_dir():
        raise TokalignError(f"{option} {path} is a file, not a folder; pass a new or empty folder (or another {option})")
    entries = user_entries(path)
    if not entries:
        return Claim(path, "empty")
    found = folder_kind(path)
    if found == kind:
        return Claim(path, "own")
    what = f"a tokalign {found}" if found else f"not a tokalign {kind} folder (it holds {_sample(entries)})"
    raise TokalignError(f"{option} {path} is not empty and is {what}; choose another {option} (a new or empty "
                        "folder): tokalign never replaces files it did not write")


def _sample(entries: list[str]) -> str:
    shown = ", ".join(repr(e) for e in entries[:3])
    return shown + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")


# ------------------------------------------------------------------ files
def file_format(path: Path) -> str | None:
    """The tokalign format a file declares (safetensors metadata, JSON ``format`` field, PNG text chunk
    ``format``), or None."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            with open(path, "rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                if not 0 < size <= 1 << 24:
                    return None
                header = json.loads(handle.read(size))
            value = (header.get("__metadata__") or {}).get("format")
        elif path.suffix in (".json", ".jsonl"):
            value = _json_field(path, "format")
        elif path.suffix.lower() == ".png":
            value = png_text(path).get(PNG_FORMAT_KEY)
        else:
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value.startswith("tokalign") else None


PNG_FORMAT_KEY = "format"  #: the PNG ``tEXt`` keyword a tokalign PNG declares its format under
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_text(path: Path, limit: int = 1 << 16) -> dict[str, str]:
    """The ``tEXt`` chunks of a PNG before its image data (keyword -> text); {} for anything else."""
    found: dict[str, str] = {}
    with open(path, "rb") as handle:
        if handle.read(8) != _PNG_SIGNATURE:
            return found
        while True:
            head = handle.read(8)
            if len(head) < 8:
                return found
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind in (b"IDAT", b"IEND") or length > limit:
                return found
            body = handle.read(length)
            handle.seek(4, os.SEEK_CUR)  # the CRC
            if kind == b"tEXt" and b"\0" in body:
                key, _, text = body.partition(b"\0")
                found[key.decode("latin-1")] = text.decode("latin-1")


def owner_of(path: Path) -> str | None:
    """The tokalign artifact that owns existing file ``path`` by name: "<kind> folder DIR", or None."""
    path = Path(path).resolve()
    if path.name in INTERNAL:
        return f"tokalign's bookkeeping in {path.parent}"
    for depth, folder in enumerate(path.parents):
        if depth > 4:
            break
        kind = folder_kind(folder)
        if kind is None:
            continue
        top = path.relative_to(folder).parts[0]
        owned = owned_names(kind)
        if owned is None or top in owned:
            return f"the tokalign {kind} {folder}"
    return None


def check_output_file(path: Path, fmt: str | None = None, *, inputs: Iterable[Path] = (), option: str = "--out",
                      force: bool | None = False) -> Path:
    """May a command write file ``path`` (its own format ``fmt``, e.g. "tokalign-generator-init")?  Returns the path.

    Refused: what :func:`check_output_place` refuses; and with ``fmt`` (a format that carries its mark, which every
    tokalign writer declares) an existing file that does not declare ``fmt`` is the user's: refused unless
    ``force`` (logged as a warning; ``None``: the command has no ``--force``).  ``fmt=None`` marks a format that
    carries no mark: then only files another tokalign artifact owns are refused.
    """
    path = check_output_place(path, fmt, inputs=inputs, option=option)
    if fmt is None or (not path.exists() and not path.is_symlink()):
        return path
    if path.is_file() and file_format(path) == fmt:
        return path  # a file of the command's own format: replaced
    if not force:
        hint = "" if force is None else " (or pass --force to replace it)"
        raise TokalignError(f"{option} {path} already exists and tokalign did not write it; choose another {option}{hint}")
    log.warning("replacing %s, which tokalign did not write (--force)", path)
    return path


def check_output_place(path: Path, fmt: str | None = None, *, inputs: Iterable[Path] = (), option: str = "--out") -> Path:
    """Where file ``path`` may land: not a folder, not below a file, not one of ``inputs``, not an existing file
    that another tokalign artifact owns (:func:`file_format` other than ``fmt``, or :func:`owner_of`)."""
    path = Path(path)
    if path.is_dir():
        raise TokalignError(f"{option} {path} is a folder; pass a file name such as {path / 'out'}")
    blocker = _below_file(path)
    if blocker is not None:
        raise TokalignError(f"{option} {path} lies below {blocker}, which is a file, not a folder; choose another {option}")
    for given in inputs:
        if Path(given).resolve() == path.resolve():
            raise TokalignError(f"{option} {path} is the input {given}; write to another file")
    if not path.exists() and not path.is_symlink():
        return path
    declared = file_format(path) if path.is_file() else None
    if declared is not None and declared == fmt:
        return path
    owner = owner_of(path) or (f"a {declared} file" if declared is not None else None)
    if owner is not None:
        raise TokalignError(f"{option} {path} already exists and belongs to {owner}; choose another {option}")
    return path
