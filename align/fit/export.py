"""Export a fitted run for use elsewhere: a registry of targets, and the ``generator-init`` file.

:data:`EXPORT_TARGETS` maps a target name to a function ``(ExportConfig) ->
ExportResult``; add one with ``@export_target("name")``.  :func:`export_run`
looks the target up and runs it.  Importing this module is cheap (torch is
imported when a target runs).

``generator-init`` (format ``tokalign-generator-init``, version 1) is one
safetensors file with the rows a generator with an expanded vocabulary needs
beyond the LM's own.  Vocabulary layout, V = the LM's embedding rows, K = the
codebook size::

    0 .. V-1          text tokens: the LM's own rows, not stored here
    V .. V+K-1        image tokens: tensor ``image_rows`` (K, d_model) float32     (image_offset = V)
    V+K .. V+K+6      <doc> </doc> <text> </text> <image> </image> <pad>: tensor
                      ``special_rows`` (7, d_model) float32                         (special_offset = V+K)

Header metadata (strings; JSON where noted): ``format``, ``version``,
``target``, ``lm`` (JSON identity), ``lm_spec``, ``lm_embedding_sha256``
(``tensor_sha256`` of the LM matrix, verified at export), ``d_model``,
``text_vocab_size`` (V), ``image_offset``, ``codebook_size``,
``special_offset``, ``special_tokens`` (JSON name -> id), ``vocab_size``
(V+K+7), ``image_tokenizer`` (JSON identity), ``source_run``,
``source_table_sha256``, ``source_steps``, ``rescale`` and ``special_init``
(JSON, below), ``tensor_sha256`` (sha256 over each tensor's name, shape and
float32 little-endian bytes, in name order) and ``metadata_sha256`` (sha256 of
the other metadata as sorted JSON).  :func:`read_generator_init` verifies both.

**Rescaling the image rows** (``rescale``).  The fit sees only normalized
bag means ``normalize(h @ E_img)``, so its loss is exactly invariant to
multiplying the whole table by one positive factor, but not to rescaling
rows one by one: a row's norm sets its weight inside every bag mean.  The
default, ``global``, therefore multiplies the whole table by the one factor
that gives its rows the LM embeddings' mean row norm; what the fit computed is
unchanged and the rows sit at the scale the LM's layers expect.  ``per-row``
instead sets every row to that mean norm (directions only), which matches the
LM's typical norm row by row but discards the relative weights the fit learned.

**Special rows** (``special_init``).  Each of the 7 rows is a draw from a
diagonal Gaussian fitted to the LM's rows (per-dimension mean and standard
deviation; a torch generator seeded with ``seed``), scaled to the LM's mean
row norm: a typical, distinct token row that the generator's training then
specializes (unlike copies of the mean row, which start identical).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tokalign.align.formats import run_folder as rd
from tokalign.align.errors import TokalignError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

FORMAT = "tokalign-generator-init"
VERSION = "1"
SPECIAL_TOKENS = ("<doc>", "</doc>", "<text>", "</text>", "<image>", "</image>", "<pad>")
RESCALE_MODES = ("global", "per-row")
JSON_FIELDS = ("lm", "special_tokens", "image_tokenizer", "rescale", "special_init")
INT_FIELDS = ("d_model", "text_vocab_size", "image_offset", "codebook_size", "special_offset", "vocab_size")
CHECKSUMS = ("tensor_sha256", "metadata_sha256")


@dataclass(frozen=True)
class ExportConfig:
    run: Path
    out: Path
    target: str = "generator-init"
    rescale: str = "global"  #: generator-init: "global" or "per-row" (module docstring)
    seed: int = 0  #: generator-init: seed of the special-token rows

    def __post_init__(self) -> None:
        if self.rescale not in RESCALE_MODES:
            raise TokalignError(f"unknown rescale mode {self.rescale!r}; choose one of {', '.join(RESCALE_MODES)}")


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
    return target(config)


# ------------------------------------------------------------------ generator-init: writing


@export_target("generator-init")
def export_generator_init(config: ExportConfig) -> ExportResult:
    """Write the generator-init file of ``config.run`` to ``config.out`` (atomically)."""
    from tokalign.align.formats.atomic import save_safetensors

    table, table_meta, lm_info, embeddings = _read_run(Path(config.run))
    image_rows, rescale = rescale_rows(table, embeddings, config.rescale)
    special_rows, special_init = special_token_rows(embeddings, len(SPECIAL_TOKENS), config.seed)
    tensors = {"image_rows": image_rows.contiguous(), "special_rows": special_rows.contiguous()}
    rows, codebook = int(embeddings.shape[0]), int(table.shape[0])
    meta = {
        "format": FORMAT, "version": VERSION, "target": "generator-init", "lm": lm_info["identity"],
        "lm_spec": lm_info.get("spec", ""), "lm_embedding_sha256": lm_info["embedding_sha256"],
        "d_model": int(table.shape[1]), "text_vocab_size": rows, "image_offset": rows, "codebook_size": codebook,
        "special_offset": rows + codebook, "vocab_size": rows + codebook + len(SPECIAL_TOKENS),
        "special_tokens": {name: rows + codebook + i for i, name in enumerate(SPECIAL_TOKENS)},
        "image_tokenizer": table_meta.get("image_tokenizer", {}), "source_run": str(Path(config.run).resolve()),
        "source_table_sha256": tensors_sha256({"image_embeddings": table}), "source_steps": table_meta.get("steps", ""),
        "rescale": rescale, "special_init": special_init,
    }
    header = _encode_metadata(meta)
    header["tensor_sha256"] = tensors_sha256(tensors)
    header["metadata_sha256"] = metadata_sha256(header)
    save_safetensors(config.out, tensors, header)
    logger.debug("wrote generator-init rows (%d image, %d special) to %s", codebook, len(SPECIAL_TOKENS), config.out)
    return ExportResult("generator-init", Path(config.out), _decode_metadata(header, Path(config.out)))


def _read_run(run: Path):
    """(table, table metadata, lm.json, LM embeddings) of a finished run, checked against each other."""
    from safetensors.torch import load_file

    from tokalign.align.lm.load import EMBEDDING_KEY, tensor_sha256
    from tokalign.align.fit.table import load_table

    if not run.is_dir():
        raise TokalignError(f"run folder {run} does not exist; pass the folder `tokalign fit --run` wrote")
    rd.read_json(run / rd.CONFIG)
    table, table_meta = load_table(run / rd.TABLE)
    lm_info = rd.read_json(run / rd.LM / "lm.json")
    path = run / rd.LM / "embeddings.safetensors"
    try:
        embeddings = load_file(str(path))[EMBEDDING_KEY]
    except Exception as exc:  # missing, damaged, or without the expected tensor
        raise TokalignError(f"cannot read the run's LM embeddings {path} ({type(exc).__name__}); re-run `tokalign fit`") from None
    sha = tensor_sha256(embeddings)
    if sha != lm_info.get("embedding_sha256"):
        raise TokalignError(f"{path} fails its sha256 check against {run / rd.LM / 'lm.json'} (damaged); re-run `tokalign fit`")
    if table_meta.get("lm_embedding_sha256") != sha or table.shape[1] != embeddings.shape[1]:
        raise TokalignError(f"the table in {run} was fit against another LM than the one in its lm/ folder; re-run `tokalign fit`")
    return table.float(), table_meta, lm_info, embeddings.float()


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


def special_token_rows(lm_embeddings: "torch.Tensor", count: int, seed: int) -> tuple["torch.Tensor", dict]:
    """``count`` rows drawn from a diagonal Gaussian fitted to the LM rows, at the LM's mean row norm."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    mean, std = lm_embeddings.mean(dim=0), lm_embeddings.std(dim=0)
    draws = mean + std * torch.randn(count, lm_embeddings.shape[1], generator=generator)
    target = lm_embeddings.norm(dim=1).mean()
    rows = draws / draws.norm(dim=1, keepdim=True).clamp_min(1e-12) * target
    return rows, {"method": "lm-diagonal-gaussian-at-mean-norm", "seed": int(seed), "row_norm": float(target)}


