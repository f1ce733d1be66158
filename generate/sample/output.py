"""The output folder of ``tokalign generator sample``::

    samples.json          format tokalign-samples: model, prompts, per-image prompt/sample index and seed (and
                          file when decoded), settings, timing (written last; the marker of a complete run)
    samples.safetensors   image_tokens (N, h*w) int64 codebook indices (what ``tokalign decode --tokens`` reads),
                          prompt_index (N,) and sample_index (N,) int64; written first, decodable or not
    images/000000.png ..  one PNG per image, in the order of image_tokens (when the image tokenizer decodes)
    grid.png              all images, one row per prompt (wrapped after 8), the prompt written above its row

The folder is written in place: the tokens first, then the PNGs and the grid, then ``samples.json``. An existing
``--out`` must be empty or an earlier sample folder (the shared rule of :mod:`tokalign.align.formats.outputs`);
of an earlier run only the files its ``samples.json`` lists (and ``grid.png``, ``samples.safetensors``) are
replaced or removed, so files a user put there (``my_notes.txt``, ``images/favourite.txt``) stay. Grid labels
are fitted before sampling (:func:`fitted_labels`): any text works (newlines and control characters become
spaces), and trimming a long prompt takes O(log n) width measurements.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np

MARKER = "samples.json"
FORMAT = "tokalign-samples"
VERSION = 1
TOKENS_FILE = "samples.safetensors"
IMAGES = "images"
GRID = "grid.png"
COLUMNS = 8
BAND, PAD = 18, 4
NO_PROMPT = "(no prompt)"
KIND = "generator-samples"
_OWN_IMAGE = re.compile(r"^\d{6}\.png$")


def check_out(out: Path, model: Path, corpus: Path | None) -> None:
    """Refuse an ``out`` that holds anything but an earlier sample run, is (or holds) the model, or touches the corpus.

    A folder inside the model is allowed: the probe samples into ``MODEL/probe/samples`` by default.
    """
    from tokalign.align.formats.outputs import claim_output_dir

    claim_output_dir(Path(out), KIND, inputs=(Path(corpus),) if corpus is not None else (), keep=(Path(model),))


# ------------------------------------------------------------------ grid labels (fitted before sampling)
def cell_size(images: int) -> int:
    return 256 if images <= 16 else 128


def grid_width(images: int, per_prompt: int) -> int:
    return PAD + min(COLUMNS, per_prompt) * (cell_size(images) + PAD)


def one_line(text: str) -> str:
    """``text`` as one drawable line: every non-printable character (newline, tab, NUL, ...) becomes a space."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def fitted_labels(prompts: Sequence[str], images: int, per_prompt: int) -> list[str]:
    """The label drawn above each prompt's row, trimmed with "..." to the grid's width, each drawn once here."""
    from PIL import Image, ImageDraw, ImageFont

    font, width = ImageFont.load_default(), grid_width(images, per_prompt) - 2 * PAD
    scratch = ImageDraw.Draw(Image.new("RGB", (width + 2 * PAD, BAND), "white"))
    labels = []
    for prompt in (prompts or ("",)):
        label = _drawable(one_line(prompt) or NO_PROMPT, font)
        label = _fit(scratch, label, font, width)
        scratch.text((PAD, 2), label, fill="black", font=font)
        labels.append(label)
    return labels


def _drawable(text: str, font) -> str:
    from PIL.ImageFont import FreeTypeFont

    if isinstance(font, FreeTypeFont):
        return text
    return text.encode("latin-1", "replace").decode("latin-1")  # the bitmap font has latin-1 glyphs only


def _fit(draw, text: str, font, width: int) -> str:
    """The longest prefix of ``text`` (+ "...") within ``width`` pixels, found by bisection."""
    if draw.textlength(text, font=font) <= width:
        return text
    low, high = 0, min(len(text), 4 * width)  # no glyph is narrower than a quarter pixel
    while low < high:
        mid = (low + high + 1) // 2
        if draw.textlength(text[:mid] + "...", font=font) <= width:
            low = mid
        else:
            high = mid - 1
    return text[:low] + "..."


