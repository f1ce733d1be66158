"""Image preprocessing: encoded image bytes in, one ``size`` x ``size`` RGB uint8 array out.

This is the paper's preprocessing: resize so the *shorter* side equals
``size`` (bicubic; PIL antialiases when shrinking), then centre-crop to a
square.  The resize and crop are one PIL call with a source ``box`` (the
centred square of side ``min(width, height)``), which is the same geometry
without rounding the longer side to whole pixels first.

Before that, every decodable image is brought to plain RGB:

1. decode fully (``load()``), so truncated files fail here rather than later;
   JPEGs are first asked for a DCT-domain reduction (``draft``) by a power of
   two that keeps the shorter side >= ``size``, which makes big photos cheap;
   multi-frame files (GIF, APNG, multi-page TIFF) give their first frame;
2. apply the EXIF orientation (a phone photo stored sideways is turned
   upright; this is not reported as an adjustment);
3. convert the mode, reporting what was changed with a reason from
   :data:`~tokalign.align.sources.samples.ADJUST_REASONS`:

   * ``RGB`` is kept;
   * ``L`` and ``1`` -> ``grayscale``; 16-bit ``I;16*`` -> ``grayscale``,
     scaled by 1/257 (65535 -> 255); 32-bit ``I`` -> ``grayscale``, read as
     16-bit data (the range PIL uses it for), values clipped to 0..65535 and
     scaled the same way;
   * anything with transparency (``RGBA``, ``RGBa``, ``LA``, ``La``, ``PA``,
     and ``P``/``L``/``RGB`` with a transparency key) is composited onto
     white -> ``alpha`` (plus ``grayscale`` for a gray colour part).  When
     every pixel is opaque nothing is composited, so the item is reported
     only for its colour part (``palette``, ``grayscale`` or nothing);
   * ``P`` -> ``palette``; ``CMYK`` -> ``cmyk`` (PIL's conversion);
   * ``F`` (float) -> ``other_mode``: an image whose values all lie in 0..1
     is read as 0..1 (scaled by 255), otherwise values are clipped to 0..255;
     NaN becomes 0;
   * any other mode (``YCbCr``, ``LAB``, ``HSV``, ...) -> ``other_mode`` via
     PIL's conversion (a mode PIL cannot convert makes the image unreadable).

Bad data never raises: the result carries ``skip = (reason, detail)`` with a
reason from :data:`~tokalign.align.sources.samples.SKIP_REASONS` (``unreadable_image``
for bytes that do not decode or exceed PIL's decompression-bomb pixel limit,
``too_small`` for a shorter side below ``min_side``).  Bad *settings* (``size``
or ``min_side`` out of range) raise :class:`TokalignError`.

Decompression-bomb warnings are turned into skips with a local
``warnings.catch_warnings()`` around ``Image.open``; that is safe here because
each DataLoader worker is its own single-threaded process.  PIL's global
pixel limit and ``LOAD_TRUNCATED_IMAGES`` are never changed.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from tokalign.align.errors import TokalignError
from tokalign.align.sources.samples import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "PreparedImage", "prepare_image", "prepare_pil", "resize_center_crop"]

_WHITE = (255, 255, 255, 255)
_ALPHA_MODES = {"RGBA": "", "RGBa": "", "LA": "grayscale", "La": "grayscale", "PA": "palette"}
_KEYED_MODES = {"RGB": "", "L": "grayscale", "P": "palette"}  # transparent only with a transparency key
_DETAIL_CHARS = 160
_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")  # e.g. "<_io.BytesIO object at 0x7f...>": not reproducible


@dataclass
class PreparedImage:
    """The outcome of preparing one image: pixels, or why there are none."""

    pixels: np.ndarray | None  # (size, size, 3) uint8 C-contiguous, or None when skipped
    skip: tuple[str, str] | None  # (reason from SKIP_REASONS, short one-line detail) when unusable
    adjustments: tuple[str, ...]  # reasons from ADJUST_REASONS for what was changed (may be empty)


def prepare_image(data: bytes, size: int = 256, min_side: int = 64) -> PreparedImage:
    """Decode encoded image bytes and prepare them as a ``size`` x ``size`` RGB array."""
    _check_settings(size, min_side)
    if len(data) == 0:
        return _skipped("unreadable_image", "zero-byte image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(bytes(data)))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _skipped("unreadable_image", f"exceeds PIL's decompression-bomb pixel limit ({_describe(exc)})")
    except Image.UnidentifiedImageError:
        return _skipped("unreadable_image", "not an image in any format PIL can read")
    except Exception as exc:  # any decoder failure is bad data, never a crash
        return _skipped("unreadable_image", _describe(exc))
    with image:
        return prepare_pil(image, size, min_side)


def prepare_pil(image: Image.Image, size: int = 256, min_side: int = 64) -> PreparedImage:
    """Prepare an opened (not necessarily loaded) PIL image as a ``size`` x ``size`` RGB array."""
    _check_settings(size, min_side)
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        return _skipped("unreadable_image", f"{width}x{height} exceeds PIL's decompression-bomb pixel limit of {limit} pixels")
    try:
        image = _decode(image, size)
    except Exception as exc:  # truncated or corrupt data shows up on load
        return _skipped("unreadable_image", _describe(exc))
    shorter = min(width, height)  # as stored: a JPEG draft may have reduced it, keeping it >= size
    if shorter < min_side:
        return _skipped("too_small", f"shorter side {shorter} px < --min-side {min_side}")
    try:
        rgb, adjustments = _to_rgb(image)
    except Exception as exc:  # a mode PIL cannot convert, or a conversion failing on odd data
        return _skipped("unreadable_image", f"mode {image.mode} cannot be made RGB ({_describe(exc)})")
    if shorter < size:
        adjustments += ("upscaled",)
    pixels = np.array(resize_center_crop(rgb, size), dtype=np.uint8, order="C")
    assert pixels.shape == (size, size, 3), pixels.shape
    return PreparedImage(pixels=pixels, skip=None, adjustments=adjustments)


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (bicubic, antialiased), keeping the centred square.

    The mode is kept (RGB in, RGB out).  An image already ``size`` x ``size``
    is returned as an unchanged copy.
    """
    width, height = image.size
    if (width, height) == (size, size):
        return image.copy()
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return image.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))


