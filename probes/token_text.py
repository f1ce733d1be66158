"""Show LM tokens readably: what text a vocabulary piece stands for, with invisible characters made visible.

A tokenizer's vocabulary stores pieces in its own encoding: byte-level BPE
(GPT-2, SmolLM2, Llama 3) maps every byte to a printable character (``Ġ`` is a
space, ``Ċ`` a newline); SentencePiece-style vocabularies write a leading space
as ``▁`` and raw bytes as ``<0x0A>``.  :func:`piece_text` undoes that encoding
and :func:`visible` renders the text on one line:

* a space is ``␣`` (so ``" red"`` shows as ``␣red``);
* newline, tab and carriage return are ``\\n``, ``\\t``, ``\\r``; other control
  characters ``\\xNN`` / ``\\uNNNN``; a literal backslash is ``\\\\``;
* bytes that are not complete UTF-8 on their own (a piece holding half of a
  multi-byte character) are ``\\xNN``;
* special tokens keep their literal text and are marked: ``[special] <|im_start|>``.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

BYTE_LEVEL = "byte-level"
METASPACE = "metaspace"
PLAIN = "plain"
SPECIAL_MARK = "[special]"
MISSING = "[no token]"  # an embedding row that no vocabulary piece names

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_ESCAPES = {" ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: printable stand-in character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    byte_values = list(printable)
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(byte_values, chars)}


def detect_mode(tokenizer_json: dict[str, Any]) -> str:
    """``byte-level``, ``metaspace`` or ``plain``, from a ``tokenizer.json`` definition."""
    parts = [tokenizer_json.get(k) for k in ("decoder", "pre_tokenizer", "normalizer")]
    types: list[str] = []
    patterns: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("type"), str):
                types.append(node["type"])
            if isinstance(node.get("pattern"), dict):
                patterns.extend(str(v) for v in node["pattern"].values())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(parts)
    if "ByteLevel" in types:
        return BYTE_LEVEL
    if "Metaspace" in types or "ByteFallback" in types or "▁" in patterns:
        return METASPACE
    return PLAIN


def guess_mode(pieces: list[str]) -> str:
    """The mode of a vocabulary known only by its pieces (no ``tokenizer.json``)."""
    sample = pieces[: 20000]
    counts = {mark: sum(p.startswith(mark) for p in sample) for mark in ("Ġ", "▁")}
    if max(counts.values()) < max(1, len(sample) // 50):
        return PLAIN
    return BYTE_LEVEL if counts["Ġ"] >= counts["▁"] else METASPACE


def piece_bytes(piece: str, mode: str) -> bytes:
    """The bytes a vocabulary piece stands for."""
    if mode == BYTE_LEVEL:
        decoder = _byte_decoder()
        if all(ch in decoder for ch in piece):
            return bytes(decoder[ch] for ch in piece)
        return piece.encode("utf-8")  # an added token written as plain text
    if mode == METASPACE:
        match = _BYTE_PIECE.match(piece)
        if match:
            return bytes([int(match.group(1), 16)])
        return piece.replace("▁", " ").encode("utf-8")
    return piece.encode("utf-8")


def piece_text(piece: str, mode: str) -> str:
    """The text of a piece; bytes that are not valid UTF-8 alone become lone surrogates (see :func:`visible`)."""
    return piece_bytes(piece, mode).decode("utf-8", errors="surrogateescape")


def visible(text: str) -> str:
    """``text`` on one line with spaces, control characters and stray bytes made visible."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that surrogateescape could not decode
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") or (ch.isspace() and ch != " "):
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def display_token(piece: str | None, mode: str, special: bool = False) -> str:
    """How a vocabulary piece is shown to people: ``␣red``, ``\\n``, ``[special] <|im_start|>``."""
    if piece is None:
        return MISSING
    if special:
        return f"{SPECIAL_MARK} {visible(piece)}"
    shown = visible(piece_text(piece, mode))
    return shown if shown else "[empty]"
