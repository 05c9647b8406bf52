"""Image reading: every PNG flavour a user may hand in becomes the same RGB, or one line naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from genvs_ns.data.images import load_rgb, load_rgb_uint8
from genvs_ns.errors import DataError


def test_16_bit_greyscale_is_scaled_not_clipped_white(tmp_path):
    grey = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    out = load_rgb_uint8(tmp_path / "g16.png")
    assert out.shape == (32, 32, 3) and (out[..., 0] == out[..., 2]).all()
    np.testing.assert_array_equal(out[..., 0], (grey / 257).round().astype(np.uint8))


def test_8_bit_greyscale_and_palette_images_become_rgb(tmp_path):
    grey = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    Image.fromarray(grey).save(tmp_path / "g8.png")
    np.testing.assert_array_equal(load_rgb_uint8(tmp_path / "g8.png"), np.repeat(grey[..., None], 3, axis=-1))
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:4] = (200, 30, 30)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_rgb_uint8(tmp_path / "p.png"), rgb)


def test_a_corrupt_image_is_one_line_naming_it(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(DataError, match=f"^{path}: unreadable or truncated image"):
        load_rgb_uint8(path)


def test_a_non_square_rgba_picture_is_padded_with_white_not_stretched(tmp_path):
    """genvs-sample --image: a 40x20 picture with a red square in its middle becomes a 16x16 image on white with the
    square still square (stretching it to the model's size would make it a 2:1 rectangle)."""
    rgba = np.zeros((20, 40, 4), np.uint8)  # transparent
    rgba[5:15, 15:25] = (255, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "wide.png")
    padded = load_rgb(tmp_path / "wide.png", size=(16, 16), pad_square=True)
    red = (padded[..., 0] > 0.9) & (padded[..., 1] < 0.1)
    rows, cols = np.nonzero(red)
    assert padded.shape == (16, 16, 3) and (padded[0] == 1).all() and (padded[-1] == 1).all()
    assert rows.max() - rows.min() == cols.max() - cols.min()  # still square
    assert abs(rows.mean() - 7.5) < 0.6 and abs(cols.mean() - 7.5) < 0.6  # still centred
    stretched = load_rgb(tmp_path / "wide.png", size=(16, 16))
    rows, cols = np.nonzero((stretched[..., 0] > 0.9) & (stretched[..., 1] < 0.1))
    assert rows.max() - rows.min() > cols.max() - cols.min()  # what it was before
