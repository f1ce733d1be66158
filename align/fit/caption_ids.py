"""Caption token ids by corpus index, memory-mapped, checked as a stream: the caption side of a fit at any scale.

A fit never holds every caption (nor every caption vector) in memory: each step looks up its batch's ids
here and embeds them (``mean_k E_lm[w_k]``, a ~30-token bag per caption).  The ids come from

* the corpus itself, when its captions were tokenized by the fit's LM tokenizer (memory-mapped shards); or
* a cache in the run folder, ``caption_ids/`` (``ids.bin`` int32, ``offsets.bin`` int64 with items + 1
  entries, ``meta.json`` naming the tokenizer and the corpus shards), when the corpus was made for another LM:
  its captions are re-tokenized once, a chunk at a time, straight to disk, then memory-mapped.  A later run
  (or ``--resume``) reuses a cache whose ``meta.json`` matches.

Both paths refuse empty captions and ids outside the LM vocabulary with the one-line errors of
:func:`tokalign.align.lm.captions.check_caption_ids`, one shard or chunk at a time.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from tokalign.align.formats import atomic
from tokalign.align.formats import run_folder as rd
from tokalign.align.formats.corpus import SHARDS
from tokalign.align.lm.captions import caption_vectors, check_caption_ids, tokenizer_fingerprint

log = logging.getLogger(__name__)

CACHE = rd.CAPTION_CACHE
CHUNK = 8192


class CaptionIds:
    """``batch(indices)`` -> (flat int64 ids, int64 offsets) of those captions, in the order asked."""

    def __init__(self, corpus, ids: np.ndarray | None = None, offsets: np.ndarray | None = None) -> None:
        self.corpus, self._ids, self._offsets = corpus, ids, offsets

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        if self._ids is None:
            parts = self.corpus.caption_ids(indices)
            lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
            flat = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        else:
            starts = np.asarray(self._offsets[indices], dtype=np.int64)
            lengths = np.asarray(self._offsets[indices + 1], dtype=np.int64) - starts
            shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
            flat = np.asarray(self._ids[shift + np.arange(int(lengths.sum()))], dtype=np.int64)
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return flat, offsets

    def vectors(self, embeddings: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
        """L2-normalized caption vectors (len(indices), d) on ``embeddings.device``."""
        return caption_vectors(embeddings, *self.batch(indices))

    def all_vectors(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Every item's caption vector (items, d) on ``embeddings.device``, each equal to :meth:`vectors`'s."""
        if self._ids is not None:
            return caption_vectors(embeddings, self._ids, self._offsets)
        out = embeddings.new_empty((self.corpus.items, embeddings.shape[1]), dtype=torch.float32)
        for start, _, ids, offsets in self.corpus.iter_caption_shards():
            out[start:start + len(offsets) - 1] = caption_vectors(embeddings, ids, np.asarray(offsets, dtype=np.int64))
        return out


def open_caption_ids(corpus, lm, tokenize, run_dir: Path, build: bool = True) -> CaptionIds:
    """The fit's caption ids for ``lm``, checked; ``build=False`` (non-main processes) only opens a cache."""
    if corpus.text_tokenizer.get("sha256") == tokenizer_fingerprint(lm.tokenizer):
        for start, name, ids, offsets in corpus.iter_caption_shards():
            check_caption_ids(np.asarray(ids), np.asarray(offsets), lm.vocab_size, _key_of(corpus), first_index=start)
        return CaptionIds(corpus)
    folder = Path(run_dir) / CACHE
    meta = _cache_meta(corpus, lm)
    if build and not _cache_matches(folder, meta):
        log.info("corpus captions were tokenized for %s; re-tokenizing them for %s into %s",
                 corpus.text_tokenizer.get("name"), lm.spec, folder)
        _write_cache(corpus, lm, tokenize, folder, meta)
    count = _read_meta(folder)["caption_tokens"]
    ids = np.memmap(folder / "ids.bin", dtype=np.int32, mode="r", shape=(count,))
    offsets = np.memmap(folder / "offsets.bin", dtype=np.int64, mode="r", shape=(corpus.items + 1,))
    return CaptionIds(corpus, ids, offsets)


def _key_of(corpus):
    return lambda i: corpus.records([i])[0].get("key")


def _cache_meta(corpus, lm) -> dict:
    from tokalign.align.formats.corpus import corpus_fingerprint

    return {"tokenizer_sha256": tokenizer_fingerprint(lm.tokenizer), "lm": lm.spec, "items": corpus.items,
            "corpus_text_sha256": corpus_fingerprint(corpus)["text"]}


def _read_meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text(encoding="utf-8"))


def _cache_matches(folder: Path, meta: dict) -> bool:
    try:
        saved = _read_meta(folder)
    except (OSError, ValueError):
        return False
    return {k: saved.get(k) for k in meta} == meta and (folder / "offsets.bin").is_file()


def _shard_captions(corpus, name: str):
    """Captions of one shard, streamed from its JSON-lines file."""
    with open(corpus.root / SHARDS / f"{name}.jsonl", encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)["caption"]


def _write_cache(corpus, lm, tokenize, folder: Path, meta: dict) -> None:
    total, base = 0, 0
    with atomic.atomic_dir(folder) as tmp, open(tmp / "ids.bin", "wb") as ids_out, open(tmp / "offsets.bin", "wb") as off_out:
        off_out.write(np.zeros(1, dtype=np.int64).tobytes())
        for entry in corpus.manifest["shards"]:
            chunk: list[str] = []
            for caption in _shard_captions(corpus, entry["name"]):
                chunk.append(caption)
                if len(chunk) == CHUNK:
                    total, base = _write_chunk(chunk, lm, tokenize, corpus, ids_out, off_out, total, base)
                    chunk = []
            if chunk:
                total, base = _write_chunk(chunk, lm, tokenize, corpus, ids_out, off_out, total, base)
        if base != corpus.items:
            raise ValueError(f"corpus caption files hold {base} captions, the manifest {corpus.items}")
        ids_out.flush()
        off_out.flush()
        atomic.write_json(tmp / "meta.json", {**meta, "caption_tokens": total})


def _write_chunk(captions, lm, tokenize, corpus, ids_out, off_out, total: int, base: int) -> tuple[int, int]:
    encoded = tokenize(lm.tokenizer, captions)
    lengths = np.fromiter((len(x) for x in encoded), dtype=np.int64, count=len(encoded))
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for x in encoded for t in x), dtype=np.int64, count=int(offsets[-1]))
    check_caption_ids(flat, offsets, lm.vocab_size, _key_of(corpus), first_index=base)
    ids_out.write(flat.astype(np.int32).tobytes())
    off_out.write((offsets[1:] + total).tobytes())
    return total + int(offsets[-1]), base + len(encoded)
