"""Image preprocessing: shorter side to the target size, centre crop, RGB, and honest skip/adjust reasons."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

import tokalign.align.sources.samples as samples
from tokalign.align.errors import TokalignError
from tokalign.align.sources.image_prep import IMAGE_SUFFIXES, prepare_image, prepare_pil, resize_center_crop

RED, GREEN, BLUE, YELLOW, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 255, 255)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def blocks(width: int, height: int, regions: list[tuple[tuple[int, int, int, int], tuple]], mode: str = "RGB",
           background=(0, 0, 0)) -> Image.Image:
    """An image of solid rectangles ``(left, top, right, bottom) -> colour``."""
    image = Image.new(mode, (width, height), background)
    for box, colour in regions:
        image.paste(colour, box)
    return image


def smooth_photo(width: int, height: int) -> Image.Image:
    """A smooth colourful image (JPEG-friendly, so decoding paths can be compared)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 127.5 + 127.5 * np.sin(x / 97.0)
    g = 127.5 + 127.5 * np.cos(y / 71.0)
    b = 255.0 * (x + y) / (width + height)
    return Image.fromarray(np.rint(np.stack([r, g, b], axis=-1)).astype(np.uint8))


def test_wide_image_keeps_its_centre_and_crops_the_side_edges():
    # 1024x512: red | green | yellow | blue; the centre 512 columns (green, yellow) survive the crop
    image = blocks(1024, 512, [((0, 0, 256, 512), RED), ((256, 0, 512, 512), GREEN),
                               ((512, 0, 768, 512), YELLOW), ((768, 0, 1024, 512), BLUE)])
    prepared = prepare_image(encode(image))
    assert prepared.skip is None and prepared.adjustments == ()
    pixels = prepared.pixels
    assert pixels.shape == (256, 256, 3) and pixels.dtype == np.uint8 and pixels.flags.c_contiguous
    assert (pixels[:, 4:124] == GREEN).all()
    assert (pixels[:, 132:252] == YELLOW).all()
    assert pixels[:, :, 2].max() <= 32  # the right edge (blue) is cropped away: at most a bicubic fringe
    assert pixels[:, :4, 0].max() <= 32  # the left edge (red) is cropped away likewise


def test_tall_image_keeps_its_centre_and_crops_top_and_bottom():
    image = blocks(300, 900, [((0, 0, 300, 300), RED), ((0, 300, 300, 450), GREEN),
                              ((0, 450, 300, 600), YELLOW), ((0, 600, 300, 900), BLUE)])
    pixels = prepare_image(encode(image)).pixels
    assert pixels.shape == (256, 256, 3)
    assert (pixels[4:124] == GREEN).all()
    assert (pixels[132:252] == YELLOW).all()
    assert pixels[:, :, 2].max() <= 32 and pixels[:4, :, 0].max() <= 32


def test_exact_size_png_round_trips_pixel_identically():
    original = np.random.default_rng(0).integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    prepared = prepare_image(encode(Image.fromarray(original)))
    assert prepared.adjustments == ()
    np.testing.assert_array_equal(prepared.pixels, original)


def test_same_bytes_give_identical_output():
    data = encode(smooth_photo(700, 500), "JPEG", quality=90)
    np.testing.assert_array_equal(prepare_image(data).pixels, prepare_image(data).pixels)


def test_jpeg_draft_reduces_by_a_power_of_two_and_stays_close_to_full_decoding(monkeypatch):
    data = encode(smooth_photo(1100, 800), "JPEG", quality=95)
    drafted_sizes = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        drafted_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    fast = prepare_image(data).pixels
    assert drafted_sizes == [(550, 400)]  # min(1100 // 256, 800 // 256) = 3 -> reduce by 2
    full = np.asarray(resize_center_crop(Image.open(io.BytesIO(data)).convert("RGB"), 256))
    assert fast.shape == full.shape == (256, 256, 3)
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 2.0


def test_grayscale_becomes_rgb_with_equal_channels():
    gray = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    prepared = prepare_image(encode(Image.fromarray(gray)))
    assert prepared.adjustments == ("grayscale",)
    for channel in range(3):
        np.testing.assert_array_equal(prepared.pixels[:, :, channel], gray)


def test_one_bit_image_becomes_black_and_white_rgb():
    image = blocks(256, 256, [((0, 0, 128, 256), 1)], mode="1", background=0)
    prepared = prepare_image(encode(image))
    assert prepared.adjustments == ("grayscale",)
    assert (prepared.pixels[:, :128] == WHITE).all() and (prepared.pixels[:, 128:] == 0).all()


def test_sixteen_bit_grayscale_png_is_scaled_to_eight_bits():
    values = np.zeros((256, 256), dtype=np.uint16)
    values[:, :100] = 65535
    values[:, 100:200] = 32768
    prepared = prepare_image(encode(Image.fromarray(values)))
    assert Image.open(io.BytesIO(encode(Image.fromarray(values)))).mode == "I;16"
    assert prepared.adjustments == ("grayscale",)
    assert (prepared.pixels[:, :100] == 255).all()
    assert (prepared.pixels[:, 100:200] == 128).all()
    assert (prepared.pixels[:, 200:] == 0).all()