def _check_settings(size: int, min_side: int) -> None:
    if size < 8:
        raise TokalignError(f"image size {size} is too small; use an image size of 8 or more (256 is the paper's)")
    if not 1 <= min_side <= size:
        raise TokalignError(f"--min-side {min_side} is out of range; use a value from 1 to the image size {size}")


def _decode(image: Image.Image, size: int) -> Image.Image:
    """Fully decode the first frame (JPEGs reduced by ``draft``) and apply the EXIF orientation."""
    if image.format in ("JPEG", "MPO"):
        # draft reduces by the largest power of two k with min(w, h) // size >= k, so the shorter side stays >= size
        image.draft("RGB", (size, size))
    image.load()
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # a malformed EXIF block: keep the image as stored
        log.debug("ignoring unreadable EXIF orientation: %s", _describe(exc))
        return image


def _to_rgb(image: Image.Image) -> tuple[Image.Image, tuple[str, ...]]:
    """The image as plain RGB, with the adjustment reasons for what was changed."""
    mode = image.mode
    if mode in _ALPHA_MODES or (mode in _KEYED_MODES and image.has_transparency_data):
        return _flatten_alpha(image)
    if mode == "RGB":
        return image, ()
    if mode in ("L", "1"):
        return image.convert("RGB"), ("grayscale",)
    if mode.startswith("I"):  # I;16, I;16L, I;16B, I;16N and 32-bit I
        return _gray16_to_rgb(image), ("grayscale",)
    if mode == "P":
        return image.convert("RGB"), ("palette",)
    if mode == "CMYK":
        return image.convert("RGB"), ("cmyk",)
    if mode == "F":
        return _float_to_rgb(image), ("other_mode",)
    return image.convert("RGB"), ("other_mode",)


def _flatten_alpha(image: Image.Image) -> tuple[Image.Image, tuple[str, ...]]:
    """Composite onto white when any pixel is see-through; report ``alpha`` only then."""
    colour = _ALPHA_MODES.get(image.mode, _KEYED_MODES.get(image.mode, ""))
    colour_reasons = (colour,) if colour else ()
    if image.mode == "La":
        image = image.convert("LA")  # PIL converts La only to LA (un-premultiplying)
    rgba = image.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] == 255:
        return rgba.convert("RGB"), colour_reasons
    white = Image.new("RGBA", rgba.size, _WHITE)
    reasons = ("alpha", "grayscale") if colour == "grayscale" else ("alpha",)
    return Image.alpha_composite(white, rgba).convert("RGB"), reasons


def _gray16_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit (or 16-bit-range 32-bit) gray to 8-bit RGB, rounding 0..65535 onto 0..255."""
    values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
    gray = ((values + 128) // 257).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _float_to_rgb(image: Image.Image) -> Image.Image:
    """Float gray to 8-bit RGB: 0..1 data scaled by 255, anything else clipped to 0..255."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if values.size and values.min() >= 0.0 and values.max() <= 1.0:
        values = values * 255.0
    gray = np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _skipped(reason: str, detail: str) -> PreparedImage:
    return PreparedImage(pixels=None, skip=(reason, detail), adjustments=())


def _describe(exc: BaseException) -> str:
    """A short, one-line, reproducible description of an exception, for skip details."""
    text = _OBJECT_REPR.sub("<object>", " ".join(str(exc).split())) or "no message"
    return f"{type(exc).__name__}: {text}"[:_DETAIL_CHARS]
