"""Caption -> image training sequences, built once from a corpus into a memory-mapped folder.

Layout of one row (ids under a :class:`~tokalign.align.formats.generator_init.VocabLayout`)::

    text-to-image  <doc> <text> caption </text> <image> image tokens </image> </doc> <pad> ...
    image-only     <doc> <image> image tokens </image> </doc> <pad> ...

padded with ``<pad>`` to ``seq_len`` (default :func:`default_seq_len`: 1,152 for 1,024 image tokens). Captions
longer than ``seq_len - tokens_per_image - 6`` tokens are truncated (kept from the start) and counted. A
``seq_len`` too short for the image tokens and the structure (and at least one caption token) is a one-line
error, and so is a corpus whose captions were made by another tokenizer than the LM's (text-to-image only).

The folder is a cache keyed by content (written atomically): :func:`build_sequences` reuses it when its record
matches (layout, ``seq_len``, mode and the corpus fingerprint: the corpus's content, not its path), rebuilds it
when it is damaged or half-written, and refuses one built for other settings (naming them; a training run drops
its own stale cache first, :func:`tokalign.generate.train.run_folder.drop_stale_sequences`); a folder holding
anything but these files is refused, never replaced::

    tokens.npy            (N, seq_len) int32, row i = corpus item i   (np.load(..., mmap_mode="r"))
    caption_lengths.npy   (N,) int32, caption tokens kept in row i (0 in image-only mode)
    sequences.json        the record: format, version, layout, seq_len, mode, items, tokens_per_image, grid,
                          max_caption_tokens, truncated (captions cut), caption_tokens_cut, corpus fingerprint
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tokalign.align.errors import TokalignError
from tokalign.align.formats import atomic
from tokalign.align.formats.corpus import Corpus, open_corpus
from tokalign.align.formats.generator_init import VocabLayout
from tokalign.align.training.progress import progress_bar
from tokalign.generate.model_folder import MODES

logger = logging.getLogger(__name__)

FORMAT = "tokalign-sequences"
VERSION = 1
TOKENS, CAPTION_LENGTHS, RECORD = "tokens.npy", "caption_lengths.npy", "sequences.json"
OWN_FILES = frozenset({TOKENS, CAPTION_LENGTHS, RECORD})
STRUCTURE = {"text-to-image": 6, "image-only": 4}  #: structure tokens per row
CHUNK = 4096


def default_seq_len(tokens_per_image: int) -> int:
    """``tokens_per_image + 128`` rounded up to a multiple of 64 (1,152 for 1,024 image tokens)."""
    return -(-(int(tokens_per_image) + 128) // 64) * 64


def max_caption_tokens(seq_len: int, tokens_per_image: int, mode: str) -> int:
    """Caption tokens a row of ``seq_len`` can hold (0 in image-only mode); refuses a too-short ``seq_len``."""
    if mode not in STRUCTURE:
        raise TokalignError(f"--mode {mode!r} is not one of {', '.join(MODES)}")
    need = tokens_per_image + STRUCTURE[mode] + (1 if mode == "text-to-image" else 0)
    if seq_len < need:
        raise TokalignError(f"--seq-len {seq_len} is too short for {tokens_per_image} image tokens and the structure "
                            f"tokens ({mode}); pass --seq-len {need} or more (default {default_seq_len(tokens_per_image)})")
    return seq_len - tokens_per_image - STRUCTURE[mode] if mode == "text-to-image" else 0


@dataclass(frozen=True)
class Sequences:
    """An opened sequences folder: memory-mapped rows and their record."""

    folder: Path
    tokens: np.ndarray  #: (N, seq_len) int32, read-only memmap
    caption_lengths: np.ndarray  #: (N,) int32
    record: dict[str, Any]

    @property
    def layout(self) -> VocabLayout:
        return VocabLayout.from_json(self.record["layout"])

    @property
    def seq_len(self) -> int:
        return int(self.record["seq_len"])

    @property
    def mode(self) -> str:
        return str(self.record["mode"])

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def corpus_fingerprint(corpus: Corpus) -> dict[str, Any]:
    """What identifies a corpus here: its item count and the format's fingerprint (content; the same corpus at
    another path is the same corpus)."""
    from tokalign.align.formats.corpus import corpus_fingerprint as fingerprint

    return {"items": corpus.items, **fingerprint(corpus)}


def build_sequences(corpus: Corpus | str | os.PathLike, out: str | os.PathLike, layout: VocabLayout, *,
                    seq_len: int | None = None, mode: str = "text-to-image", text_tokenizer_sha256: str | None = None,
                    progress: bool = False) -> Sequences:
    """Build (or reuse) the sequences folder ``out`` for ``corpus`` (module docstring).

    ``text_tokenizer_sha256`` is :func:`tokalign.align.lm.captions.tokenizer_fingerprint` of the LM's
    tokenizer; a corpus whose ``text_tokenizer.sha256`` differs is refused in text-to-image mode.
    """
    corpus = corpus if isinstance(corpus, Corpus) else open_corpus(corpus)
    seq_len = default_seq_len(corpus.tokens_per_image) if seq_len is None else int(seq_len)
    cap = max_caption_tokens(seq_len, corpus.tokens_per_image, mode)
    _check_corpus(corpus, layout, mode, text_tokenizer_sha256)
    want = {"layout": layout.to_json(), "seq_len": seq_len, "mode": mode, "corpus": corpus_fingerprint(corpus)}
    out = Path(out)
    found = _reusable(out, want)
    if found is not None:
        return found
    _check_space(out, corpus.items, seq_len)
    with atomic.atomic_dir(out) as tmp:
        counts = _fill(corpus, tmp, layout, seq_len, mode, cap, progress)
        record = {"format": FORMAT, "version": VERSION, **want, "items": corpus.items,
                  "tokens_per_image": corpus.tokens_per_image, "grid": corpus.image_tokenizer.get("grid"),
                  "max_caption_tokens": cap, **counts}
        atomic.write_json(tmp / RECORD, record)
    logger.info("built %d sequences of %d tokens (%s) in %s; %d captions truncated", corpus.items, seq_len, mode,
                out, counts["truncated"])
    return open_sequences(out)


def open_sequences(folder: str | os.PathLike) -> Sequences:
    """Open a sequences folder :func:`build_sequences` wrote (one-line errors for anything else)."""
    folder = Path(folder)
    try:
        record = _read_json(folder / RECORD)
        tokens = np.load(folder / TOKENS, mmap_mode="r")
        lengths = np.load(folder / CAPTION_LENGTHS)
    except (OSError, ValueError) as exc:
        raise TokalignError(f"{folder} is not a complete sequences folder ({type(exc).__name__}); delete it to rebuild") from None
    if record.get("format") != FORMAT or record.get("version") != VERSION:
        raise TokalignError(f"{folder} is not a tokalign sequences folder (version {VERSION}); delete it to rebuild")
    if tokens.dtype != np.int32 or tokens.shape != (record["items"], record["seq_len"]) or lengths.shape != (record["items"],):
        raise TokalignError(f"{folder} does not match its {RECORD}; delete it to rebuild")
    return Sequences(folder, tokens, lengths, record)


def _read_json(path: Path) -> dict:
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))


def _reusable(out: Path, want: dict) -> Sequences | None:
    """The folder's sequences when they are what ``want`` describes; None when ``out`` is missing, or is a stale,
    damaged or half-written sequences folder (then rebuilt); a folder with other files is refused."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise TokalignError(f"{out} is a file, not a sequences folder; move it away (tokalign never replaces it)")
    others = sorted(n for n in os.listdir(out) if n not in OWN_FILES and not atomic.is_temp_name(n))
    if others:
        raise TokalignError(f"{out} holds files tokalign did not write ({', '.join(map(repr, others[:3]))}); move "
                            "them out, or use a new run folder")
    try:
        found = open_sequences(out)
    except TokalignError as exc:
        logger.info("rebuilding the sequences in %s: %s", out, str(exc).split(";")[0])
        return None
    stale = stale_keys(found.record, want)
    if stale:
        raise TokalignError(f"{out} holds sequences built with another {', '.join(stale)} than this run asks for; "
                            "use a new run folder (or delete it to rebuild)")
    logger.info("reusing the sequences in %s", out)
    return found


