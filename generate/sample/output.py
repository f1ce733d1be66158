"""The output folder of ``tokalign generator sample``::

    samples.json          format tokalign-samples: model, prompts, per-image prompt/sample index and seed,
                          settings, timing (written last; the marker that makes the folder this command's)
    samples.safetensors   image_tokens (N, h*w) int64 codebook indices (what ``tokalign decode --tokens`` reads),
                          prompt_index (N,) and sample_index (N,) int64
    images/000000.png ..  one PNG per image, in the order of image_tokens
    grid.png              all images, one row per prompt (wrapped after 8), the prompt written above its row

The folder is built beside ``--out`` and moved into place complete. An existing ``--out`` is replaced only when
it is empty or holds this command's output (the shared rule of :mod:`tokalign.align.formats.outputs`: never
what tokalign did not write).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tokalign.align.errors import TokalignError

MARKER = "samples.json"
FORMAT = "tokalign-samples"
VERSION = 1
TOKENS_FILE = "samples.safetensors"
IMAGES = "images"
GRID = "grid.png"
COLUMNS = 8


KIND = "generator-samples"


def check_out(out: Path, model: Path, corpus: Path) -> None:
    """Refuse an ``out`` that holds anything but an earlier sample run, is (or holds) the model, or touches the corpus.

    A folder inside the model is allowed: the probe samples into ``MODEL/probe/samples`` by default.
    """
    from tokalign.align.formats.outputs import claim_output_dir

    claim_output_dir(Path(out), KIND, inputs=(Path(corpus),), keep=(Path(model),))


def write_tokens(folder: Path, image_tokens: np.ndarray, prompt_index: np.ndarray, sample_index: np.ndarray) -> Path:
    from tokalign.align.formats.atomic import save_safetensors

    path = Path(folder) / TOKENS_FILE
    save_safetensors(path, {"image_tokens": np.ascontiguousarray(image_tokens, dtype=np.int64),
                            "prompt_index": np.ascontiguousarray(prompt_index, dtype=np.int64),
                            "sample_index": np.ascontiguousarray(sample_index, dtype=np.int64)},
                     {"format": FORMAT, "version": str(VERSION)})
    return path


def grid_image(images: Sequence[np.ndarray], prompt_index: Sequence[int], prompts: Sequence[str]):
    """A PIL image: each prompt's images in rows of up to :data:`COLUMNS`, the prompt written above them."""
    from PIL import Image, ImageDraw, ImageFont

    cell = 256 if len(images) <= 16 else 128
    band, pad = 18, 4
    groups: dict[int, list[np.ndarray]] = {}
    for image, p in zip(images, prompt_index):
        groups.setdefault(int(p), []).append(image)
    columns = min(COLUMNS, max(len(g) for g in groups.values()))
    blocks = [(p, [g[i:i + columns] for i in range(0, len(g), columns)]) for p, g in groups.items()]
    width = pad + columns * (cell + pad)
    height = pad + sum(band + len(rows) * (cell + pad) for _, rows in blocks)
    canvas = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    y = pad
    for p, rows in blocks:
        label = prompts[p] if p < len(prompts) and prompts[p] else "(no prompt)"
        draw.text((pad, y + 2), _fit(draw, label, font, width - 2 * pad), fill="black", font=font)
        y += band
        for row in rows:
            for col, image in enumerate(row):
                tile = Image.fromarray(image).resize((cell, cell), Image.BILINEAR)
                canvas.paste(tile, (pad + col * (cell + pad), y))
            y += cell + pad
    return canvas


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def write_marker(folder: Path, body: dict) -> None:
    from tokalign.align.formats import atomic

    from tokalign.align.formats.outputs import write_marker as write_output_marker

    write_output_marker(Path(folder), KIND)
    atomic.write_json(Path(folder) / MARKER, {"format": FORMAT, "version": VERSION, **body})
