"""The tokalign corpus: tokenized image-caption pairs on disk (format version 1).

A corpus is a folder::

    manifest.json                  what is here and how it was made (written last)
    image_tokenizer.safetensors    the image tokenizer's weights, when they are small enough to keep
    shards/shard-00000.safetensors image_tokens (n, L) uint16 | caption_ids (m,) int32 | caption_offsets (n+1,) int64
    shards/shard-00000.jsonl       one line per item, in order: {"key": ..., "caption": ...}
    skipped.jsonl                  items the tokenizer could not use, with the reason (optional)

``manifest.json`` (see "Corpus format" in README.md) holds ``format``
("tokalign-corpus"), ``version`` (1), ``items``, ``tokens_per_image``, the
``image_tokenizer`` identity (kind, codebook_size, grid, sha256 of its
weights, file), the ``text_tokenizer`` identity (LM spec, name, sha256 of the
tokenizer definition, vocabulary size, ``add_special_tokens``), the ``shards``
(name, items, caption tokens, byte sizes), ``skipped`` counts by reason and a
free-form ``source``.  Shards are written atomically; the manifest goes last,
so a folder without one is an incomplete corpus.

Readers memory-map the shards: opening a corpus costs no more than reading
its manifest, and memory does not grow with the corpus size.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from tokalign.align.formats import atomic, outputs
from tokalign.align.errors import TokalignError

FORMAT = "tokalign-corpus"
VERSION = 1
MANIFEST = "manifest.json"
SHARDS = "shards"
outputs.register_kind(outputs.CORPUS, owned=(MANIFEST, SHARDS), signature=(MANIFEST, "format", lambda v: v == FORMAT))
_DTYPES = {"U16": np.uint16, "I32": np.int32, "I64": np.int64}
_TENSORS = {"image_tokens": "U16", "caption_ids": "I32", "caption_offsets": "I64"}


# --------------------------------------------------------------------- writing
def write_shard(folder: Path, name: str, image_tokens: np.ndarray, caption_ids: Sequence[Sequence[int]],
                captions: Sequence[str], keys: Sequence[str]) -> dict[str, Any]:
    """Write one shard (tensors + captions) atomically; return its manifest entry."""
    n = len(image_tokens)
    if not len(caption_ids) == len(captions) == len(keys) == n:
        raise ValueError(f"shard columns differ in length: {n} images, {len(caption_ids)} caption id lists, "
                         f"{len(captions)} captions, {len(keys)} keys")
    lengths = np.fromiter((len(c) for c in caption_ids), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for c in caption_ids for t in c), dtype=np.int32, count=int(offsets[-1]))
    tensors = {"image_tokens": np.ascontiguousarray(image_tokens, dtype=np.uint16),
               "caption_ids": flat, "caption_offsets": offsets}
    folder.mkdir(parents=True, exist_ok=True)
    atomic.save_safetensors(folder / f"{name}.safetensors", tensors, {"format": FORMAT, "version": str(VERSION)})
    lines = "".join(json.dumps({"key": k, "caption": c}, ensure_ascii=False) + "\n" for k, c in zip(keys, captions))
    atomic.write_text(folder / f"{name}.jsonl", lines)
    text_sha256 = hashlib.sha256(lines.encode("utf-8")).hexdigest()
    return {"name": name, "items": n, "caption_tokens": int(offsets[-1]),
            "bytes": (folder / f"{name}.safetensors").stat().st_size,
            "text_bytes": (folder / f"{name}.jsonl").stat().st_size,
            "max_token": int(tensors["image_tokens"].max()) if n else -1, "text_sha256": text_sha256}


class CorpusWriter:
    """Append items, get shards of ``shard_size`` items, then ``finish`` writes the manifest."""

    def __init__(self, root: str | os.PathLike, *, image_tokenizer: dict, text_tokenizer: dict,
                 tokens_per_image: int, shard_size: int = 8192, source: dict | None = None) -> None:
        self.root = Path(root)
        self.image_tokenizer, self.text_tokenizer = image_tokenizer, text_tokenizer
        self.tokens_per_image, self.shard_size, self.source = tokens_per_image, shard_size, source or {}
        self.shards: list[dict[str, Any]] = []
        self.skipped: dict[str, int] = {}
        self._pending: list[tuple[np.ndarray, list[int], str, str]] = []

    def add(self, image_tokens: np.ndarray, caption_ids: Sequence[int], caption: str, key: str) -> None:
        if image_tokens.shape != (self.tokens_per_image,):
            raise ValueError(f"image tokens of shape {image_tokens.shape}, this corpus holds ({self.tokens_per_image},)")
        self._pending.append((image_tokens, list(caption_ids), caption, key))
        if len(self._pending) >= self.shard_size:
            self._flush()

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    def _flush(self) -> None:
        if not self._pending:
            return
        tokens, ids, caps, keys = zip(*self._pending)
        name = f"shard-{len(self.shards):05d}"
        self.shards.append(write_shard(self.root / SHARDS, name, np.stack(tokens), ids, caps, keys))
        self._pending = []

    def finish(self) -> Path:
        self._flush()
        write_manifest(self.root, shards=self.shards, tokens_per_image=self.tokens_per_image,
                       image_tokenizer=self.image_tokenizer, text_tokenizer=self.text_tokenizer,
                       skipped=self.skipped, source=self.source)
        return self.root


def write_manifest(root: Path, *, shards: list[dict[str, Any]], tokens_per_image: int, image_tokenizer: dict,
                   text_tokenizer: dict, skipped: dict[str, int] | None = None, adjusted: dict[str, int] | None = None,
                   source: dict | None = None) -> dict[str, Any]:
    """The one manifest writer: every field of the format, in one order, written atomically and last."""
    manifest = {
        "format": FORMAT, "version": VERSION, "items": sum(s["items"] for s in shards),
        "tokens_per_image": tokens_per_image, "image_tokenizer": image_tokenizer, "text_tokenizer": text_tokenizer,
        "shards": shards, "skipped": dict(sorted((skipped or {}).items())),
        "adjusted": dict(sorted((adjusted or {}).items())), "source": source or {},
    }
    atomic.write_json(Path(root) / MANIFEST, manifest)
    return manifest


# --------------------------------------------------------------------- reading
def _memmap_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Memory-map every tensor of a safetensors file (8-byte header length, JSON header, data)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        header_len = int.from_bytes(raw, "little") if len(raw) == 8 else -1
        if not 0 < header_len <= min(size - 8, 1 << 24):
            raise ValueError("bad header length")
        header = json.loads(f.read(header_len))
    base = 8 + header_len
    arrays = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = np.dtype(_DTYPES[info["dtype"]])
        count = int(np.prod(info["shape"], dtype=np.int64))
        if end - start != count * dtype.itemsize or base + end > size:
            raise ValueError(f"tensor {name} runs past the end of the file")
        arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=base + start, shape=tuple(info["shape"])) \
            if count else np.zeros(info["shape"], dtype=dtype)
    return arrays


@dataclass
class _Shard:
    name: str
    start: int
    items: int
    image_tokens: np.ndarray
    caption_ids: np.ndarray
    caption_offsets: np.ndarray


class Corpus:
    """A read-only view of a corpus folder; items are addressed by a global index."""

    def __init__(self, root: Path, manifest: dict[str, Any], shards: list[_Shard]) -> None:
        self.root, self.manifest, self._shards = root, manifest, shards
        self._starts = np.array([s.start for s in shards] + [manifest["items"]], dtype=np.int64)
        self._texts: dict[str, list[dict]] = {}
        self._fingerprint: dict[str, str] | None = None

    # ---- identity
    @property
    def items(self) -> int:
        return int(self.manifest["items"])

    @property
    def tokens_per_image(self) -> int:
        return int(self.manifest["tokens_per_image"])

    @property
    def codebook_size(self) -> int:
        return int(self.manifest["image_tokenizer"]["codebook_size"])

    @property
    def image_tokenizer(self) -> dict:
        return self.manifest["image_tokenizer"]

    @property
    def text_tokenizer(self) -> dict:
        return self.manifest["text_tokenizer"]

    def __len__(self) -> int:
        return self.items

    # ---- data
    def _locate(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.items):
            raise IndexError("corpus index out of range")
        return np.searchsorted(self._starts, indices, side="right") - 1

    def image_tokens(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """(len(indices), tokens_per_image) uint16, in the order asked."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((indices.size, self.tokens_per_image), dtype=np.uint16)
        where = self._locate(indices)
        for s in np.unique(where):
            mask = where == s
            shard = self._shards[s]
            out[mask] = shard.image_tokens[indices[mask] - shard.start]
            if out[mask].size and int(out[mask].max()) >= self.codebook_size:  # a shard edited after its manifest
                raise TokalignError(_beyond_codebook(self.root / SHARDS / f"{shard.name}.safetensors",
                                                     int(out[mask].max()), self.codebook_size))
        return out

    def caption_ids(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        out = []
        for i, s in zip(indices, self._locate(indices)):
            shard = self._shards[s]
            j = i - shard.start
            out.append(np.asarray(shard.caption_ids[shard.caption_offsets[j]:shard.caption_offsets[j + 1]]))
        return out

    def all_caption_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """Every caption as one flat int64 id array and (items + 1) offsets."""
        flats, offsets, base = [], [np.zeros(1, dtype=np.int64)], 0
        for shard in self._shards:
            flats.append(np.asarray(shard.caption_ids, dtype=np.int64))
            offsets.append(np.asarray(shard.caption_offsets[1:], dtype=np.int64) + base)
            base += int(shard.caption_offsets[-1])
        return np.concatenate(flats) if flats else np.zeros(0, np.int64), np.concatenate(offsets)

    def iter_caption_shards(self) -> Iterable[tuple[int, str, np.ndarray, np.ndarray]]:
        """(first global index, shard name, caption ids, caption offsets) per shard, memory-mapped, in order."""
        for shard in self._shards:
            yield shard.start, shard.name, shard.caption_ids, shard.caption_offsets

    def records(self, indices: Sequence[int] | np.ndarray) -> list[dict]:
        """The ``{"key", "caption"}`` records of the given items."""
        indices = np.asarray(indices, dtype=np.int64)
        out = []
        for i, s in zip(indices, self._locate(indices)):
            shard = self._shards[s]
            if shard.name not in self._texts:
                self._texts[shard.name] = _read_jsonl(self.root / SHARDS / f"{shard.name}.jsonl", shard.items)
            out.append(self._texts[shard.name][i - shard.start])
        return out

    def captions(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        return [r["caption"] for r in self.records(indices)]

    def iter_shards(self) -> Iterable[tuple[int, np.ndarray]]:
        """(first global index, image tokens) for each shard, in order."""
        for shard in self._shards:
            yield shard.start, shard.image_tokens


def _read_jsonl(path: Path, expected: int) -> list[dict]:
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError) as exc:
        raise TokalignError(f"corpus captions file {path} is unreadable ({exc}); rebuild the corpus") from None
    if len(rows) != expected:
        raise TokalignError(f"corpus captions file {path} has {len(rows)} lines, expected {expected}; rebuild the corpus")
    return rows


def read_manifest(root: Path) -> dict[str, Any]:
    """The corpus manifest of ``root``, checked (format and version); one-line errors on any defect."""
    return _read_manifest(Path(root))


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if root.exists() and not root.is_dir():
        raise TokalignError(f"corpus {root} is a file, not a corpus folder; pass the folder `tokalign tokenize` "
                            "or `tokalign demo-corpus` wrote")
    if not root.is_dir():
        raise TokalignError(f"corpus folder {root} does not exist; build one with `tokalign demo-corpus`")
    if not path.is_file():
        raise TokalignError(f"{root} has no {MANIFEST}: it is not a tokalign corpus or its build did not finish; rebuild it")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise TokalignError(f"{path} is not valid JSON; rebuild the corpus") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TokalignError(f"{path} is not a tokalign corpus manifest (format must be {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise TokalignError(f"{root} is corpus format version {manifest.get('version')}; this tokalign reads version {VERSION}: "
                            "rebuild the corpus or upgrade tokalign")
    return manifest


def _beyond_codebook(path: Path, token: int, codebook_size: int) -> str:
    return (f"corpus shard {path} holds image token id {token}, but the codebook has {codebook_size} entries: the "
            "corpus was made with another image tokenizer; rebuild the corpus (or re-run its tokenize step with --resume)")


def _open_shard(root: Path, entry: dict, start: int, tokens_per_image: int, codebook_size: int) -> _Shard:
    path = root / SHARDS / f"{entry['name']}.safetensors"
    fix = "rebuild the corpus (or re-run its tokenize step with --resume)"
    if not path.is_file():
        raise TokalignError(f"corpus shard {path} is missing; {fix}")
    if path.stat().st_size != entry["bytes"]:
        raise TokalignError(f"corpus shard {path} is truncated or altered ({path.stat().st_size} bytes, manifest says "
                            f"{entry['bytes']}); {fix}")
    try:
        arrays = _memmap_safetensors(path)
        tokens, ids, offsets = arrays["image_tokens"], arrays["caption_ids"], arrays["caption_offsets"]
    except (ValueError, KeyError, OSError) as exc:
        raise TokalignError(f"corpus shard {path} is corrupt ({exc}); {fix}") from None
    n = entry["items"]
    if tokens.shape != (n, tokens_per_image) or offsets.shape != (n + 1,) or offsets[-1] != ids.shape[0]:
        raise TokalignError(f"corpus shard {path} does not match the manifest's shapes; {fix}")
    if offsets[0] != 0 or (n and bool((np.diff(offsets) < 0).any())):
        raise TokalignError(f"corpus shard {path} has damaged caption_offsets (not increasing from 0 to the caption "
                            f"length); {fix}")
    # the manifest records each shard's largest id, so opening stays O(manifest) at any corpus size (older
    # manifests without it are scanned); Corpus.image_tokens checks every batch it reads, `corpus check` all
    largest = int(entry["max_token"]) if isinstance(entry.get("max_token"), int) else (int(tokens.max()) if n else -1)
    if largest >= codebook_size:
        raise TokalignError(_beyond_codebook(path, largest, codebook_size))
    return _Shard(entry["name"], start, n, tokens, ids, offsets)


def open_corpus(root: str | os.PathLike) -> Corpus:
    """Open and validate a corpus folder; raise ``TokalignError`` on any defect."""
    root = Path(root)
    manifest = _read_manifest(root)
    try:
        tokens_per_image = int(manifest["tokens_per_image"])
        codebook_size = int(manifest["image_tokenizer"]["codebook_size"])
        entries = list(manifest["shards"])
        if isinstance(manifest["items"], bool) or not isinstance(manifest["items"], int):
            raise TokalignError(f"{root / MANIFEST} gives its item count as {manifest['items']!r}, not an integer; "
                                "rebuild the corpus")
        for entry in entries:
            if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)
                    and isinstance(entry.get("items"), int) and isinstance(entry.get("bytes"), int)):
                raise ValueError("bad shard entry")
    except (KeyError, TypeError, ValueError):
        raise TokalignError(f"{root / MANIFEST} lacks required fields; rebuild the corpus") from None
    shards, start = [], 0
    for entry in entries:
        shards.append(_open_shard(root, entry, start, tokens_per_image, codebook_size))
        start += entry["items"]
    if start != manifest["items"]:
        raise TokalignError(f"{root / MANIFEST} counts {manifest['items']} items but its shards hold {start}; rebuild the corpus")
    return Corpus(root, manifest, shards)


