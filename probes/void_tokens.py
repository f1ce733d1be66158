"""Which text tokens are *semantically void*: the rule behind the report's share.

The paper (section 3.2) found that image tokens mostly land next to "noisy,
semantically void text tokens".  tokalign makes that measurable with one
rule, applied to a token's decoded text:

    a token is void  <=>  it is a special token,
                          or its text is empty or whitespace only,
                          or its text contains no letter (Unicode category L*).

"No letter" covers punctuation and symbols (``,`` ``)`` ``##``), digits only
(``2019``), byte fragments that decode to U+FFFD or control characters, and
sub-word pieces made only of such characters.  A piece with any letter
(``ing``, ``é``, ``日``) is not void, even if it is only part of a word.
"""

from __future__ import annotations

import unicodedata

REPLACEMENT = "\ufffd"


def is_void_text(text: str, special: bool = False) -> bool:
    """Apply the rule to a token's decoded text."""
    if special:
        return True
    return not any(unicodedata.category(ch).startswith("L") for ch in text if ch != REPLACEMENT)


def void_mask(tokenizer, vocab_size: int) -> list[bool]:
    """The rule for every id below ``vocab_size`` of a Hugging Face tokenizer."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    texts = [tokenizer.decode([i]) if i < len(tokenizer) else "" for i in range(vocab_size)]
    return [is_void_text(t, i in special) for i, t in enumerate(texts)]
