"""Export a fitted run for use elsewhere: a registry of targets, and the ``generator-init`` file.

:data:`EXPORT_TARGETS` maps a target name to a function ``(ExportConfig) ->
ExportResult``; add one with ``@export_target("name")``.  :func:`export_run`
looks the target up and runs it.  Importing this module is cheap (torch is
imported when a target runs).

``generator-init`` (the format, its reader and the vocabulary layout live in
:mod:`tokalign.align.formats.generator_init`) holds the image rows and the
structure-token rows that extend an LM's vocabulary.

**Rescaling the image rows** (``rescale``).  The fit sees only normalized
bag means ``normalize(h @ E_img)``, so its loss is exactly invariant to
multiplying the whole table by one positive factor, but not to rescaling
rows one by one: a row's norm sets its weight inside every bag mean.  The
default, ``global``, therefore multiplies the whole table by the one factor
that gives its rows the LM embeddings' mean row norm; what the fit computed is
unchanged and the rows sit at the scale the LM's layers expect.  ``per-row``
instead sets every row to that mean norm (directions only), which matches the
LM's typical norm row by row but discards the relative weights the fit learned.

**Special rows** (``special``, recorded as ``special_init``).  :data:`SPECIAL_MODES` says how the 7
structure rows (``<doc>``, ``<text>`` ...) start.  The default, ``mean``, gives each the mean of the LM's rows,
as Hugging Face's mean resizing gives new rows, so an aligned init differs from ``mean`` in its image rows only.
The identical rows specialize in the generator's first steps (they sit at different positions with different
targets).  ``gaussian``, the behaviour before, draws each from a diagonal Gaussian fitted to the LM's rows
(per-dimension mean and standard deviation; a torch generator seeded with ``seed``), scaled to the LM's mean
row norm: distinct typical rows.  What each does at step 0 is measured in the README (step-0 section): on the
tests' tiny LLaMAs the Gaussian rows before the caption and the image raise both the caption and the image loss;
on SmolLM2 they give a lower caption loss inside the sequences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tokalign.align.errors import TokalignError
from tokalign.align.fit.guards import check_seed
from tokalign.align.formats import generator_init as gi
from tokalign.align.formats import outputs
from tokalign.align.formats import run_folder as rd
from tokalign.align.formats.hashing import tensors_sha256
from tokalign.align.training.settings import option_help as _help

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

RESCALE_MODES = ("global", "per-row")
SPECIAL_MODES = ("mean", "gaussian")  #: how the structure rows start (module docstring; special_token_rows)
#: recorded in every generator-init file: its rows are input rows; the generator's ``--head`` sets the output rows
EXPORT_VARIANT = {"rows": "input", "output_rows": "set by `tokalign generator train --head` (default calibrated; "
                                                  "tied reuses these rows as output rows, the behaviour before)"}
_TARGET_FORMATS = {gi.TARGET: gi.FORMAT}  # the file format each target writes (an existing one is replaced)


@dataclass(frozen=True)
class ExportConfig:
    run: Path = field(metadata=_help("Run folder written by `tokalign fit`."))
    out: Path = field(metadata=_help("File to write (e.g. init.safetensors); written atomically."))
    #: one of :data:`EXPORT_TARGETS` (its help names the one registered below; list a new one there too)
    target: str = field(default="generator-init", metadata=_help(f"Export target: {gi.TARGET}."))
    #: generator-init: "global" or "per-row" (module docstring)
    rescale: str = field(default="global", metadata=_help(
        "generator-init: scale the whole table to the LM's mean row norm (keeps what the fit learned), or each row."))
    #: generator-init: one of SPECIAL_MODES (module docstring)
    special: str = field(default="mean", metadata=_help(
        "generator-init: structure-token rows: the LM's mean row (as HF's mean resizing), or seeded Gaussian draws "
        "(the behaviour before)."))
    seed: int = field(default=0, metadata=_help("generator-init: seed of the special-token rows (--special gaussian)."))
    #: replace an existing ``out`` that tokalign did not write (a file of the target's format always is)
    force: bool = field(default=False, metadata=_help(
        "Replace an existing --out file that tokalign did not write (an earlier export of the same target is always "
        "replaced)."))

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if self.rescale not in RESCALE_MODES:
            raise TokalignError(f"unknown rescale mode {self.rescale!r}; choose one of {', '.join(RESCALE_MODES)}")
        if self.special not in SPECIAL_MODES:
            raise TokalignError(f"unknown --special {self.special!r}; choose one of {', '.join(SPECIAL_MODES)}")


@dataclass(frozen=True)
class ExportResult:
    target: str
    out: Path
    metadata: dict[str, Any]  #: what was written, JSON fields decoded


ExportTarget = Callable[[ExportConfig], ExportResult]
EXPORT_TARGETS: dict[str, ExportTarget] = {}


def export_target(name: str) -> Callable[[ExportTarget], ExportTarget]:
    """Register an export target under ``name``."""
    def register(function: ExportTarget) -> ExportTarget:
        EXPORT_TARGETS[name] = function
        return function
    return register


def export_run(config: ExportConfig) -> ExportResult:
    """Run the export target ``config.target``; unknown targets are a one-line error."""
    target = EXPORT_TARGETS.get(config.target)
    if target is None:
        raise TokalignError(f"unknown export target {config.target!r}; choose one of: {', '.join(sorted(EXPORT_TARGETS))}")
    out, run = Path(config.out), Path(config.run)
    if out.is_dir():
        raise TokalignError(f"--out {out} is a folder; pass a file name such as {out / (config.target + '.safetensors')}")
    own = {run / name for name in (rd.CONFIG, rd.METRICS, rd.TABLE, rd.EVAL, rd.SUMMARY)}
    if out.resolve() in {p.resolve() for p in own} or run.resolve() / rd.LM in out.resolve().parents:
        raise TokalignError(f"--out {out} would overwrite a file of the run itself; write the export elsewhere")
    fmt = _TARGET_FORMATS.get(config.target, "tokalign-export")
    outputs.check_output_place(out, fmt, inputs=(run,))  # where it may land; a user's file: check_out, before writing
    return target(config)


def check_out(config: ExportConfig) -> None:
    """Every target calls this just before it writes (after reading the run): an existing ``out`` is replaced only
    when it is an export of the same format, or with ``force`` (the output rule)."""
    outputs.check_output_file(Path(config.out), _TARGET_FORMATS.get(config.target, "tokalign-export"),
                              inputs=(Path(config.run),), force=config.force)


# ------------------------------------------------------------------ generator-init: writing


@export_target(gi.TARGET)
def export_generator_init(config: ExportConfig) -> ExportResult:
    """Write the generator-init file of ``config.run`` to ``config.out`` (atomically)."""
    import torch

    table, table_meta, lm_info, embeddings = _read_run(Path(config.run))
    if not bool(torch.isfinite(table).all()):
        bad = int((~torch.isfinite(table)).any(dim=1).sum())
        raise TokalignError(f"the table of {config.run} has {bad} rows with NaN or infinite values (the fit diverged); "
                            "refit with a lower --lr, then export")
    image_rows, rescale = rescale_rows(table, embeddings, config.rescale)
    special_rows, special_init = special_token_rows(embeddings, len(gi.SPECIAL_TOKENS), config.seed, config.special)
    layout = gi.VocabLayout(int(embeddings.shape[0]), int(table.shape[0]))
    meta = {
        "lm": lm_info["identity"], "lm_spec": lm_info.get("spec", ""), "lm_embedding_sha256": lm_info["embedding_sha256"],
        "d_model": int(table.shape[1]), "image_tokenizer": table_meta.get("image_tokenizer", {}),
        "source_run": str(Path(config.run).resolve()), "source_table_sha256": tensors_sha256({"image_embeddings": table}),
        "source_steps": table_meta.get("steps", ""), "rescale": rescale, "special_init": special_init,
        "variant": EXPORT_VARIANT,
    }
    check_out(config)
    written = gi.write_generator_init(config.out, image_rows, special_rows, layout, meta)
    logger.debug("wrote generator-init rows (%d image, %d special) to %s", layout.codebook_size,
                 len(gi.SPECIAL_TOKENS), config.out)
    return ExportResult(gi.TARGET, Path(config.out), written)


def _read_run(run: Path):
    """(table, table metadata, lm.json, LM embeddings) of a finished run, checked against each other."""
    import torch

    if run.exists() and not run.is_dir():
        raise TokalignError(f"--run {run} is a file, not a run folder; pass the folder `tokalign fit --run` wrote")
    if not run.is_dir():
        raise TokalignError(f"run folder {run} does not exist; pass the folder `tokalign fit --run` wrote")
    rd.read_json(run / rd.CONFIG)
    table, table_meta = rd.read_table(run / rd.TABLE)
    lm_info = rd.read_lm_info(run)
    embeddings = rd.read_lm_embeddings(run, lm_info, verify=True)
    rd.check_table_matches_lm(run, table, table_meta, lm_info, embeddings)
    return torch.from_numpy(table.copy()), table_meta, lm_info, torch.from_numpy(embeddings.copy())


def _norm_stats(rows: "torch.Tensor") -> dict[str, float]:
    norms = rows.norm(dim=1)
    return {"mean": float(norms.mean()), "std": float(norms.std()) if len(norms) > 1 else 0.0}


def rescale_rows(table: "torch.Tensor", lm_embeddings: "torch.Tensor", mode: str) -> tuple["torch.Tensor", dict]:
    """Image rows at the LM embeddings' norm scale (module docstring) and a JSON record of what was done."""
    target = lm_embeddings.norm(dim=1).mean()
    norms = table.norm(dim=1)
    if mode == "global":
        factor = target / norms.mean().clamp_min(1e-12)
        rows = table * factor
    elif mode == "per-row":
        factor = None
        rows = table / norms.clamp_min(1e-12)[:, None] * target
    else:
        raise TokalignError(f"unknown rescale mode {mode!r}; choose one of {', '.join(RESCALE_MODES)}")
    record = {"method": mode, "factor": None if factor is None else float(factor), "lm_row_norm": _norm_stats(lm_embeddings),
              "table_row_norm": _norm_stats(table), "result_row_norm": _norm_stats(rows)}
    return rows, record


