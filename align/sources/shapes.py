"""Procedural image-caption pairs: coloured shapes with plain-English captions.

This is tokalign's embedded default corpus; it needs no download.  A scene
holds one to three shapes (kind, colour, size) in distinct cells of a 3x3 grid
on a plain light background, and a caption from a small grammar, e.g.::

    a large red circle in the top left and a small blue square at the bottom on a white background
    in the center there is a green star

Items are random-access: item ``index`` of ``seed`` is drawn from
``np.random.default_rng([seed, index])`` alone, so items can be produced in any
order, in parallel workers, and reproduced one at a time.

Every word a caption may contain is in :data:`CAPTION_WORDS` (captions have no
punctuation, so ``caption.split()`` gives the words).  :func:`render` returns
the RGB image and a label map that gives, per pixel, the index into
:data:`COLOUR_NAMES` of the colour painted there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BACKGROUNDS",
    "CAPTION_WORDS",
    "COLOUR_NAMES",
    "COLOURS",
    "KINDS",
    "POSITIONS",
    "SHAPE_COLOURS",
    "SIZES",
    "Scene",
    "Shape",
    "make_scene",
    "render",
    "shape_item",
]

# Colours a shape may have; nominal RGB values, far apart from one another.
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 215, 30),
    "orange": (245, 135, 20),
    "purple": (130, 40, 170),
    "pink": (245, 130, 190),
    "brown": (120, 70, 30),
    "black": (15, 15, 15),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "cyan": (30, 200, 220),
}
# Background colours: light, and never the colour of a shape drawn on them.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "beige": (238, 226, 196),
    "lavender": (222, 214, 246),
    "mint": (204, 240, 214),
}
COLOURS: dict[str, tuple[int, int, int]] = {**SHAPE_COLOURS, **BACKGROUNDS}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
_COLOUR_INDEX = {name: i for i, name in enumerate(COLOUR_NAMES)}

KINDS: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "ring", "cross", "hexagon")
# Radius of each size as a fraction of a grid cell's side.
SIZES: dict[str, float] = {"small": 0.20, "medium": 0.30, "large": 0.42}
# Grid cell (row, column) and the phrase a caption uses for it.
POSITIONS: dict[str, tuple[tuple[int, int], str]] = {
    "top left": ((0, 0), "in the top left"),
    "top": ((0, 1), "at the top"),
    "top right": ((0, 2), "in the top right"),
    "left": ((1, 0), "on the left"),
    "center": ((1, 1), "in the center"),
    "right": ((1, 2), "on the right"),
    "bottom left": ((2, 0), "in the bottom left"),
    "bottom": ((2, 1), "at the bottom"),
    "bottom right": ((2, 2), "in the bottom right"),
}
_LEADS = ("", "a picture of", "an image of")
_GLUE = ("a", "an", "and", "there", "is", "on", "background", "with")

CAPTION_WORDS: tuple[str, ...] = tuple(
    sorted(
        set(_GLUE)
        | {w for lead in _LEADS for w in lead.split()}
        | {w for _, phrase in POSITIONS.values() for w in phrase.split()}
        | set(COLOUR_NAMES)
        | set(KINDS)
        | set(SIZES)
    )
)

_JITTER = 6  # per-shape RGB jitter, in units; colour names stay unambiguous
_OFFSET = 0.06  # shape centre jitter, as a fraction of a cell
_TILT = 15.0  # rotation jitter of polygons, degrees


@dataclass(frozen=True)
class Shape:
    """One shape: what a caption says about it, plus its exact rendering parameters."""

    kind: str
    colour: str
    size: str
    position: str
    rgb: tuple[int, int, int]  # jittered colour actually painted
    offset: tuple[float, float]  # (dx, dy) of the centre, in cell fractions
    angle: float  # rotation in degrees (ignored by circle and ring)


@dataclass(frozen=True)
class Scene:
    """Shapes on a plain background, with the caption describing them."""

    shapes: tuple[Shape, ...]
    background: str
    background_rgb: tuple[int, int, int]
    caption: str


def make_scene(seed: int, index: int) -> Scene:
    """Draw scene ``index`` of ``seed``; the same arguments always give the same scene."""
    rng = np.random.default_rng([int(seed), int(index)])
    background = str(rng.choice(list(BACKGROUNDS)))
    n_shapes = int(rng.integers(1, 4))
    cells = rng.choice(len(POSITIONS), size=n_shapes, replace=False)
    colours = [c for c in SHAPE_COLOURS if c != background]
    shapes = tuple(_draw_shape(rng, list(POSITIONS)[cell], colours) for cell in cells)
    return Scene(shapes, background, _jitter(rng, BACKGROUNDS[background]), _caption(rng, shapes, background))


def _draw_shape(rng: np.random.Generator, position: str, colours: list[str]) -> Shape:
    colour = str(rng.choice(colours))
    offset = tuple(float(v) for v in rng.uniform(-_OFFSET, _OFFSET, size=2))
    return Shape(
        kind=str(rng.choice(KINDS)),
        colour=colour,
        size=str(rng.choice(list(SIZES))),
        position=position,
        rgb=_jitter(rng, SHAPE_COLOURS[colour]),
        offset=(offset[0], offset[1]),
        angle=float(rng.uniform(-_TILT, _TILT)),
    )


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    values = np.clip(np.asarray(rgb) + rng.integers(-_JITTER, _JITTER + 1, size=3), 0, 255)
    return (int(values[0]), int(values[1]), int(values[2]))


# ---------------------------------------------------------------- captions


def _caption(rng: np.random.Generator, shapes: tuple[Shape, ...], background: str) -> str:
    order = rng.permutation(len(shapes))
    phrases = [_shape_phrase(rng, shapes[i]) for i in order]
    if len(shapes) == 1 and rng.random() < 0.4:
        noun, where = phrases[0]
        words = [where, "there", "is", noun] if rng.random() < 0.5 else ["there", "is", noun, where]
    else:
        words = [str(rng.choice(_LEADS))]
        joiner = "and" if rng.random() < 0.7 else "with"
        words.append(f" {joiner} ".join(f"{noun} {where}" for noun, where in phrases))
    if rng.random() < 0.5:
        words += ["on", _article(background), background, "background"]
    return " ".join(w for w in words if w)


def _shape_phrase(rng: np.random.Generator, shape: Shape) -> tuple[str, str]:
    """(noun phrase, position phrase); the size is left out a quarter of the time."""
    adjectives = [shape.size, shape.colour] if rng.random() < 0.75 else [shape.colour]
    noun = " ".join([_article(adjectives[0]), *adjectives, shape.kind])
    return noun, POSITIONS[shape.position][1]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# ---------------------------------------------------------------- rendering


def render(scene: Scene, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``scene`` at ``size`` x ``size`` pixels.

    Returns the RGB image, uint8 ``(size, size, 3)``, and the label map, uint8
    ``(size, size)``, holding per pixel the index into :data:`COLOUR_NAMES`
    of the colour painted there (shapes are drawn without anti-aliasing, so
    every pixel has exactly one colour).
    """
    image = Image.new("RGB", (size, size), scene.background_rgb)
    labels = Image.new("L", (size, size), _COLOUR_INDEX[scene.background])
    paint, label = ImageDraw.Draw(image), ImageDraw.Draw(labels)
    for shape in scene.shapes:
        _paint(paint, shape, shape.rgb, scene.background_rgb, size)
        _paint(label, shape, _COLOUR_INDEX[shape.colour], _COLOUR_INDEX[scene.background], size)
    return np.array(image), np.array(labels)