# ------------------------------------------------------------------ checksums and metadata


def tensors_sha256(tensors: dict[str, "torch.Tensor"]) -> str:
    """sha256 over each tensor's name, shape and float32 little-endian bytes, in name order."""
    import numpy as np

    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name].detach().cpu().float().numpy(), dtype="<f4")
        digest.update(f"{name}:{list(array.shape)};".encode("utf-8"))
        digest.update(array.tobytes())
    return digest.hexdigest()


def metadata_sha256(header: dict[str, str]) -> str:
    body = {k: v for k, v in header.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _encode_metadata(meta: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v, sort_keys=True) if k in JSON_FIELDS else str(v) for k, v in meta.items()}


def _decode_metadata(header: dict[str, str], path: Path) -> dict[str, Any]:
    try:
        meta: dict[str, Any] = dict(header)
        for key in JSON_FIELDS:
            meta[key] = json.loads(header[key])
        meta["special_tokens"] = dict(sorted(meta["special_tokens"].items(), key=lambda item: int(item[1])))
        for key in INT_FIELDS:
            meta[key] = int(header[key])
        meta["lm_embedding_sha256"], meta["tensor_sha256"] = header["lm_embedding_sha256"], header["tensor_sha256"]
    except (KeyError, ValueError, TypeError) as exc:
        raise TokalignError(f"{path} has damaged metadata ({type(exc).__name__}: {exc}); export it again") from None
    return meta