def special_token_rows(lm_embeddings: "torch.Tensor", count: int, seed: int,
                       mode: str) -> tuple["torch.Tensor", dict]:
    """``count`` structure rows by ``mode`` (module docstring) and a JSON record of what was done.

    ``gaussian`` (also the ``random-rows`` init's rule): draws from a diagonal Gaussian fitted to the LM rows, at
    the LM's mean row norm; ``mean``: copies of the LM's mean row."""
    import torch

    if mode == "mean":
        mean = lm_embeddings.float().mean(dim=0)
        return mean.expand(count, -1).clone(), {"method": "lm-mean-row", "row_norm": float(mean.norm())}
    if mode != "gaussian":
        raise TokalignError(f"unknown --special {mode!r}; choose one of {', '.join(SPECIAL_MODES)}")
    generator = torch.Generator().manual_seed(int(seed))
    mean, std = lm_embeddings.mean(dim=0), lm_embeddings.std(dim=0)
    draws = mean + std * torch.randn(count, lm_embeddings.shape[1], generator=generator)
    target = lm_embeddings.norm(dim=1).mean()
    rows = draws / draws.norm(dim=1, keepdim=True).clamp_min(1e-12) * target
    return rows, {"method": "lm-diagonal-gaussian-at-mean-norm", "seed": int(seed), "row_norm": float(target)}