def grid_image(images: Sequence[np.ndarray], prompt_index: Sequence[int], labels: Sequence[str]):
    """A PIL image: each prompt's images in rows of up to :data:`COLUMNS`, its (fitted) label above them."""
    from PIL import Image, ImageDraw, ImageFont

    cell = cell_size(len(images))
    groups: dict[int, list[np.ndarray]] = {}
    for image, p in zip(images, prompt_index):
        groups.setdefault(int(p), []).append(image)
    columns = min(COLUMNS, max(len(g) for g in groups.values()))
    blocks = [(p, [g[i:i + columns] for i in range(0, len(g), columns)]) for p, g in groups.items()]
    width = PAD + columns * (cell + PAD)
    height = PAD + sum(BAND + len(rows) * (cell + PAD) for _, rows in blocks)
    canvas = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    y = PAD
    for p, rows in blocks:
        draw.text((PAD, y + 2), labels[p], fill="black", font=font)
        y += BAND
        for row in rows:
            for col, image in enumerate(row):
                tile = Image.fromarray(image).resize((cell, cell), Image.BILINEAR)
                canvas.paste(tile, (PAD + col * (cell + PAD), y))
            y += cell + PAD
    return canvas


# ------------------------------------------------------------------ writing, in place
def earlier_files(folder: Path) -> set[str]:
    """The files an earlier run's ``samples.json`` lists (relative names), and its fixed names."""
    try:
        body = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
        listed = {item.get("file") for item in body.get("images", []) if isinstance(item, dict)}
    except (OSError, ValueError, AttributeError, TypeError):
        listed = set()
    own = {name for name in listed if isinstance(name, str) and _is_own_image(name)}
    return own | {GRID, TOKENS_FILE}


def _is_own_image(name: str) -> bool:
    parts = Path(name).parts
    return len(parts) == 2 and parts[0] == IMAGES and bool(_OWN_IMAGE.match(parts[1]))


def begin(folder: Path) -> set[str]:
    """Start writing: mark the folder, drop the earlier run's ``samples.json``; return the earlier run's files."""
    from tokalign.align.formats.outputs import write_marker as write_output_marker

    folder = Path(folder)
    earlier = earlier_files(folder)
    write_output_marker(folder, KIND)
    (folder / MARKER).unlink(missing_ok=True)  # until this run completes, the folder claims no complete run
    return earlier


def write_tokens(folder: Path, image_tokens: np.ndarray, prompt_index: np.ndarray, sample_index: np.ndarray) -> Path:
    from tokalign.align.formats.atomic import save_safetensors

    path = Path(folder) / TOKENS_FILE
    save_safetensors(path, {"image_tokens": np.ascontiguousarray(image_tokens, dtype=np.int64),
                            "prompt_index": np.ascontiguousarray(prompt_index, dtype=np.int64),
                            "sample_index": np.ascontiguousarray(sample_index, dtype=np.int64)},
                     {"format": FORMAT, "version": str(VERSION)})
    return path


def write_images(folder: Path, tokenizer, tokens: np.ndarray, chunk: int = 16) -> list[np.ndarray]:
    """Decode ``tokens`` with the image tokenizer; write ``images/NNNNNN.png`` atomically; return the images."""
    from PIL import Image

    from tokalign.align.formats import atomic

    images = []
    for start in range(0, len(tokens), chunk):
        for offset, image in enumerate(tokenizer.decode(tokens[start:start + chunk])):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            atomic.write_bytes(Path(folder) / image_file(start + offset), buffer.getvalue())
            images.append(np.asarray(image))
    return images


def image_file(index: int) -> str:
    return f"{IMAGES}/{index:06d}.png"


def remove_stale(folder: Path, earlier: set[str], written: set[str]) -> None:
    """Remove the earlier run's files this run did not rewrite (never anything else)."""
    for name in sorted(earlier - written):
        (Path(folder) / name).unlink(missing_ok=True)


def read_samples(folder: Path) -> dict:
    """The ``samples.json`` of a finished sample folder."""
    return json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))


def write_marker(folder: Path, body: dict) -> None:
    from tokalign.align.formats import atomic

    atomic.write_json(Path(folder) / MARKER, {"format": FORMAT, "version": VERSION, **body})
