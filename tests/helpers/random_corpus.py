"""Large random corpora, written fast (shards straight from NumPy): for memory and scale checks.

Image tokens are uniform random ids; caption ids are random ids from the LM vocabulary (3-12 per caption) with
a stand-in caption text; the text tokenizer identity is the LM's, so a fit uses the stored ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_random_corpus(root: Path, items: int, *, text_tokenizer: dict, vocab_size: int, tokens_per_image: int = 1024,
                        codebook: int = 16384, shard_size: int = 8192, seed: int = 0) -> Path:
    from tokalign.align.formats import atomic
    from tokalign.align.formats.corpus import FORMAT, SHARDS, VERSION, write_manifest

    rng = np.random.default_rng(seed)
    root, shards = Path(root), []
    folder = root / SHARDS
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, items, shard_size):
        n = min(shard_size, items - start)
        name = f"shard-{len(shards):05d}"
        lengths = rng.integers(3, 13, size=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tensors = {"image_tokens": rng.integers(0, codebook, size=(n, tokens_per_image), dtype=np.uint16),
                   "caption_ids": rng.integers(0, vocab_size, size=int(offsets[-1]), dtype=np.int32),
                   "caption_offsets": offsets}
        atomic.save_safetensors(folder / f"{name}.safetensors", tensors, {"format": FORMAT, "version": str(VERSION)})
        text = "".join(json.dumps({"key": f"{start + i}", "caption": f"caption {start + i}"}) + "\n" for i in range(n))
        atomic.write_text(folder / f"{name}.jsonl", text)
        shards.append({"name": name, "items": n, "caption_tokens": int(offsets[-1]),
                       "bytes": (folder / f"{name}.safetensors").stat().st_size,
                       "text_bytes": (folder / f"{name}.jsonl").stat().st_size})
    image_tokenizer = {"kind": "random", "codebook_size": codebook, "grid": [1, tokens_per_image], "sha256": "0" * 64}
    write_manifest(root, shards=shards, tokens_per_image=tokens_per_image, image_tokenizer=image_tokenizer,
                   text_tokenizer=text_tokenizer)
    return root
