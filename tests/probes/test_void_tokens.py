"""The semantically-void rule on hand-picked tokens."""

from __future__ import annotations

import pytest

from tokalign.probes.void_tokens import is_void_text


@pytest.mark.parametrize("text", [",", ")", " ", "\n", "", "  \t", "2019", " 42", "##", "\ufffd", "\ufffd\ufffd", "...", "€", "\x07"])
def test_letterless_tokens_are_void(text):
    assert is_void_text(text)


@pytest.mark.parametrize("text", [" red", "circle", "ing", "é", "日", " A", "x2", "\ufffdé"])
def test_tokens_with_a_letter_are_not_void(text):
    assert not is_void_text(text)


def test_special_tokens_are_void_whatever_their_text():
    assert is_void_text("<|im_start|>", special=True)
    assert is_void_text("red", special=True)


def test_void_mask_marks_the_tiny_lm_vocabulary(tiny_lm, lm_cache):
    from tokalign.align.lm.load import load_frozen_lm
    from tokalign.probes.void_tokens import void_mask

    lm = load_frozen_lm(tiny_lm, lm_cache)
    mask = void_mask(lm.tokenizer, lm.vocab_size)
    vocab = lm.tokenizer.get_vocab()
    assert mask[vocab["[PAD]"]] and mask[vocab["[BOS]"]]  # special
    assert not mask[vocab["red"]] and not mask[vocab["circle"]]
