"""A small synthetic corpus whose image tokens follow its captions' words."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_synthetic_corpus(root: Path, lm, items: int = 96, codebook: int = 64, length: int = 16, seed: int = 0,
                           shard_size: int = 48, grammar: bool = False) -> Path:
    """A corpus whose image tokens follow its captions' words (so there is something to learn); fast to build.

    Each caption word owns one code; an image repeats its words' codes, plus a
    quarter of random noise tokens. Captions are 2 to 5 random caption words, or with ``grammar`` the shapes
    source's own captions (:func:`grammar_captions`), which a language model can learn to predict.
    """
    from tokalign.align.lm.captions import text_tokenizer_identity
    from tokalign.align.formats.corpus import CorpusWriter
    from tokalign.align.lm.load import tokenize_captions
    from tokalign.align.sources.shapes import CAPTION_WORDS

    rng = np.random.default_rng(seed)
    writer = CorpusWriter(root, image_tokenizer={"kind": "synthetic", "codebook_size": codebook, "grid": [4, length // 4],
                                                 "sha256": "0" * 64},
                          text_tokenizer=text_tokenizer_identity(lm), tokens_per_image=length, shard_size=shard_size)
    words = [w for w in CAPTION_WORDS if w.isalpha()]
    if grammar:
        captions = grammar_captions(items, seed)
    else:
        captions = [" ".join(rng.choice(words, size=rng.integers(2, 6))) for _ in range(items)]
    code = {w: i % codebook for i, w in enumerate(words)}
    for i, (caption, ids) in enumerate(zip(captions, tokenize_captions(lm.tokenizer, captions))):
        meaning = np.array([code[w] for w in caption.split() if w in code])
        tokens = np.resize(meaning, length)
        noise = rng.random(length) < 0.25
        tokens[noise] = rng.integers(0, codebook, size=int(noise.sum()))
        writer.add(tokens.astype(np.uint16), ids, caption, key=f"item-{i}")
    return writer.finish()


def grammar_captions(count: int, seed: int) -> list[str]:
    """``count`` captions of the shapes source (scenes ``0..count-1`` of ``seed``), e.g. "a red circle in the center"."""
    from tokalign.align.sources.shapes import make_scene

    return [make_scene(seed, i).caption for i in range(count)]
