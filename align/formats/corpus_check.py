"""``tokalign corpus check``: a corpus read end to end, every defect a one-line error.

Opening a corpus (:func:`tokalign.align.formats.corpus.open_corpus`) already checks the manifest, every
shard's byte size, tensor shapes, ``caption_offsets`` (from 0, never decreasing, ending at the caption
length) and each shard's recorded largest image token id against the codebook.  The check adds what opening
leaves for later: every image token id is read and checked against the codebook (a shard edited after its
manifest), each shard's ``.jsonl`` has one ``{"key", "caption"}`` line per item, caption ids lie inside the
text tokenizer's vocabulary, and no caption is empty.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from tokalign.align.errors import TokalignError
from tokalign.align.formats.corpus import SHARDS, open_corpus

_FIX = "rebuild the corpus (or re-run its tokenize step)"


def check_corpus(root: str | Path) -> dict[str, Any]:
    """Validate the corpus at ``root``; return its counts.  Raises ``TokalignError`` on the first defect."""
    corpus = open_corpus(root)
    vocab = corpus.text_tokenizer.get("vocab_size") if isinstance(corpus.text_tokenizer, dict) else None
    tokens = 0
    for shard in corpus._shards:
        records = corpus.records(np.arange(shard.start, shard.start + shard.items))
        path = Path(corpus.root) / SHARDS / f"{shard.name}.jsonl"
        recorded = _entry(corpus, shard.name).get("text_sha256")
        if isinstance(recorded, str) and hashlib.sha256(path.read_bytes()).hexdigest() != recorded:
            raise TokalignError(f"{path} does not match the text_sha256 its manifest entry records (edited or "
                                f"damaged); {_FIX}")
        for line, record in enumerate(records, start=1):
            if not (isinstance(record, dict) and isinstance(record.get("key"), str) and isinstance(record.get("caption"), str)):
                raise TokalignError(f"{path} line {line} is not a {{\"key\", \"caption\"}} record; {_FIX}")
        if shard.items and int(shard.image_tokens.max()) >= corpus.codebook_size:
            raise TokalignError(f"corpus shard {shard.name} holds image token id {int(shard.image_tokens.max())}, "
                                f"beyond the codebook of {corpus.codebook_size}; {_FIX}")
        ids, offsets = np.asarray(shard.caption_ids), np.asarray(shard.caption_offsets)
        if shard.items and bool((np.diff(offsets) == 0).any()):
            item = int(np.flatnonzero(np.diff(offsets) == 0)[0])
            raise TokalignError(f"corpus shard {shard.name} item {item} has an empty caption; {_FIX}")
        if ids.size and (int(ids.min()) < 0 or (isinstance(vocab, int) and int(ids.max()) >= vocab)):
            raise TokalignError(f"corpus shard {shard.name} holds caption token ids outside 0..{vocab}; {_FIX}")
        tokens += int(ids.size)
        corpus._texts.clear()  # one shard's text in memory at a time
    return {"root": str(corpus.root), "items": corpus.items, "shards": len(corpus._shards), "caption_tokens": tokens,
            "codebook_size": corpus.codebook_size}


def _entry(corpus, name: str) -> dict:
    return next((s for s in corpus.manifest["shards"] if s.get("name") == name), {})
