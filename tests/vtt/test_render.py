"""Display rendering: stored values through the DICOM modality LUT, the window, a PNG holding pixels only."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from monai_synth.apps.vtt import DisplayImage, DisplayImageCache, encode_png, load_display_image, render_png
from monai_synth.data import write_demo_dicom, write_png_uint8


def png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, names = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        names.append(data[pos + 4 : pos + 8].decode("ascii"))
        pos += 12 + length
    return names


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_ct_dicom_in_hounsfield_units_with_its_voi_window(tmp_path):
    stored = np.array([[0, 1024, 2048], [424, 1624, 3000]], dtype=np.uint16)  # HU = stored - 1024
    path = write_demo_dicom(tmp_path / "ct.dcm", stored, "ct")  # VOI window -600 / 1500 (lung)
    image = load_display_image(path)
    np.testing.assert_allclose(image.values, stored.astype(np.float32) - 1024)
    assert image.default_window == (-600.0, 1500.0)
    shown = decode(render_png(image))  # lung: [-1350, 150] HU -> 0..255
    expected = np.round(np.clip((image.values + 1350) / 1500, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(shown, expected)
    soft = decode(render_png(image, (40.0, 400.0)))  # soft tissue: [-160, 240] HU
    np.testing.assert_array_equal(soft, np.round(np.clip((image.values + 160) / 400, 0, 1) * 255).astype(np.uint8))


def test_png_shown_as_stored_at_full_resolution(tmp_path):
    arr = np.arange(7 * 9, dtype=np.uint8).reshape(7, 9) * 4
    image = load_display_image(write_png_uint8(arr, tmp_path / "a.png"))
    assert image.values.shape == (7, 9) and image.default_window == (127.5, 255.0)
    np.testing.assert_array_equal(decode(render_png(image)), arr)  # rows first, values unchanged


def test_png_holds_no_metadata():
    data = encode_png(np.zeros((4, 5), np.uint8))
    assert png_chunks(data) == ["IHDR", "IDAT", "IEND"]
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 5), np.float32))


def test_non_8_bit_images_default_to_their_range():
    image = DisplayImage(np.array([[100.0, 300.0]], np.float32), (200.0, 200.0))
    np.testing.assert_array_equal(decode(render_png(image)), [[0, 255]])


def test_cache_keeps_the_most_recent(tmp_path):
    paths = [write_png_uint8(np.full((2, 2), i, np.uint8), tmp_path / f"{i}.png") for i in range(3)]
    cache = DisplayImageCache(max_items=2)
    first = cache.get(0, paths[0])
    assert cache.get(0, paths[0]) is first
    cache.get(1, paths[1])
    cache.get(2, paths[2])
    assert cache.get(0, paths[0]) is not first  # evicted, loaded again
    with pytest.raises(ValueError, match="max_items"):
        DisplayImageCache(0)
