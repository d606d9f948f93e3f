"""write_png_uint8: the one PNG writer (round trip through PIL, modes, atomic write, dtype/shape errors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_synth.data import write_png, write_png_uint8

GRAY = (np.arange(8 * 12).reshape(8, 12) * 2 + 7).astype(np.uint8)  # 8 rows x 12 columns, no symmetry


@pytest.mark.parametrize("optimize", [False, True])
def test_grayscale_round_trip(tmp_path, optimize):
    out = write_png_uint8(GRAY, tmp_path / "g.png", optimize=optimize)
    assert isinstance(out, Path) and out == tmp_path / "g.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (12, 8)  # PIL size is (width, height)
        np.testing.assert_array_equal(np.asarray(im), GRAY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png"]  # no temporary file left


def test_rgb_round_trip(tmp_path):
    rgb = np.stack([GRAY, 255 - GRAY, np.full_like(GRAY, 9)], -1)
    write_png_uint8(rgb, tmp_path / "c.png")
    with Image.open(tmp_path / "c.png") as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), rgb)


def test_overwrites_and_write_png_goes_through_it(tmp_path):
    write_png_uint8(np.zeros((4, 4), np.uint8), tmp_path / "x.png")
    write_png_uint8(GRAY, tmp_path / "x.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png")), GRAY)
    write_png(GRAY[None] / 255.0, tmp_path / "y.png")  # [0, 1] float (1, H, W) -> round(255 x)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "y.png")), GRAY)


@pytest.mark.parametrize(
    "array",
    [
        GRAY.astype(np.float32) / 255,
        GRAY.astype(np.uint16),
        GRAY.astype(np.int8),
        np.zeros((8, 12, 4), np.uint8),
        np.zeros((1, 8, 12), np.uint8),
        np.zeros(8, np.uint8),
        np.zeros((2, 8, 12, 3), np.uint8),
    ],
    ids=["float", "uint16", "int8", "rgba", "channel-first", "1d", "4d"],
)
def test_wrong_dtype_or_shape_is_an_error(tmp_path, array):
    with pytest.raises(ValueError, match=rf"write_png_uint8 takes uint8 \(H, W\) or \(H, W, 3\), got {array.dtype}"):
        write_png_uint8(array, tmp_path / "bad.png")
    assert not list(tmp_path.iterdir())  # nothing written
