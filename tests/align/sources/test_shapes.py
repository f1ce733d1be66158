"""The procedural shapes corpus: deterministic, random-access, captions true to the pixels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tokalign.align.sources.shapes import (
    BACKGROUNDS,
    CAPTION_WORDS,
    COLOUR_NAMES,
    COLOURS,
    KINDS,
    POSITIONS,
    SHAPE_COLOURS,
    SIZES,
    Scene,
    make_scene,
    render,
    shape_item,
)

SCENES = [make_scene(7, i) for i in range(300)]


def test_same_seed_and_index_give_the_same_scene_and_pixels_in_any_order():
    later_first = [make_scene(7, i) for i in (299, 3, 150)]
    assert later_first == [SCENES[299], SCENES[3], SCENES[150]]
    image_a, labels_a = render(SCENES[3])
    image_b, labels_b = render(make_scene(7, 3))
    assert np.array_equal(image_a, image_b) and np.array_equal(labels_a, labels_b)


def test_scenes_differ_across_indices_and_seeds():
    captions = {scene.caption for scene in SCENES}
    assert len(captions) > 250
    assert make_scene(8, 3) != SCENES[3]
    assert not np.array_equal(shape_item(7, 0)[0], shape_item(7, 1)[0])


def test_captions_use_only_the_exported_vocabulary_and_cover_most_of_it():
    used = {word for scene in SCENES for word in scene.caption.split()}
    assert used <= set(CAPTION_WORDS)
    assert len(used) >= 0.9 * len(CAPTION_WORDS)
    assert all(scene.caption == " ".join(scene.caption.split()) for scene in SCENES)


def test_scene_contents_stay_within_the_grammar():
    counts = {len(scene.shapes) for scene in SCENES}
    assert counts == {1, 2, 3}
    for scene in SCENES:
        assert scene.background in BACKGROUNDS
        positions = [shape.position for shape in scene.shapes]
        assert len(set(positions)) == len(positions)  # one shape per grid cell
        for shape in scene.shapes:
            assert shape.kind in KINDS and shape.size in SIZES and shape.position in POSITIONS
            assert shape.colour in SHAPE_COLOURS and shape.colour != scene.background
            assert max(abs(a - b) for a, b in zip(shape.rgb, COLOURS[shape.colour])) <= 6


def test_caption_names_every_drawn_shape_and_its_colour():
    for scene in SCENES:
        words = scene.caption.split()
        for shape in scene.shapes:
            assert shape.kind in words and shape.colour in words
            assert POSITIONS[shape.position][1] in scene.caption


def test_every_colour_named_in_the_caption_is_painted_in_the_label_map():
    for scene in SCENES[:100]:
        image, labels = render(scene)
        painted = {COLOUR_NAMES[i] for i in np.unique(labels)}
        named = set(scene.caption.split()) & set(COLOURS)
        assert named <= painted, scene.caption
        assert painted == {scene.background} | {shape.colour for shape in scene.shapes}


def test_label_map_marks_exactly_the_pixels_painted_in_that_colour():
    for scene in SCENES[:50]:
        image, labels = render(scene)
        for colour in {shape.colour for shape in scene.shapes}:
            mask = labels == COLOUR_NAMES.index(colour)
            assert mask.sum() > 50  # even a small shape covers many pixels at 256
            # two shapes of one colour name each have their own jitter
            painted = {tuple(rgb) for rgb in np.unique(image[mask], axis=0)}
            assert painted == {shape.rgb for shape in scene.shapes if shape.colour == colour}
        background = labels == COLOUR_NAMES.index(scene.background)
        assert (image[background] == scene.background_rgb).all()


def test_shape_is_drawn_in_its_grid_cell():
    for scene in SCENES[:50]:
        _, labels = render(scene, size=192)
        for shape in scene.shapes:
            ys, xs = np.nonzero(labels == COLOUR_NAMES.index(shape.colour))
            (row, col), _ = POSITIONS[shape.position]
            # pixels of that colour in the shape's cell (another shape may share the colour elsewhere)
            inside = (ys // 64 == row) & (xs // 64 == col)
            assert inside.sum() > 30
            assert abs(ys[inside].mean() - (row + 0.5) * 64) < 12 and abs(xs[inside].mean() - (col + 0.5) * 64) < 12


def test_larger_sizes_paint_more_pixels():
    scene = next(s for s in SCENES if len(s.shapes) == 1 and s.shapes[0].kind == "circle")
    areas = []
    for size in ("small", "medium", "large"):
        one = Scene((replace(scene.shapes[0], size=size),), scene.background, scene.background_rgb, scene.caption)
        _, labels = render(one)
        areas.append(int((labels == COLOUR_NAMES.index(one.shapes[0].colour)).sum()))
    assert areas[0] < areas[1] < areas[2]


@pytest.mark.parametrize("size", [64, 256])
def test_shape_item_returns_an_rgb_uint8_image_and_the_scene_caption(size):
    image, caption = shape_item(3, 11, size=size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert caption == make_scene(3, 11).caption


def test_colour_table_is_consistent_and_colours_are_far_apart():
    assert COLOUR_NAMES == tuple(COLOURS) and len(COLOUR_NAMES) <= 256
    rgb = np.array([COLOURS[name] for name in COLOUR_NAMES], dtype=float)
    gaps = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(rgb)) * 1e9
    assert gaps.min() > 30  # well beyond the jitter of a few units per channel
