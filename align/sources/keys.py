"""Safe item keys: every key tokalign writes is valid UTF-8, and an escaped one can be turned back.

File names on Linux are bytes.  Python reads a name that is not UTF-8 (``caf\\xe9.png`` written in Latin-1)
with ``surrogateescape``: each undecodable byte becomes a lone surrogate U+DC80..U+DCFF, which no UTF-8
writer accepts.  Tar member names are decoded the same way.  :func:`escape_key` leaves every valid key
unchanged and rewrites the others reversibly: an undecodable byte ``0xHH`` becomes ``\\xHH``, any other lone
surrogate ``\\uXXXX``, and a backslash ``\\\\``.  Items whose key was escaped are listed in ``adjusted.jsonl``
with the reason ``escaped_key``; :func:`unescape_key` gives back the original name (``os.fsencode`` of it
gives back the bytes on disk).
"""

from __future__ import annotations

import re

_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})")


def is_text(value: str) -> bool:
    """True when ``value`` encodes as UTF-8 (holds no lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escape_key(text: str) -> str:
    """``text`` itself when it is valid UTF-8; else its reversible escaped form (module docstring)."""
    if is_text(text):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def unescape_key(key: str) -> str:
    """The original name of a key that :func:`escape_key` escaped (listed as ``escaped_key``)."""
    def back(match: re.Match) -> str:
        body = match.group(1)
        if body == "\\":
            return "\\"
        return chr(0xDC00 + int(body[1:], 16)) if body[0] == "x" else chr(int(body[1:], 16))

    return _ESCAPE.sub(back, key)
