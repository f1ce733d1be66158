"""What flows from an input source to ``tokalign tokenize``: raw samples, input parts, and the reasons items are dropped.

A *source* (``spec.py``) splits its input into *parts* (one WebDataset tar,
or a run of files or table rows) and reads each part as a stream of
:class:`RawSample`.  The tokenize pipeline turns every part into at most one
corpus shard, so a part is also the unit of resuming.

Nothing is dropped silently: an item that cannot be used is counted under one
of :data:`SKIP_REASONS` in the corpus manifest and listed in ``skipped.jsonl``;
an item that is kept but had to be changed (a grayscale image made RGB, a
small image upscaled) is counted under one of :data:`ADJUST_REASONS` and
listed in ``adjusted.jsonl``.

The pipeline checks a sample in this order and the first failing check names
its skip reason: ``skip`` set by the source; no image (``no_image``); no
caption (``no_caption``); an empty caption (``empty_caption``); then the image
is decoded (``unreadable_image``, ``too_small``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

SKIP_REASONS: dict[str, str] = {
    "no_image": "a caption with no image (an orphan caption, or its image member was lost)",
    "no_caption": "an image with no caption",
    "empty_caption": "a caption that is empty after stripping white space",
    "unreadable_caption": "a caption file that is not valid text/JSON or has no caption field, or a caption holding a lone surrogate (not text)",
    "unreadable_image": "image bytes that do not decode (corrupt, truncated or not an image)",
    "too_small": "an image whose shorter side is below the --min-side rule",
    "duplicate_key": "a second record for a key already seen in the same part (the first one is used)",
    "corrupt_tar": "a damaged region of a tar shard (counted once per region; the samples it breaks are counted under their own reason)",
}

ADJUST_REASONS: dict[str, str] = {
    "grayscale": "a grayscale (or 1-bit, or 16-bit) image converted to RGB",
    "cmyk": "a CMYK image converted to RGB",
    "alpha": "an image with transparency composited onto white",
    "palette": "a palette image converted to RGB",
    "other_mode": "an image in another mode (e.g. YCbCr, LAB, HSV, float) converted to RGB",
    "upscaled": "an image whose shorter side was below the target size, upscaled",
    "escaped_key": "a name that is not UTF-8 (a Latin-1 file or tar member name), kept under a reversibly escaped key "
                   "(see tokalign.align.sources.keys)",
    "symlink_outside": "a symbolic link in an input folder that points outside it, followed",
}

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")  # lower-case, what sources treat as images
TOKEN_SUFFIX = ".npy"  # pretokenized items: a .npy array of token ids (never pickled objects)

Payload = Union[bytes, np.ndarray, None]


@dataclass
class RawSample:
    """One item as a source delivers it, before any decoding.

    ``image`` is encoded image bytes (JPEG, PNG, WebP, ...), or an integer
    array of image token ids for pretokenized input, or ``None`` when the item
    has no image.  ``caption`` is the text exactly as stored (the pipeline
    strips it, nothing else), or ``None`` when there is none.  A source that
    already knows an item is unusable (an unreadable caption file, a damaged
    tar region) sets ``skip`` to ``(reason, detail)`` with a reason from
    :data:`SKIP_REASONS`.  ``notes`` are adjustments the source made (reasons from :data:`ADJUST_REASONS`,
    e.g. ``symlink_outside``), listed with the item in ``adjusted.jsonl`` when it is kept.
    """

    key: str
    image: Payload = None
    caption: str | None = None
    skip: tuple[str, str] | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Part:
    """A unit of input that becomes (at most) one corpus shard.

    ``index`` orders parts and names their shard (``shard-{index:05d}``);
    ``name`` is for people (a tar path, ``photos/[0:8192]``); ``fingerprint``
    is JSON that identifies the input bytes behind the part (path, size,
    modification time, row range), so ``--resume`` can tell that the input
    has not changed; ``locator`` is whatever the source needs to read it back.
    """

    index: int
    name: str
    fingerprint: dict[str, Any] = field(hash=False, compare=True)
    locator: Any = field(default=None, hash=False, compare=False)
