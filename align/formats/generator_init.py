"""The generator-init format (``tokalign-generator-init``, version 1) and the generator's vocabulary layout.

Torch-free at import. :class:`VocabLayout` is the one definition of the expanded vocabulary that the export
writes and the generator builds; :func:`read_generator_init` is the one reader; :func:`write_generator_init`
states the writer's contract (metadata fields, checksums), which ``tokalign.align.fit.export`` fills.

One safetensors file with the rows a generator with an expanded vocabulary needs beyond the LM's own.
V = the LM's embedding rows, K = the codebook size::

    0 .. V-1          text tokens: the LM's own rows, not stored here
    V .. V+K-1        image tokens: tensor ``image_rows`` (K, d_model) float32     (image_offset = V)
    V+K .. V+K+6      <doc> </doc> <text> </text> <image> </image> <pad>: tensor
                      ``special_rows`` (7, d_model) float32                         (special_offset = V+K)
    V+K+7 .. R-1      padding rows up to a multiple of ``pad_multiple`` (64): never targets, masked at sampling

Header metadata (strings; JSON where noted): ``format``, ``version``, ``target``, ``lm`` (JSON identity),
``lm_spec``, ``lm_embedding_sha256`` (:func:`~tokalign.align.formats.hashing.tensor_sha256` of the LM matrix),
``d_model``, ``text_vocab_size`` (V), ``image_offset``, ``codebook_size``, ``special_offset``, ``special_tokens``
(JSON name -> id), ``vocab_size`` (V+K+7), ``image_tokenizer`` (JSON identity), ``source_run``,
``source_table_sha256``, ``source_steps``, ``rescale`` and ``special_init`` (JSON), ``tensor_sha256``
(:func:`~tokalign.align.formats.hashing.tensors_sha256` of the two tensors) and ``metadata_sha256`` (sha256 of
the other metadata as sorted JSON). :func:`read_generator_init` verifies both. Optional (JSON): ``variant``, what
the rows are for (``{"rows": "input", ...}``: input embedding rows; the generator's head treatment decides the
output rows).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokalign.align.errors import TokalignError
from tokalign.align.formats.hashing import tensor_sha256, tensors_sha256

if TYPE_CHECKING:
    import torch

FORMAT = "tokalign-generator-init"
VERSION = "1"
TARGET = "generator-init"
SPECIAL_TOKENS = ("<doc>", "</doc>", "<text>", "</text>", "<image>", "</image>", "<pad>")
PAD_MULTIPLE = 64
JSON_FIELDS = ("lm", "special_tokens", "image_tokenizer", "rescale", "special_init")
OPTIONAL_JSON_FIELDS = ("variant",)  #: absent from files written before it existed
INT_FIELDS = ("d_model", "text_vocab_size", "image_offset", "codebook_size", "special_offset", "vocab_size")
CHECKSUMS = ("tensor_sha256", "metadata_sha256")


@dataclass(frozen=True)
class VocabLayout:
    """The expanded vocabulary: text rows, then the codebook, then the structure tokens, then padding rows."""

    text_rows: int  #: V, the LM's embedding rows (ids 0 .. V-1)
    codebook_size: int  #: K, image token ``t`` has id ``image_offset + t``
    pad_multiple: int = PAD_MULTIPLE  #: total rows are padded up to a multiple of this

    def __post_init__(self) -> None:
        for name in ("text_rows", "codebook_size", "pad_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TokalignError(f"vocabulary layout: {name} must be a positive integer, got {value!r}")

    @property
    def image_offset(self) -> int:
        return self.text_rows

    @property
    def special_offset(self) -> int:
        return self.text_rows + self.codebook_size

    @property
    def special_ids(self) -> dict[str, int]:
        """Name -> id of the structure tokens, in :data:`SPECIAL_TOKENS` order."""
        return {name: self.special_offset + i for i, name in enumerate(SPECIAL_TOKENS)}

    @property
    def used_rows(self) -> int:
        """Rows that stand for a token: V + K + 7."""
        return self.special_offset + len(SPECIAL_TOKENS)

    @property
    def total_rows(self) -> int:
        """Rows of the generator's embedding and output layers: :attr:`used_rows` padded to :attr:`pad_multiple`."""
        return -(-self.used_rows // self.pad_multiple) * self.pad_multiple

    @property
    def padding_ids(self) -> range:
        """Rows that stand for no token: never targets, never sampled."""
        return range(self.used_rows, self.total_rows)

    @property
    def image_ids(self) -> range:
        return range(self.image_offset, self.special_offset)

    def special(self, name: str) -> int:
        """The id of structure token ``name`` (``"<doc>"``, ..., ``"<pad>"``)."""
        try:
            return self.special_ids[name]
        except KeyError:
            raise TokalignError(f"unknown structure token {name!r}; one of {', '.join(SPECIAL_TOKENS)}") from None

    @property
    def pad_id(self) -> int:
        return self.special("<pad>")

    def to_json(self) -> dict[str, Any]:
        return {"text_rows": self.text_rows, "codebook_size": self.codebook_size, "pad_multiple": self.pad_multiple,
                "image_offset": self.image_offset, "special_offset": self.special_offset,
                "special_tokens": self.special_ids, "used_rows": self.used_rows, "total_rows": self.total_rows}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "VocabLayout":
        """Rebuild from :meth:`to_json` output, refusing a record whose derived fields disagree."""
        try:
            layout = cls(int(body["text_rows"]), int(body["codebook_size"]), int(body.get("pad_multiple", PAD_MULTIPLE)))
        except (KeyError, TypeError, ValueError) as exc:
            raise TokalignError(f"damaged vocabulary layout record ({type(exc).__name__}: {exc})") from None
        stored = {k: body[k] for k in layout.to_json() if k in body}
        if {k: v for k, v in layout.to_json().items() if k in stored} != stored:
            raise TokalignError("inconsistent vocabulary layout record: its offsets or ids do not follow from its sizes")
        return layout


# ------------------------------------------------------------------ checksums and metadata


def metadata_sha256(header: dict[str, str]) -> str:
    body = {k: v for k, v in header.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _encode_metadata(meta: dict[str, Any]) -> dict[str, str]:
    json_fields = JSON_FIELDS + OPTIONAL_JSON_FIELDS
    return {k: json.dumps(v, sort_keys=True) if k in json_fields else str(v) for k, v in meta.items()}


def _decode_metadata(header: dict[str, str], path: Path) -> dict[str, Any]:
    try:
        meta: dict[str, Any] = dict(header)
        for key in JSON_FIELDS:
            meta[key] = json.loads(header[key])
        for key in OPTIONAL_JSON_FIELDS:
            if key in header:
                meta[key] = json.loads(header[key])
        meta["special_tokens"] = dict(sorted(meta["special_tokens"].items(), key=lambda item: int(item[1])))
        for key in INT_FIELDS:
            meta[key] = int(header[key])
        meta["lm_embedding_sha256"], meta["tensor_sha256"] = header["lm_embedding_sha256"], header["tensor_sha256"]
    except (KeyError, ValueError, TypeError) as exc:
        raise TokalignError(f"{path} has damaged metadata ({type(exc).__name__}: {exc}); export it again") from None
    return meta


# ------------------------------------------------------------------ writing


def write_generator_init(path: str | os.PathLike, image_rows: "torch.Tensor", special_rows: "torch.Tensor",
                         layout: VocabLayout, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the file atomically: the layout fields come from ``layout``, the checksums are computed here.

    ``meta`` holds the remaining fields of the module docstring (``lm``, ``lm_spec``, ``lm_embedding_sha256``,
    ``d_model``, ``image_tokenizer``, ``source_*``, ``rescale``, ``special_init``). Returns the metadata as read back.
    """
    from tokalign.align.formats.atomic import save_safetensors

    if tuple(image_rows.shape) != (layout.codebook_size, int(meta["d_model"])) or \
            tuple(special_rows.shape) != (len(SPECIAL_TOKENS), int(meta["d_model"])):
        raise ValueError("generator-init rows do not match the layout and d_model")
    tensors = {"image_rows": image_rows.float().contiguous(), "special_rows": special_rows.float().contiguous()}
    body = {"format": FORMAT, "version": VERSION, "target": TARGET, **meta,
            "text_vocab_size": layout.text_rows, "image_offset": layout.image_offset,
            "codebook_size": layout.codebook_size, "special_offset": layout.special_offset,
            "vocab_size": layout.used_rows, "special_tokens": layout.special_ids}
    header = _encode_metadata(body)
    header["tensor_sha256"] = tensors_sha256(tensors)
    header["metadata_sha256"] = metadata_sha256(header)
    save_safetensors(Path(path), tensors, header)
    return _decode_metadata(header, Path(path))


# ------------------------------------------------------------------ reading


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

    @property
    def layout(self) -> VocabLayout:
        return VocabLayout(self.metadata["text_vocab_size"], self.metadata["codebook_size"])

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
    for name, tensor in (("image_rows", image_rows), ("special_rows", special_rows)):
        if not bool(torch.isfinite(tensor).all()):
            raise TokalignError(f"{path}: {name} holds NaN or infinite values (exported from a diverged fit); "
                                "refit with a lower --lr and export again")


def _check_lm_matrix(path: Path, meta: dict[str, Any], lm_embeddings: "torch.Tensor") -> None:
    rows = int(lm_embeddings.shape[0])
    if rows != meta["text_vocab_size"]:
        raise TokalignError(f"{path} was exported for a text vocabulary of {meta['text_vocab_size']} rows, this LM has "
                            f"{rows}: it belongs to another LM; export again from a run fit against this LM")
    sha = tensor_sha256(lm_embeddings)
    if sha != meta["lm_embedding_sha256"]:
        raise TokalignError(f"{path} was exported for another LM (embedding sha256 {meta['lm_embedding_sha256'][:12]}, "
                            f"this LM's is {sha[:12]}); export again from a run fit against this LM")
