"""The generator model folder: what ``tokalign generator train`` saves and ``sample`` / ``probe`` read.

Torch-free at import. A model folder is a plain Hugging Face folder (``save_pretrained`` weights and config,
the tokenizer with the structure tokens added, ``generation_config.json``) plus ``tokalign_generator.json``,
the marker that makes it a tokalign generator::

    config.json, model.safetensors        AutoModelForCausalLM.from_pretrained(folder) loads it
    tokenizer.json, tokenizer_config.json the LM's tokenizer + <doc> </doc> <text> </text> <image> </image> <pad>
    generation_config.json                pad/bos/eos ids and the layout under "tokalign_layout"
    .tokalign.json                        the shared output marker (kind "generator-model"): no other command
                                          writes a file in here
    tokalign_generator.json               this module's record (below); written last

The record: ``format``/``version``; ``layout`` (:class:`~tokalign.align.formats.generator_init.VocabLayout`
JSON); ``mode`` (``text-to-image`` | ``image-only``); ``grid`` [h, w] and ``tokens_per_image``;
``image_tokenizer`` (the corpus manifest's identity, with its ``sha256``); ``corpus`` (path, resolved);
``text_tokenizer`` (identity of the tokenizer the captions were made with); ``base_lm`` (identity and embedding
sha256 of the LM it started from); ``init`` (mode and where each row block came from); ``caption_dropout``;
``seq_len``; ``max_caption_tokens``; ``steps``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokalign.align.errors import TokalignError
from tokalign.align.formats import atomic, outputs
from tokalign.align.formats.generator_init import VocabLayout

MARKER = "tokalign_generator.json"
FORMAT = "tokalign-generator"
HF_CONFIG = "config.json"  #: the Hugging Face model config beside the weights
outputs.register_kind(outputs.GENERATOR_MODEL, signature=(MARKER, "format", lambda v: v == FORMAT))
VERSION = 1
MODES = ("text-to-image", "image-only")


@dataclass(frozen=True)
class GeneratorRecord:
    """The contents of ``tokalign_generator.json``."""

    layout: VocabLayout
    mode: str
    grid: tuple[int, int]
    image_tokenizer: dict[str, Any]
    caption_dropout: float
    seq_len: int
    max_caption_tokens: int
    corpus: str = ""
    text_tokenizer: dict[str, Any] = field(default_factory=dict)
    base_lm: dict[str, Any] = field(default_factory=dict)
    init: dict[str, Any] = field(default_factory=dict)
    steps: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise TokalignError(f"unknown generator mode {self.mode!r}; one of {', '.join(MODES)}")
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise TokalignError(f"bad image grid {self.grid!r}; expected [h, w]")

    @property
    def tokens_per_image(self) -> int:
        return int(self.grid[0]) * int(self.grid[1])

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "layout": self.layout.to_json(), "mode": self.mode,
                "grid": list(self.grid), "tokens_per_image": self.tokens_per_image,
                "image_tokenizer": self.image_tokenizer, "corpus": self.corpus, "text_tokenizer": self.text_tokenizer,
                "base_lm": self.base_lm, "init": self.init, "caption_dropout": self.caption_dropout,
                "seq_len": self.seq_len, "max_caption_tokens": self.max_caption_tokens, "steps": self.steps}

    @classmethod
    def from_json(cls, body: dict[str, Any], where: Path) -> "GeneratorRecord":
        if body.get("format") != FORMAT:
            raise TokalignError(f"{where} is not a tokalign generator (format {body.get('format')!r}); pass a "
                                "folder `tokalign generator train` wrote")
        if body.get("version") != VERSION:
            raise TokalignError(f"{where} is tokalign-generator version {body.get('version')!r}; this tokalign "
                                f"reads version {VERSION}")
        try:
            return cls(layout=VocabLayout.from_json(body["layout"]), mode=body["mode"], grid=tuple(body["grid"]),
                       image_tokenizer=dict(body["image_tokenizer"]), caption_dropout=float(body["caption_dropout"]),
                       seq_len=int(body["seq_len"]), max_caption_tokens=int(body["max_caption_tokens"]),
                       corpus=str(body.get("corpus", "")), text_tokenizer=dict(body.get("text_tokenizer", {})),
                       base_lm=dict(body.get("base_lm", {})), init=dict(body.get("init", {})),
                       steps=int(body.get("steps", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise TokalignError(f"{where} is damaged ({type(exc).__name__}: {exc}); train or save the generator again") from None


def write_record(folder: Path, record: GeneratorRecord) -> None:
    """Write the marker (atomically); call it after every other file of the folder is in place."""
    atomic.write_json(Path(folder) / MARKER, record.to_json())


def is_generator_folder(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def read_record(folder: Path) -> GeneratorRecord:
    """The record of a generator folder, or a one-line error naming the fix (a run folder: its model folder)."""
    folder = Path(folder)
    path = folder / MARKER
    if not folder.is_dir():
        raise TokalignError(f"no generator folder at {folder}; pass a folder `tokalign generator train` wrote")
    if not path.is_file():
        from tokalign.generate.train.run_folder import MODEL, RECORD

        if (folder / RECORD).is_file() or (folder / MODEL / MARKER).is_file():
            where = folder / MODEL
            hint = (f"pass --model {where}" if (where / MARKER).is_file() else
                    f"its model folder {where} is not saved yet: finish the run (`tokalign generator train --resume`)")
            raise TokalignError(f"{folder} is a generator training run, not its model; {hint}")
        raise TokalignError(f"{folder} is not a tokalign generator (no {MARKER}); pass a folder "
                            "`tokalign generator train` wrote")
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise TokalignError(f"{path} is not valid JSON; the generator folder is damaged") from None
    return GeneratorRecord.from_json(body, folder)


def model_hidden_size(folder: Path) -> int:
    """The model's ``hidden_size`` from its ``config.json`` (0 when unreadable)."""
    try:
        return int(json.loads((Path(folder) / HF_CONFIG).read_text(encoding="utf-8")).get("hidden_size", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def incomplete_reason(folder: Path) -> str | None:
    """Why ``folder`` is not a complete saved generator (no folder, no config or record, weights missing or
    shorter than their headers say), or None when it is complete.  Reads headers only."""
    folder = Path(folder)
    if not folder.is_dir():
        return "no model folder"
    for name in (HF_CONFIG, MARKER):
        try:
            json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"no readable {name}"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return "no weights"
    for file in weights:
        if not _complete_safetensors(file):
            return f"{file.name} is truncated or damaged"
    return None


def _complete_safetensors(path: Path) -> bool:
    """Does ``path``'s size cover every tensor its header lists?"""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size <= 1 << 28:
                return False
            header = json.loads(handle.read(size))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size >= 8 + size + end
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False
