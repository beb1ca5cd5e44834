"""The one image loader: decoding, and its two resize policies."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from limefast.images import load_image


@pytest.fixture
def wide(tmp_path):
    """A 40x80 RGB file whose left and right quarters are red and blue, the middle green."""
    rgb = np.zeros((40, 80, 3), np.uint8)
    rgb[:, :20, 0] = 255
    rgb[:, 20:60, 1] = 255
    rgb[:, 60:, 2] = 255
    path = tmp_path / "wide.png"
    Image.fromarray(rgb).save(path)
    return path, rgb


def test_as_it_is(wide):
    path, rgb = wide
    np.testing.assert_array_equal(load_image(path), rgb)
    np.testing.assert_array_equal(load_image(path, 0), rgb)


def test_crop_keeps_the_centre_and_stretch_keeps_everything(wide):
    path, _ = wide
    crop = load_image(path, 20, resize="crop")
    stretch = load_image(path, 20, resize="stretch")
    assert crop.shape == stretch.shape == (20, 20, 3)
    inner = crop[:, 1:-1]  # bilinear filtering blends the outermost columns
    assert (inner[..., 1] == 255).all() and inner[..., [0, 2]].max() == 0  # the green middle
    assert stretch[:, 0, 0].min() == 255 and stretch[:, -1, 2].min() == 255  # both ends kept
    assert load_image(path, (10, 30), resize="stretch").shape == (10, 30, 3)
    assert load_image(path, (10, 30), resize="crop").shape == (10, 30, 3)


def test_grayscale_and_rgba_become_rgb(tmp_path):
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((5, 6), 77, np.uint8)).save(gray)
    rgba = tmp_path / "a.png"
    Image.fromarray(np.full((5, 6, 4), 9, np.uint8)).save(rgba)
    np.testing.assert_array_equal(load_image(gray), np.full((5, 6, 3), 77, np.uint8))
    np.testing.assert_array_equal(load_image(rgba), np.full((5, 6, 3), 9, np.uint8))


def test_bad_input(tmp_path, wide):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(OSError):  # Pillow's own error: callers word it for their users
        load_image(broken)
    with pytest.raises(ValueError, match="resize must be one of"):
        load_image(wide[0], 10, resize="squash")
    with pytest.raises(ValueError, match="size must be positive"):
        load_image(wide[0], (0, 5))