def stale_keys(record: dict, want: dict) -> list[str]:
    """The keys of ``want`` a sequences record differs in (a recorded corpus path, which older records hold,
    is not part of the corpus's identity)."""
    def corpus(body):
        return {k: v for k, v in body.items() if k != "path"} if isinstance(body, dict) else body

    return [key for key, value in want.items()
            if (corpus(record.get(key)) != corpus(value) if key == "corpus" else record.get(key) != value)]


def _check_space(out: Path, items: int, seq_len: int) -> None:
    """Refuse a build the disk cannot hold, before a byte is written."""
    import shutil

    need = int(items) * int(seq_len) * 4 + int(items) * 4
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(parent).free
    if need > free:
        raise TokalignError(f"the sequences of {items:,} items x {seq_len:,} tokens need {need / 2**30:.1f} GiB but "
                            f"{parent} has {free / 2**30:.1f} GiB free; pass a smaller --seq-len or free disk space")


def _check_corpus(corpus: Corpus, layout: VocabLayout, mode: str, text_sha: str | None) -> None:
    if corpus.codebook_size != layout.codebook_size:
        raise TokalignError(f"the corpus has a {corpus.codebook_size}-code image tokenizer but the vocabulary layout "
                            f"holds {layout.codebook_size} image rows; build the layout from this corpus")
    if mode != "text-to-image" or text_sha is None:
        return
    theirs = corpus.text_tokenizer.get("sha256")
    if theirs != text_sha:
        raise TokalignError(f"the corpus captions were tokenized with {corpus.text_tokenizer.get('name')!r}, not this "
                            "LM's tokenizer; pass the --lm the corpus was made with, or rebuild the corpus with this --lm")