# ------------------------------------------------------------------ generator-init: reading


@dataclass(frozen=True)
class GeneratorInit:
    """A generator-init file: the new rows and their vocabulary layout (see the module docstring)."""

    image_rows: "torch.Tensor"  #: (codebook_size, d_model) float32, ids image_offset ..
    special_rows: "torch.Tensor"  #: (7, d_model) float32, ids special_offset ..
    metadata: dict[str, Any]

    @property
    def image_offset(self) -> int:
        return self.metadata["image_offset"]

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self.metadata["special_tokens"])

    @property
    def vocab_size(self) -> int:
        return self.metadata["vocab_size"]

    def full_embeddings(self, lm_embeddings: "torch.Tensor") -> "torch.Tensor":
        """(vocab_size, d_model): the LM's rows, then the image rows, then the special rows."""
        import torch

        return torch.cat([lm_embeddings.float(), self.image_rows, self.special_rows])


def read_generator_init(path: str | os.PathLike, lm_embeddings: "torch.Tensor | None" = None, *,
                        lm_embedding_sha256: str | None = None, lm_identity: dict | None = None,
                        codebook_size: int | None = None, d_model: int | None = None) -> GeneratorInit:
    """Load a generator-init file, verify its checksums, and check it against what is given.

    ``lm_embeddings`` (the LM's input embedding matrix) checks d_model, the
    text vocabulary size and the matrix hash; ``lm_embedding_sha256`` and
    ``lm_identity`` (compared without its ``spec``) check the LM without the
    matrix; ``codebook_size`` the image tokenizer.  Any mismatch or damage is
    a one-line :class:`TokalignError`.
    """
    path = Path(path)
    image_rows, special_rows, header = _read_file(path)
    meta = _decode_metadata(header, path)
    _check_integrity(path, image_rows, special_rows, header, meta)
    expected_d = d_model if d_model is not None else (int(lm_embeddings.shape[1]) if lm_embeddings is not None else None)
    if expected_d is not None and expected_d != meta["d_model"]:
        raise TokalignError(f"{path} was exported for d_model {meta['d_model']}, this LM has {expected_d}: it belongs to "
                            "another LM; export again from a run fit against this LM")
    if lm_embeddings is not None:
        _check_lm_matrix(path, meta, lm_embeddings)
    if lm_embedding_sha256 is not None and lm_embedding_sha256 != meta["lm_embedding_sha256"]:
        raise TokalignError(f"{path} was exported for another LM (embedding sha256 {meta['lm_embedding_sha256'][:12]}, "
                            f"this LM's is {lm_embedding_sha256[:12]}); export again from a run fit against this LM")
    if lm_identity is not None and _key(lm_identity) != _key(meta["lm"]):
        raise TokalignError(f"{path} was exported for LM {meta['lm'].get('name')!r} ({meta['lm'].get('source')}), not "
                            f"{lm_identity.get('name')!r} ({lm_identity.get('source')}); export again from a run fit against this LM")
    if codebook_size is not None and codebook_size != meta["codebook_size"]:
        raise TokalignError(f"{path} holds rows for a {meta['codebook_size']}-code image tokenizer, not {codebook_size} "
                            "codes; export from a run fit on this image tokenizer")
    return GeneratorInit(image_rows, special_rows, meta)