def test_thirty_two_bit_integer_image_is_read_as_sixteen_bit_range():
    values = np.full((256, 256), 65535, dtype=np.int32)
    values[:, 128:] = 100000  # beyond 16 bits: clipped
    values[:64] = -5  # negative: clipped to 0
    prepared = prepare_pil(Image.fromarray(values))
    assert prepared.adjustments == ("grayscale",)
    assert (prepared.pixels[64:] == 255).all() and (prepared.pixels[:64] == 0).all()


def test_cmyk_jpeg_is_converted_and_reported():
    image = blocks(256, 256, [((0, 0, 256, 128), (0, 0, 0, 0))], mode="CMYK", background=(0, 0, 0, 255))
    prepared = prepare_image(encode(image, "JPEG", quality=95))
    assert prepared.adjustments == ("cmyk",)
    assert prepared.pixels[8:120].min() >= 245  # no ink: white
    assert prepared.pixels[136:248].max() <= 10  # full black ink: black


def test_transparent_area_of_rgba_becomes_white():
    image = blocks(256, 256, [((0, 0, 128, 256), (255, 0, 0, 0)), ((128, 0, 256, 256), (0, 0, 255, 255))], mode="RGBA")
    prepared = prepare_image(encode(image))
    assert prepared.adjustments == ("alpha",)
    assert (prepared.pixels[:, :128] == WHITE).all()
    assert (prepared.pixels[:, 128:] == BLUE).all()


def test_half_transparent_pixels_are_blended_with_white():
    image = Image.new("RGBA", (256, 256), (0, 0, 0, 128))
    pixels = prepare_image(encode(image)).pixels
    assert (np.abs(pixels.astype(int) - 127) <= 1).all()


def test_fully_opaque_rgba_is_kept_without_an_alpha_adjustment():
    image = Image.new("RGBA", (256, 256), (10, 20, 30, 255))
    prepared = prepare_image(encode(image))
    assert prepared.adjustments == ()
    assert (prepared.pixels == (10, 20, 30)).all()


def test_gray_with_alpha_is_reported_as_alpha_and_grayscale():
    image = blocks(256, 256, [((0, 0, 256, 128), (0, 0))], mode="LA", background=(60, 255))
    prepared = prepare_image(encode(image))
    assert prepared.adjustments == ("alpha", "grayscale")
    assert (prepared.pixels[:128] == WHITE).all() and (prepared.pixels[128:] == 60).all()


def test_palette_png_is_converted_and_reported_as_palette():
    image = blocks(256, 256, [((0, 0, 128, 256), RED)], background=BLUE).quantize(colors=4)
    prepared = prepare_image(encode(image))
    assert prepared.adjustments == ("palette",)
    assert (prepared.pixels[:, :128] == RED).all() and (prepared.pixels[:, 128:] == BLUE).all()


def test_palette_png_with_transparency_is_reported_as_alpha():
    image = blocks(256, 256, [((0, 0, 128, 256), RED)], background=BLUE).quantize(colors=4)
    transparent_index = image.getpixel((0, 0))
    prepared = prepare_image(encode(image, transparency=transparent_index))
    assert prepared.adjustments == ("alpha",)
    assert (prepared.pixels[:, :128] == WHITE).all() and (prepared.pixels[:, 128:] == BLUE).all()


def test_animated_gif_gives_its_first_frame():
    first, second = Image.new("RGB", (256, 256), RED), Image.new("RGB", (256, 256), BLUE)
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    prepared = prepare_image(data)
    assert prepared.skip is None
    assert (prepared.pixels == RED).all()


def test_image_below_min_side_is_skipped_as_too_small():
    prepared = prepare_image(encode(Image.new("RGB", (40, 300), RED)))
    assert prepared.pixels is None and prepared.adjustments == ()
    assert prepared.skip == ("too_small", "shorter side 40 px < --min-side 64")


def test_image_between_min_side_and_size_is_upscaled():
    image = blocks(100, 120, [((0, 0, 50, 120), RED)], background=GREEN)
    prepared = prepare_image(encode(image))
    assert prepared.adjustments == ("upscaled",)
    assert prepared.pixels.shape == (256, 256, 3)
    assert (prepared.pixels[:, :120] == RED).all() and (prepared.pixels[:, 136:] == GREEN).all()


def test_adjustments_accumulate_in_order():
    prepared = prepare_image(encode(Image.new("L", (80, 80), 7)))
    assert prepared.adjustments == ("grayscale", "upscaled")
    assert (prepared.pixels == 7).all()


