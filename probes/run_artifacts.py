"""What a fit run folder holds, read without loading the LM (the format: ``tokalign.align.formats.run_folder``).

:func:`open_run` checks that the folder is a finished run and that its parts
agree (the table was fit against the embedding matrix stored in ``lm/``), and
returns a :class:`RunArtifacts` whose parts load on first use:

* ``embeddings``: the LM's input embedding matrix from ``lm/embeddings.safetensors``
  (float32 numpy, rows x d_model);
* ``table`` / ``table_meta``: ``image_embeddings`` and the header metadata of
  ``table.safetensors``;
* ``vocab``: the LM tokenizer from ``lm/tokenizer/tokenizer.json`` through the
  ``tokenizers`` library (transformers only when a folder lacks that file);
* :meth:`RunArtifacts.image_tokenizer`: the run's k-means image tokenizer, found
  through the corpus named in ``config.json`` (only ``--show`` needs it, so a
  moved corpus is an error only then).

Everything here is numpy: neither torch nor transformers is imported, which
keeps a cold ``tokalign neighbors`` call short.  The metadata of the embedding
file, ``lm/lm.json`` and the table must name the same embedding sha256; the
matrix itself is re-hashed only by :meth:`RunArtifacts.verify_embeddings`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from tokalign.align.formats import run_folder as rd
from tokalign.align.errors import TokalignError

from tokalign.probes.token_text import detect_mode, display_token, guess_mode

logger = logging.getLogger(__name__)


class TextVocab:
    """The LM's vocabulary: encode a text, name an id, show it readably (pieces are looked up on demand)."""

    def __init__(self, size: int, piece_of, special: set[int], mode: str, encode, unk_id: int | None) -> None:
        self.size, self._piece_of, self.special, self.mode = size, piece_of, special, mode
        self._encode, self.unk_id = encode, unk_id

    def __len__(self) -> int:
        return self.size

    def piece(self, token_id: int) -> str | None:
        return self._piece_of(int(token_id)) if 0 <= token_id < self.size else None

    def is_special(self, token_id: int) -> bool:
        return token_id in self.special

    def display(self, token_id: int) -> str:
        return display_token(self.piece(token_id), self.mode, self.is_special(token_id))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added (BOS and the like)."""
        return list(self._encode(text))


def _vocab_from_json(folder: Path) -> TextVocab:
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    try:
        definition = json.loads(path.read_text(encoding="utf-8"))
        backend = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise TokalignError(f"the run's LM tokenizer {path} is damaged ({type(exc).__name__}); re-run `tokalign fit`") from None
    size = backend.get_vocab_size(with_added_tokens=True)
    special = {int(t["id"]) for t in definition.get("added_tokens", []) if t.get("special")}
    unk = _unk_id(folder, definition, backend)
    encode = lambda text: backend.encode(text, add_special_tokens=False).ids  # noqa: E731
    return TextVocab(size, backend.id_to_token, special, detect_mode(definition), encode, unk)


def _unk_id(folder: Path, definition: dict, backend) -> int | None:
    name = (definition.get("model") or {}).get("unk_token")
    config = folder / "tokenizer_config.json"
    if not name and config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("unk_token")
        name = value.get("content") if isinstance(value, dict) else value
    return backend.token_to_id(name) if isinstance(name, str) else None


def _vocab_from_transformers(folder: Path) -> TextVocab:
    from transformers import AutoTokenizer  # slow to import; only for tokenizers without tokenizer.json

    logger.info("%s has no tokenizer.json; loading it with transformers (slower)", folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise TokalignError(f"cannot read the run's LM tokenizer in {folder} ({type(exc).__name__}); re-run `tokalign fit`") from None
    sample = tokenizer.convert_ids_to_tokens(list(range(min(len(tokenizer), 20000))))
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    return TextVocab(len(tokenizer), tokenizer.convert_ids_to_tokens, set(tokenizer.all_special_ids),
                     guess_mode([p for p in sample if p]), encode, tokenizer.unk_token_id)


@dataclass
class RunArtifacts:
    """A finished run's parts; see the module docstring."""

    run: Path
    config: dict[str, Any]
    lm_info: dict[str, Any]
    table_path: Path

    @cached_property
    def _table(self) -> tuple[np.ndarray, dict[str, Any]]:
        weight, meta = rd.read_table(self.table_path)
        rd.check_table_matches_lm(self.run, weight, meta, self.lm_info)
        return weight, meta

    @property
    def table(self) -> np.ndarray:
        """(codebook_size, d_model) float32 image-token embeddings."""
        return self._table[0]

    @property
    def table_meta(self) -> dict[str, Any]:
        return self._table[1]

    @property
    def codebook_size(self) -> int:
        return int(self.table_meta["codebook_size"])

    @cached_property
    def embeddings(self) -> np.ndarray:
        """(rows, d_model) float32 input embeddings of the frozen LM."""
        array = rd.read_lm_embeddings(self.run, self.lm_info)
        if array.shape[1] != self.table.shape[1]:
            raise TokalignError(f"{self.run / rd.LM / rd.EMBEDDING_FILE} holds rows of d_model {array.shape[1]}, "
                                f"not {self.table.shape[1]} like the table; re-run `tokalign fit`")
        return array

    def verify_embeddings(self) -> None:
        """Re-hash the embedding matrix against ``lm/lm.json``."""
        rd.verify_embeddings(self.run, self.embeddings, self.lm_info)

    @cached_property
    def vocab(self) -> TextVocab:
        folder = self.run / rd.LM / rd.TOKENIZER
        if (folder / "tokenizer.json").is_file():
            return _vocab_from_json(folder)
        if not folder.is_dir():
            raise TokalignError(f"the run's LM tokenizer folder {folder} is missing; re-run `tokalign fit` to restore it")
        return _vocab_from_transformers(folder)

    def image_tokenizer(self):
        """The image tokenizer the run's corpus was made with (for rendering tokens), checked by its sha256."""
        from tokalign.align.image_tokenizers.registry import tokenizer_for_identity

        identity = self.table_meta.get("image_tokenizer") or {}
        corpus = Path((self.config.get("corpus") or {}).get("path", ""))
        if identity.get("file") and not (corpus / identity["file"]).is_file():
            raise TokalignError(f"the run's image tokenizer {corpus / identity['file']} is missing (the corpus moved or "
                                f"was deleted); restore the corpus at {corpus} to use --show")
        return tokenizer_for_identity(identity, corpus)


def open_run(run: str | Path) -> RunArtifacts:
    """A finished run folder's artifacts (loaded lazily); one-line errors when it is not one."""
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise TokalignError(f"--run {run} is a file, not a run folder; pass the folder `tokalign fit --run` wrote")
    if not run.is_dir():
        raise TokalignError(f"run folder {run} does not exist; pass the folder `tokalign fit --run` wrote")
    config = rd.read_json(run / rd.CONFIG)
    table_path = run / rd.TABLE
    if not table_path.is_file():
        raise TokalignError(f"no table at {table_path}: the fit has not finished; run `tokalign fit` to completion "
                            "(or `tokalign fit --resume`) first, or pass the right --run")
    lm_info = rd.read_lm_info(run)
    return RunArtifacts(run, config, lm_info, table_path)