def _paint(draw: ImageDraw.ImageDraw, shape: Shape, fill, background, size: int) -> None:
    (row, col), _ = POSITIONS[shape.position]
    cell = size / 3
    cx = (col + 0.5 + shape.offset[0]) * cell
    cy = (row + 0.5 + shape.offset[1]) * cell
    r = SIZES[shape.size] * cell
    if shape.kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape.kind == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        inner = 0.55 * r
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=background)
    else:
        draw.polygon(_outline(shape.kind, cx, cy, r, shape.angle), fill=fill)


def _outline(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Polygon vertices of ``kind`` centred at (cx, cy) with outer radius r."""
    if kind == "cross":
        a, b = 0.34, 1.0  # half arm width, arm length (times r)
        unit = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
        points = [(x * r, y * r) for x, y in unit]
    elif kind == "star":
        points = [_polar(r if i % 2 == 0 else 0.45 * r, -90 + 36 * i) for i in range(10)]
    else:
        corners, start = {"square": (4, 45), "triangle": (3, -90), "diamond": (4, -90), "hexagon": (6, 0)}[kind]
        scale = 0.85 if kind == "square" else 1.0  # a square of radius r looks too big
        points = [_polar(scale * r, start + 360 * i / corners) for i in range(corners)]
    turn = math.radians(angle)
    cos, sin = math.cos(turn), math.sin(turn)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def _polar(radius: float, degrees: float) -> tuple[float, float]:
    t = math.radians(degrees)
    return radius * math.cos(t), radius * math.sin(t)


def shape_item(seed: int, index: int, size: int = 256) -> tuple[np.ndarray, str]:
    """The (RGB image, caption) pair of item ``index`` of ``seed``."""
    scene = make_scene(seed, index)
    image, _ = render(scene, size)
    return image, scene.caption
