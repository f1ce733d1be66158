"""The unigram entropy of a corpus's image tokens, on corpora whose entropy is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokalign.align.errors import TokalignError
from tokalign.generate.sequences.unigram import entropy_of_counts, image_token_entropy


def _corpus(root, lm, rows):
    from tokalign.align.formats.corpus import CorpusWriter
    from tokalign.align.lm.captions import text_tokenizer_identity
    from tokalign.align.lm.load import tokenize_captions

    writer = CorpusWriter(root, image_tokenizer={"kind": "synthetic", "codebook_size": 8, "grid": [2, 2],
                                                 "sha256": "0" * 64},
                          text_tokenizer=text_tokenizer_identity(lm), tokens_per_image=4, shard_size=2)
    captions = ["a red circle"] * len(rows)
    for i, (row, ids) in enumerate(zip(rows, tokenize_captions(lm.tokenizer, captions))):
        writer.add(np.array(row, dtype=np.uint16), ids, captions[i], key=f"item-{i}")
    return writer.finish()


def test_entropy_counts_every_shard_and_ignores_unused_codes(tmp_path, lm):
    # 20 tokens over three shards: code 0 ten times, codes 1 and 2 five times each, codes 3..7 never
    rows = [[0, 0, 1, 2], [0, 0, 0, 0], [1, 1, 2, 2], [0, 0, 1, 2], [0, 1, 2, 0]]
    root = _corpus(tmp_path / "c", lm, rows)
    assert image_token_entropy(root) == pytest.approx(1.5 * math.log(2), abs=1e-12)


def test_uniform_tokens_have_the_entropy_of_a_uniform_guess(tmp_path, lm):
    root = _corpus(tmp_path / "c", lm, [[0, 1, 2, 3], [4, 5, 6, 7], [7, 6, 5, 4], [3, 2, 1, 0]])
    assert image_token_entropy(root) == pytest.approx(math.log(8), abs=1e-12)


def test_one_repeated_token_has_zero_entropy(tmp_path, lm):
    assert image_token_entropy(_corpus(tmp_path / "c", lm, [[5, 5, 5, 5]] * 3)) == 0.0


def test_no_tokens_is_refused():
    with pytest.raises(TokalignError, match="no image tokens"):
        entropy_of_counts(np.zeros(4))