def _fill(corpus: Corpus, folder: Path, layout: VocabLayout, seq_len: int, mode: str, cap: int,
          progress: bool) -> dict[str, int]:
    n = corpus.items
    tokens = np.lib.format.open_memmap(folder / TOKENS, mode="w+", dtype=np.int32, shape=(n, seq_len))
    lengths = np.zeros(n, dtype=np.int32)
    truncated = cut = 0
    bar = progress_bar(progress, desc="sequences", unit="seq", total=n)
    for lo in range(0, n, CHUNK):
        idx = np.arange(lo, min(lo + CHUNK, n))
        captions = corpus.caption_ids(idx) if mode == "text-to-image" else [np.zeros(0, np.int64)] * len(idx)
        full = np.fromiter((len(c) for c in captions), dtype=np.int64, count=len(idx))
        kept = np.minimum(full, cap)
        truncated += int((full > kept).sum())
        cut += int((full - kept).sum())
        ids = np.concatenate([c[:k] for c, k in zip(captions, kept)]) if len(idx) else np.zeros(0, np.int64)
        if ids.size and (int(ids.max()) >= layout.text_rows or int(ids.min()) < 0):
            raise TokalignError(f"caption token id {int(ids.max())} is outside the LM's {layout.text_rows} text rows; "
                                "the corpus was tokenized for another LM: pass the matching --lm")
        tokens[lo:lo + len(idx)] = pack_rows(layout, seq_len, mode, ids, kept, corpus.image_tokens(idx))
        lengths[lo:lo + len(idx)] = kept
        bar.update(len(idx))
    bar.close()
    tokens.flush()
    del tokens
    np.save(folder / CAPTION_LENGTHS, lengths)
    return {"truncated": truncated, "caption_tokens_cut": cut}


def pack_rows(layout: VocabLayout, seq_len: int, mode: str, caption_ids: np.ndarray, caption_lengths: np.ndarray,
              image_tokens: np.ndarray) -> np.ndarray:
    """(B, seq_len) int32 rows from flat (already truncated) caption ids, their lengths and (B, T) image tokens."""
    s = layout.special_ids
    b, t = image_tokens.shape
    rows = np.full((b, seq_len), layout.pad_id, dtype=np.int32)
    rows[:, 0] = s["<doc>"]
    lengths = np.asarray(caption_lengths, dtype=np.int64)
    if mode == "text-to-image":
        rows[:, 1] = s["<text>"]
        which = np.repeat(np.arange(b), lengths)
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        rows[which, 2 + within] = caption_ids
        rows[np.arange(b), 2 + lengths] = s["</text>"]
        start = 3 + lengths  # position of <image>
    else:
        start = np.ones(b, dtype=np.int64)
    r = np.arange(b)
    rows[r, start] = s["<image>"]
    rows[r[:, None], start[:, None] + 1 + np.arange(t)] = image_tokens.astype(np.int64) + layout.image_offset
    rows[r, start + 1 + t] = s["</image>"]
    rows[r, start + 2 + t] = s["</doc>"]
    return rows
