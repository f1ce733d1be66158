"""Opening a corpus trusts each shard's recorded largest token id; reads and ``corpus check`` verify the data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tokalign.align.errors import TokalignError
from tokalign.align.formats.corpus import SHARDS, open_corpus
from tokalign.align.formats.corpus_check import check_corpus


def _poke_token(corpus_root, value: int) -> None:
    """Overwrite the first image token of shard 0 in place (size and manifest unchanged)."""
    path = corpus_root / SHARDS / "shard-00000.safetensors"
    raw = bytearray(path.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    start = 8 + header_len + header["image_tokens"]["data_offsets"][0]
    raw[start:start + 2] = int(value).to_bytes(2, "little")
    path.write_bytes(bytes(raw))


def test_the_manifest_records_each_shards_largest_token(synthetic_corpus):
    root = synthetic_corpus()
    corpus = open_corpus(root)
    for entry, (start, tokens) in zip(corpus.manifest["shards"], corpus.iter_shards()):
        assert entry["max_token"] == int(np.asarray(tokens).max())


def test_a_token_edited_beyond_the_codebook_is_refused_when_read_and_by_the_check(synthetic_corpus):
    root = synthetic_corpus(codebook=64)
    _poke_token(root, 999)
    corpus = open_corpus(root)  # the manifest still says every id < 64
    with pytest.raises(TokalignError, match="image token id 999"):
        corpus.image_tokens(np.arange(4))
    with pytest.raises(TokalignError, match="image token id 999"):
        check_corpus(root)
    assert corpus.image_tokens(np.arange(50, 54)).max() < 64  # rows of the other shard still read


def test_a_legacy_manifest_without_the_field_is_scanned_at_open(synthetic_corpus):
    root = synthetic_corpus(codebook=64)
    manifest = json.loads((root / "manifest.json").read_text())
    for entry in manifest["shards"]:
        del entry["max_token"]
    manifest["image_tokenizer"]["codebook_size"] = 8
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TokalignError, match="8 entries"):
        open_corpus(root)


def test_the_fingerprint_follows_the_recorded_text_hashes_and_the_check_verifies_them(synthetic_corpus):
    from tokalign.align.formats.corpus import corpus_fingerprint

    root = synthetic_corpus()
    first = corpus_fingerprint(open_corpus(root))
    assert corpus_fingerprint(open_corpus(root)) == first  # stable across opens
    check_corpus(root)
    path = root / SHARDS / "shard-00000.jsonl"
    path.write_text(path.read_text().replace("item-0", "item-X", 1))  # same length: only the hash can tell
    with pytest.raises(TokalignError, match="text_sha256"):
        check_corpus(root)
