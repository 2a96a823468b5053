"""data_prep.images: every input mode becomes upright 8-bit RGB; bad files become problems, not exceptions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from data_prep_fixtures import gradient_rgb, image_bytes, mode_variants
from PIL import Image

from data_prep.images import ImageSettings, normalise, prepare_image
from data_prep.records import ImageSource, Problem


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("name", sorted(mode_variants()))
def test_every_mode_variant_becomes_rgb_of_the_same_upright_size(name):
    image, _ = normalise(mode_variants()[name])
    assert image.mode == "RGB"
    # All variants are 40x30; orientation 6 (rotate 90 clockwise) swaps the sides.
    assert image.size == ((30, 40) if name == "rotated.jpg" else (40, 30))


def test_rgb_png_and_jpeg_keep_their_original_bytes():
    for name in ("rgb.png", "rgb.jpg"):
        data = mode_variants()[name]
        prepared = prepare_image(ImageSource("image", data=data, name=name), ImageSettings(embed=True), 0, "t", 0)
        assert prepared.data == data


@pytest.mark.parametrize("name", ["palette.png", "rgba.png", "grey16.png", "cmyk.jpg", "rotated.jpg", "bitmap.bmp"])
def test_converted_images_are_reencoded_as_rgb_png(name):
    source = ImageSource("image", data=mode_variants()[name], name=name)
    prepared = prepare_image(source, ImageSettings(embed=True), 0, "t", 0)
    decoded = _decode(prepared.data)
    assert (decoded.format, decoded.mode) == ("PNG", "RGB")
    assert (prepared.width, prepared.height) == decoded.size


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    rgba.putpixel((0, 0), (255, 0, 0, 255))  # one opaque red pixel
    image, changed = normalise(image_bytes(rgba))
    assert changed
    assert image.getpixel((1, 1)) == (255, 255, 255)
    assert image.getpixel((0, 0)) == (255, 0, 0)


def test_palette_transparency_is_composited_on_white():
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((0, 0), 1)
    image, _ = normalise(image_bytes(palette, transparency=0))
    assert image.getpixel((2, 2)) == (255, 255, 255)
    assert image.getpixel((0, 0)) == (0, 255, 0)


def test_sixteen_bit_grey_is_scaled_not_saturated():
    grey16 = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    image, _ = normalise(image_bytes(grey16))
    values = [image.getpixel((x, 0))[0] for x in range(3)]
    assert values == [0, 128, 255]  # a plain convert("RGB") would give [0, 255, 255]


def test_exif_rotation_is_applied_to_pixels():
    base = gradient_rgb(40, 30)
    # Orientation 6: the stored image must be rotated 90 degrees clockwise to display upright.
    image, changed = normalise(image_bytes(base, "PNG", exif_orientation=6))
    assert changed
    expected = base.transpose(Image.Transpose.ROTATE_270)
    assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_missing_file_and_garbage_become_problems(tmp_path):
    missing = prepare_image(ImageSource("img", path=tmp_path / "nope.jpg"), ImageSettings(embed=True), 3, "src", 0)
    assert isinstance(missing, Problem)
    assert (missing.row, missing.field, missing.reason) == (3, "img", "missing_image")
    garbage_file = tmp_path / "bad.jpg"
    garbage_file.write_bytes(b"\xff\xd8\xff garbage")
    garbage = prepare_image(ImageSource("img", path=garbage_file), ImageSettings(embed=True), 4, "src", 0)
    assert isinstance(garbage, Problem) and garbage.reason == "undecodable_image"
    assert str(garbage_file) in garbage.detail


def test_truncated_png_is_undecodable():
    data = image_bytes(gradient_rgb(64, 64))
    result = prepare_image(ImageSource("img", data=data[: len(data) // 2]), ImageSettings(embed=True), 0, "s", 0)
    assert isinstance(result, Problem) and result.reason == "undecodable_image"


def test_extreme_aspect_ratio_is_rejected():
    strip = image_bytes(Image.new("RGB", (402, 2), (1, 2, 3)))
    result = prepare_image(ImageSource("img", data=strip), ImageSettings(embed=True), 0, "s", 0)
    assert isinstance(result, Problem) and result.reason == "bad_aspect_ratio"


def test_path_mode_keeps_good_files_and_writes_normalised_copies(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(mode_variants()["rgb.png"])
    grey = tmp_path / "grey.jpg"
    grey.write_bytes(mode_variants()["grey.jpg"])
    settings = ImageSettings(embed=False, image_dir=tmp_path / "out")
    settings.image_dir.mkdir()
    kept = prepare_image(ImageSource("img", path=good), settings, 0, "s", 0)
    assert kept.file == str(good.resolve()) and kept.data is None
    copied = prepare_image(ImageSource("img", path=grey), settings, 7, "s", 1)
    assert copied.file.startswith(str(settings.image_dir.resolve()))
    assert Image.open(copied.file).mode == "RGB"