def test_truncated_jpeg_is_unreadable():
    data = encode(smooth_photo(400, 300), "JPEG", quality=90)
    prepared = prepare_image(data[: len(data) // 2])
    assert prepared.pixels is None
    assert prepared.skip[0] == "unreadable_image" and "truncated" in prepared.skip[1]


def test_random_bytes_are_unreadable_with_a_reproducible_detail():
    prepared = prepare_image(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert prepared.pixels is None
    assert prepared.skip == ("unreadable_image", "not an image in any format PIL can read")


def test_skip_details_name_no_memory_addresses(monkeypatch):
    def failing_load(self):
        raise OSError(f"decoder broke on {io.BytesIO()!r}\nsecond line")

    data = encode(Image.new("RGB", (300, 300)))
    monkeypatch.setattr(Image.Image, "load", failing_load)
    prepared = prepare_image(data)
    assert prepared.skip == ("unreadable_image", "OSError: decoder broke on <object> second line")


def test_empty_bytes_are_unreadable():
    assert prepare_image(b"").skip == ("unreadable_image", "zero-byte image")


def test_image_over_the_pixel_limit_is_unreadable_without_changing_the_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    warning_level = prepare_image(encode(Image.new("RGB", (120, 120))))  # 14,400 > limit: PIL only warns
    error_level = prepare_image(encode(Image.new("RGB", (160, 160))))  # 25,600 > 2 x limit: PIL refuses
    for prepared in (warning_level, error_level):
        assert prepared.pixels is None and prepared.skip[0] == "unreadable_image"
        assert "pixel limit" in prepared.skip[1]
    assert Image.MAX_IMAGE_PIXELS == 10_000
    assert prepare_image(encode(Image.new("RGB", (100, 100)))).skip is None


def test_exif_rotated_jpeg_is_turned_upright():
    upright = blocks(256, 512, [((0, 0, 256, 256), RED)], background=BLUE)  # red top, blue bottom
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # stored sideways (512x256) ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... with "rotate 90 degrees clockwise to display"
    pixels = prepare_image(encode(stored, "JPEG", quality=95, exif=exif)).pixels
    top, bottom = pixels[8:120].mean(axis=(0, 1)), pixels[136:248].mean(axis=(0, 1))
    assert top[0] > 240 and top[2] < 15
    assert bottom[2] > 240 and bottom[0] < 15


def test_other_modes_are_converted_and_reported_as_other_mode():
    prepared = prepare_pil(Image.new("RGB", (256, 256), (200, 40, 90)).convert("HSV"))
    assert prepared.adjustments == ("other_mode",)
    assert np.abs(prepared.pixels.astype(int) - (200, 40, 90)).max() <= 3


def test_float_image_in_unit_range_is_scaled_to_bytes():
    values = np.full((256, 256), 0.5, dtype=np.float32)
    values[:, :10] = np.nan
    prepared = prepare_pil(Image.fromarray(values))
    assert prepared.adjustments == ("other_mode",)
    assert (prepared.pixels[:, 10:] == 128).all() and (prepared.pixels[:, :10] == 0).all()


def test_float_image_beyond_unit_range_is_clipped_to_bytes():
    values = np.full((256, 256), 300.0, dtype=np.float32)
    values[:, :128] = 42.4
    pixels = prepare_pil(Image.fromarray(values)).pixels
    assert (pixels[:, :128] == 42).all() and (pixels[:, 128:] == 255).all()


def test_resize_center_crop_makes_a_square_of_the_centre():
    image = blocks(60, 20, [((20, 0, 40, 20), GREEN)], background=RED)
    out = resize_center_crop(image, 10)
    assert out.mode == "RGB" and out.size == (10, 10)
    assert (np.asarray(out)[:, 2:8] == GREEN).all()


@pytest.mark.parametrize("size, min_side", [(4, 2), (256, 0), (256, 300), (7, 7)])
def test_bad_size_or_min_side_is_a_config_error(size, min_side):
    data = encode(Image.new("RGB", (300, 300)))
    with pytest.raises(TokalignError):
        prepare_image(data, size=size, min_side=min_side)
    with pytest.raises(TokalignError):
        prepare_pil(Image.new("RGB", (300, 300)), size=size, min_side=min_side)
    with pytest.raises(TokalignError):
        prepare_image(b"", size=size, min_side=min_side)  # settings are checked before the data


def test_smallest_valid_settings_work():
    prepared = prepare_image(encode(Image.new("RGB", (9, 8), GREEN)), size=8, min_side=8)
    assert prepared.skip is None and (prepared.pixels == GREEN).all() and prepared.pixels.shape == (8, 8, 3)


def test_image_suffixes_are_the_shared_constant():
    assert IMAGE_SUFFIXES is samples.IMAGE_SUFFIXES
    assert IMAGE_SUFFIXES == (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def test_every_reported_reason_is_a_known_reason():
    cases = [encode(Image.new("LA", (100, 100), (1, 0))), encode(Image.new("RGB", (10, 10))), b"junk",
             encode(Image.new("CMYK", (300, 300)), "JPEG")]
    for data in cases:
        prepared = prepare_image(data)
        assert set(prepared.adjustments) <= set(samples.ADJUST_REASONS)
        assert prepared.skip is None or prepared.skip[0] in samples.SKIP_REASONS