# --------------------------------------------------------------------- identity
def corpus_fingerprint(corpus: Corpus) -> dict[str, str]:
    """``{"shards", "text", "tokens"}`` sha256 digests that identify a corpus beyond its size and tokenizers.

    ``shards``: the manifest's shard entries; ``text``: every shard's ``.jsonl`` (keys and captions), from the
    ``text_sha256`` each shard entry records when it was written (O(manifest)), else streamed from the files
    (corpora written before that field); ``tokens``: a strided sample of at most 64 image-token rows per shard.
    Computed once per opened corpus. What ``fit --resume`` and the generator's sequences compare.
    """
    if corpus._fingerprint is None:
        entries = [[s.get("name"), s.get("items"), s.get("caption_tokens"), s.get("bytes"), s.get("text_bytes")]
                   for s in corpus.manifest["shards"]]
        corpus._fingerprint = {"shards": hashlib.sha256(json.dumps(entries).encode()).hexdigest(),
                               "text": _text_digest(corpus), "tokens": _token_digest(corpus)}
    return corpus._fingerprint


def _text_digest(corpus: Corpus) -> str:
    digest = hashlib.sha256()
    recorded = [s.get("text_sha256") for s in corpus.manifest["shards"]]
    if all(isinstance(r, str) for r in recorded):
        digest.update(("recorded:" + ",".join(recorded)).encode())
        return digest.hexdigest()
    for entry in corpus.manifest["shards"]:
        path = Path(corpus.root) / SHARDS / f"{entry['name']}.jsonl"
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise TokalignError(f"corpus captions file {path} is unreadable ({exc.strerror}); rebuild the corpus") from None
    return digest.hexdigest()


def _token_digest(corpus: Corpus, rows_per_shard: int = 64) -> str:
    digest = hashlib.sha256()
    for start, tokens in corpus.iter_shards():
        stride = max(1, len(tokens) // rows_per_shard)
        digest.update(f"{start}:{len(tokens)};".encode())
        digest.update(np.ascontiguousarray(tokens[::stride]).tobytes())
    return digest.hexdigest()
