"""The image rows a generator started from, by init mode (a registry), for the row-retention probe.

Each source returns :class:`InitRows` (the K image rows and the text rows their neighbours are searched among)
or raises a one-line error naming the fix; ``--init-from FILE`` (a generator-init file) overrides the mode:

* ``aligned``: the generator-init export the record names (``init.init_from.path``, checked against its
  recorded ``tensor_sha256``), text rows the base LM's.
* ``random-rows``: rebuilt exactly with the trainer's own draw (:func:`tokalign.generate.model.init_modes.
  lm_gaussian_rows`, the record's seed) from the base LM's rows; the base must be the LM the generator started
  from (embedding sha256 checked).
* ``mean``: every row is Hugging Face's mean resizing, the mean of the base LM's rows plus a draw of scale
  ~1e-5 of the rows' spread; the probe uses the mean itself (the draw is not kept), so cosines are ~1 at step 0.
* ``scratch``: the text rows were re-initialized too, so there is no pretrained neighbourhood to keep: the
  probe reports why and skips the image rows unless ``--init-from`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tokalign.align.errors import TokalignError
from tokalign.align.formats.generator_init import read_generator_init
from tokalign.generate.model_folder import GeneratorRecord


@dataclass(frozen=True)
class InitRows:
    image_rows: np.ndarray  #: (K, d) float32
    text_rows: np.ndarray  #: (V, d) float32, what the init's image rows sit among
    source: str  #: how they were obtained, written into the output


#: mode -> source(record, base text rows, base embedding sha256) -> rows, or a reason the probe does not apply
SOURCES: dict[str, Callable[[GeneratorRecord, np.ndarray, str], "InitRows | str"]] = {}


def source(mode: str):
    def register(function):
        SOURCES[mode] = function
        return function
    return register


def init_rows(record: GeneratorRecord, base_text: np.ndarray, base_sha: str, init_from: Path | None) -> InitRows | str:
    """The init rows of ``record`` (module docstring), or why there are none; ``base_text``: the base LM's rows."""
    if init_from is not None:
        return _from_export(record, Path(init_from), base_text, "--init-from")
    check_source(record, None)
    return SOURCES[record.init["mode"]](record, base_text, base_sha)


def check_source(record: GeneratorRecord, init_from: Path | None) -> None:
    """The cheap checks of :func:`init_rows` (mode known, recorded file present), run before any model loads."""
    if init_from is not None:
        return
    mode = record.init.get("mode")
    if mode not in SOURCES:
        raise TokalignError(f"the generator's record names init mode {mode!r}, which the probe cannot rebuild; pass "
                            "--init-from FILE (the generator-init file its image rows started from)")
    if mode == "aligned":
        _recorded_export(record)


def _recorded_export(record: GeneratorRecord) -> tuple[Path, str | None]:
    recorded = record.init.get("init_from") or {}
    path = recorded.get("path") if isinstance(recorded, dict) else recorded
    if not path:
        raise TokalignError("the generator's record names no generator-init file; pass --init-from FILE")
    if not Path(path).is_file():
        raise TokalignError(f"the generator started from {path}, which is gone; pass --init-from FILE where it moved to")
    return Path(path), (recorded.get("tensor_sha256") if isinstance(recorded, dict) else None)


def _from_export(record: GeneratorRecord, path: Path, base_text: np.ndarray, how: str) -> InitRows:
    export = read_generator_init(path, codebook_size=record.layout.codebook_size, d_model=int(base_text.shape[1]))
    lm_sha = recorded_base(record)[1]
    if lm_sha and export.metadata["lm_embedding_sha256"] != lm_sha:
        raise TokalignError(f"{path} was exported for another LM than the one the generator started from (embedding "
                            f"sha256 {export.metadata['lm_embedding_sha256'][:12]} vs {lm_sha[:12]}); pass the "
                            "generator-init file it was trained from")
    return InitRows(export.image_rows.numpy(), base_text, f"generator-init {path} ({how})")


@source("aligned")
def _aligned(record: GeneratorRecord, base_text: np.ndarray, base_sha: str) -> InitRows:
    path, want = _recorded_export(record)
    rows = _from_export(record, path, base_text, "the record's init")
    if want:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            have = (handle.metadata() or {}).get("tensor_sha256")
        if have != want:
            raise TokalignError(f"{path} is not the file the generator started from (tensor sha256 {str(have)[:12]}, "
                                f"the record says {want[:12]}); pass --init-from FILE with that file")
    return rows


@source("random-rows")
def _random_rows(record: GeneratorRecord, base_text: np.ndarray, base_sha: str) -> InitRows:
    import torch

    from tokalign.generate.model.init_modes import lm_gaussian_rows

    _same_base(record, base_sha, "random-rows")
    seed = int(record.init.get("seed", 0))
    layout = record.layout
    rows = lm_gaussian_rows(torch.from_numpy(base_text), layout.used_rows - layout.text_rows, seed)
    return InitRows(rows[:layout.codebook_size].numpy(), base_text, f"random-rows rebuilt (seed {seed})")


@source("mean")
def _mean(record: GeneratorRecord, base_text: np.ndarray, base_sha: str) -> InitRows:
    _same_base(record, base_sha, "mean")
    mean = base_text.astype(np.float64).mean(axis=0).astype(np.float32)
    rows = np.broadcast_to(mean, (record.layout.codebook_size, base_text.shape[1])).copy()
    return InitRows(rows, base_text, "mean of the base LM's rows (HF mean resizing without its ~1e-5 draw)")


@source("scratch")
def _scratch(record: GeneratorRecord, base_text: np.ndarray, base_sha: str) -> str:
    return ("trained from scratch: its text rows were re-initialized too, so its image rows have no pretrained "
            "neighbourhood to keep (pass --init-from FILE to compare with an export)")


def _same_base(record: GeneratorRecord, base_sha: str, mode: str) -> None:
    want = recorded_base(record)[1]
    if want and want != base_sha:
        raise TokalignError(f"--base is not the LM the generator started from (embedding sha256 {base_sha[:12]}, the "
                            f"record says {want[:12]}), so its {mode} rows cannot be rebuilt; pass that LM as --base")


def recorded_base(record: GeneratorRecord) -> tuple[str | None, str | None]:
    """(spec, embedding sha256) of the LM the generator started from, from its record."""
    for where in (record.base_lm, record.init.get("base_lm") or {}):
        if isinstance(where, dict) and (where.get("spec") or where.get("embedding_sha256")):
            return where.get("spec"), where.get("embedding_sha256")
    return None, None
