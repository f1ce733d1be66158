"""Sequences built once from a corpus: layout, truncation, image-only mode, refusals, reuse."""

from __future__ import annotations

import numpy as np
import pytest

from tokalign.align.errors import TokalignError
from tokalign.align.formats.corpus import open_corpus
from tokalign.align.formats.generator_init import VocabLayout
from tokalign.align.lm.captions import tokenizer_fingerprint
from tokalign.generate.sequences.build import build_sequences, default_seq_len, max_caption_tokens, open_sequences


@pytest.fixture
def corpus(synthetic_corpus):
    return open_corpus(synthetic_corpus())


@pytest.fixture
def layout(lm, corpus):
    return VocabLayout(lm.vocab_size, corpus.codebook_size)


def _build(corpus, layout, lm, out, **kw):
    return build_sequences(corpus, out, layout, text_tokenizer_sha256=tokenizer_fingerprint(lm.tokenizer), **kw)


def test_rows_follow_the_paper_layout(corpus, layout, lm, tmp_path):
    seqs = _build(corpus, layout, lm, tmp_path / "seq", seq_len=40)
    s = layout.special_ids
    assert seqs.tokens.shape == (corpus.items, 40) and seqs.tokens.dtype == np.int32
    images = corpus.image_tokens(np.arange(corpus.items))
    for i, caption in enumerate(corpus.caption_ids(np.arange(corpus.items))):
        row, c = seqs.tokens[i], len(caption)
        assert seqs.caption_lengths[i] == c
        assert row[0] == s["<doc>"] and row[1] == s["<text>"]
        assert np.array_equal(row[2:2 + c], caption) and row[2 + c] == s["</text>"] and row[3 + c] == s["<image>"]
        assert np.array_equal(row[4 + c:20 + c], images[i].astype(np.int64) + layout.image_offset)
        assert row[20 + c] == s["</image>"] and row[21 + c] == s["</doc>"]
        assert (row[22 + c:] == layout.pad_id).all()
    assert seqs.record["truncated"] == 0 and seqs.record["max_caption_tokens"] == 40 - 16 - 6


def test_long_captions_are_truncated_and_counted(corpus, layout, lm, tmp_path):
    seqs = _build(corpus, layout, lm, tmp_path / "seq", seq_len=16 + 6 + 3)
    lengths = np.array([len(c) for c in corpus.caption_ids(np.arange(corpus.items))])
    assert seqs.record["truncated"] == int((lengths > 3).sum()) > 0
    assert seqs.record["caption_tokens_cut"] == int(np.maximum(lengths - 3, 0).sum())
    long = int(np.flatnonzero(lengths > 3)[0])
    assert np.array_equal(seqs.tokens[long, 2:5], corpus.caption_ids([long])[0][:3])
    assert seqs.tokens[long, 5] == layout.special("</text>") and seqs.tokens[long, -1] == layout.special("</doc>")


def test_image_only_mode_drops_the_text_segment(corpus, layout, lm, tmp_path):
    seqs = _build(corpus, layout, lm, tmp_path / "seq", seq_len=20, mode="image-only")
    s = layout.special_ids
    row = seqs.tokens[0]
    assert row[0] == s["<doc>"] and row[1] == s["<image>"] and row[18] == s["</image>"] and row[19] == s["</doc>"]
    assert not np.isin(seqs.tokens, [s["<text>"], s["</text>"]]).any() and (seqs.caption_lengths == 0).all()


@pytest.mark.parametrize("mode, shortest", [("text-to-image", 23), ("image-only", 20)])
def test_too_short_seq_len_is_refused(corpus, layout, lm, tmp_path, mode, shortest):
    with pytest.raises(TokalignError, match=f"--seq-len {shortest} or more"):
        _build(corpus, layout, lm, tmp_path / "seq", seq_len=shortest - 1, mode=mode)
    assert not (tmp_path / "seq").exists()
    assert max_caption_tokens(shortest, 16, mode) == (1 if mode == "text-to-image" else 0)


def test_default_seq_len_is_the_papers_for_1024_tokens():
    assert default_seq_len(1024) == 1152 and default_seq_len(16) == 192


def test_corpus_of_another_text_tokenizer_is_refused(corpus, layout, tmp_path):
    with pytest.raises(TokalignError, match="tokenized with"):
        build_sequences(corpus, tmp_path / "seq", layout, seq_len=40, text_tokenizer_sha256="0" * 64)
    build_sequences(corpus, tmp_path / "img", layout, seq_len=40, mode="image-only", text_tokenizer_sha256="0" * 64)


def test_layout_for_another_codebook_is_refused(corpus, lm, tmp_path):
    with pytest.raises(TokalignError, match="image rows"):
        _build(corpus, VocabLayout(lm.vocab_size, 128), lm, tmp_path / "seq", seq_len=40)


def test_a_built_folder_is_reused_and_a_different_one_refused(corpus, layout, lm, tmp_path):
    first = _build(corpus, layout, lm, tmp_path / "seq", seq_len=40)
    mtime = (tmp_path / "seq" / "tokens.npy").stat().st_mtime_ns
    again = _build(corpus, layout, lm, tmp_path / "seq", seq_len=40)
    assert (tmp_path / "seq" / "tokens.npy").stat().st_mtime_ns == mtime
    assert np.array_equal(first.tokens, again.tokens) and open_sequences(tmp_path / "seq").record == first.record
    with pytest.raises(TokalignError, match="seq_len"):
        _build(corpus, layout, lm, tmp_path / "seq", seq_len=48)
