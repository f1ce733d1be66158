"""The held-out English text the language probe scores: shipped with Python, not written by this project.

The default is two sections of the Python Language Reference as the standard library ships them for ``help()``
(``pydoc_data.topics``, PSF License): "Objects, values and types" and "Execution model". Plain English prose
about programs, present wherever Python is, and never part of an image-caption corpus. The text changes a little
between Python versions, so the source names the version. :func:`clean` makes it deterministic prose: heading
underlines dropped, wrapped lines joined, paragraphs kept; the probe then cuts it to its first N tokens.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tokalign.align.errors import TokalignError

TOPICS = ("objects", "execmodel")
_UNDERLINE = re.compile(r"^\s*([*=\-~^\"'`#+])\1{2,}\s*$")


@dataclass(frozen=True)
class HeldOutText:
    text: str
    source: str  #: where it came from, written into probe.json and probe.md


def packaged_text() -> HeldOutText:
    """The default held-out text (see the module docstring)."""
    from pydoc_data.topics import topics

    missing = [name for name in TOPICS if name not in topics]
    if missing:
        raise TokalignError(f"this Python's pydoc_data.topics lacks {', '.join(missing)}; pass --text-file")
    text = "\n\n".join(clean(topics[name]) for name in TOPICS)
    version = sys.version.split()[0]
    source = (f"Python {version} standard library, pydoc_data.topics {' + '.join(repr(t) for t in TOPICS)} "
              "(Python Language Reference: 'Objects, values and types', 'Execution model'; PSF License)")
    return HeldOutText(text, source)


def file_text(path: Path) -> HeldOutText:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokalignError(f"--text-file {path} is unreadable as UTF-8 ({type(exc).__name__})") from None
    if not text.strip():
        raise TokalignError(f"--text-file {path} is empty; pass a file of plain English text")
    return HeldOutText(clean(text), f"file {path}")


def clean(text: str) -> str:
    """Paragraphs of single-spaced prose: underline lines removed, wrapped lines joined."""
    paragraphs, current = [], []
    for line in text.splitlines():
        if _UNDERLINE.match(line):
            continue
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)