def _key(identity: dict) -> dict:
    return {k: v for k, v in identity.items() if k != "spec"}


def _read_file(path: Path):
    from safetensors import safe_open

    if not path.is_file():
        raise TokalignError(f"no generator-init file at {path}; write one with `tokalign export --to generator-init`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = dict(handle.metadata() or {})
            if header.get("format") != FORMAT:
                raise TokalignError(f"{path} is not a generator-init file (format {header.get('format')!r}); "
                                    "write one with `tokalign export --to generator-init`")
            return handle.get_tensor("image_rows"), handle.get_tensor("special_rows"), header
    except TokalignError:
        raise
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise TokalignError(f"{path} is damaged or not safetensors ({type(exc).__name__}); export it again") from None


def _check_integrity(path: Path, image_rows, special_rows, header: dict[str, str], meta: dict[str, Any]) -> None:
    import torch

    fix = "the file is damaged or was edited; export it again"
    if header.get("version") != VERSION:
        raise TokalignError(f"{path} is generator-init version {header.get('version')!r}; this tokalign reads version {VERSION}")
    if metadata_sha256(header) != header.get("metadata_sha256"):
        raise TokalignError(f"{path} fails its metadata checksum; {fix}")
    offset, specials = meta["image_offset"] + meta["codebook_size"], meta["special_tokens"]
    if (meta["image_offset"] != meta["text_vocab_size"] or meta["special_offset"] != offset
            or specials != {name: offset + i for i, name in enumerate(SPECIAL_TOKENS)}):
        raise TokalignError(f"{path} has an inconsistent vocabulary layout; {fix}")
    shapes = {"image_rows": (meta["codebook_size"], meta["d_model"]), "special_rows": (len(SPECIAL_TOKENS), meta["d_model"])}
    for name, tensor in (("image_rows", image_rows), ("special_rows", special_rows)):
        if tuple(tensor.shape) != shapes[name] or tensor.dtype != torch.float32:
            raise TokalignError(f"{path}: {name} is {tensor.dtype} {tuple(tensor.shape)}, the metadata says {shapes[name]}; {fix}")
    if tensors_sha256({"image_rows": image_rows, "special_rows": special_rows}) != meta["tensor_sha256"]:
        raise TokalignError(f"{path} fails its tensor checksum; {fix}")


def _check_lm_matrix(path: Path, meta: dict[str, Any], lm_embeddings: "torch.Tensor") -> None:
    from tokalign.align.lm.load import tensor_sha256

    rows = int(lm_embeddings.shape[0])
    if rows != meta["text_vocab_size"]:
        raise TokalignError(f"{path} was exported for a text vocabulary of {meta['text_vocab_size']} rows, this LM has "
                            f"{rows}: it belongs to another LM; export again from a run fit against this LM")
    sha = tensor_sha256(lm_embeddings)
    if sha != meta["lm_embedding_sha256"]:
        raise TokalignError(f"{path} was exported for another LM (embedding sha256 {meta['lm_embedding_sha256'][:12]}, "
                            f"this LM's is {sha[:12]}); export again from a run fit against this LM")
