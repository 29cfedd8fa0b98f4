"""decode(): every supported input and every failure class, each with its specific error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facegate.errors import (
    ImageNotFoundError,
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidInputError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedFormatError,
)
from facegate.vision import decode


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def obama(photos) -> Image.Image:
    return Image.open(photos["obama_1"]).convert("RGB")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_formats_decode_to_rgb(obama, fmt):
    arr = decode(_encode(obama, fmt))
    assert arr.dtype == np.uint8 and arr.shape == (obama.height, obama.width, 3)


def test_path_bytes_array_and_pil_agree(photos, obama):
    from_path = decode(photos["obama_1"])
    from_str = decode(str(photos["obama_1"]))
    from_pil = decode(obama)
    from_array = decode(np.asarray(obama))
    assert np.array_equal(from_path, from_str)
    assert np.array_equal(from_path, from_pil)
    assert np.array_equal(from_pil, from_array)
    assert np.array_equal(decode(bytearray(photos["obama_1"].read_bytes())), from_path)


def test_exif_orientation_is_applied(obama):
    rotated = obama.transpose(Image.Transpose.ROTATE_90)  # what a sideways-stored phone photo holds
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    arr = decode(_encode(rotated, "JPEG", exif=exif.tobytes(), quality=95))
    assert arr.shape[:2] == (obama.height, obama.width)


def test_grayscale_rgba_16bit_cmyk(obama):
    grey = decode(_encode(obama.convert("L"), "PNG"))
    assert grey.shape == (obama.height, obama.width, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    rgba = obama.convert("RGBA")
    rgba.putalpha(0)  # fully transparent -> white, not black
    assert decode(_encode(rgba, "PNG")).min() == 255
    sixteen = Image.fromarray(np.asarray(obama.convert("L")).astype(np.uint16) * 257)
    arr16 = decode(_encode(sixteen, "PNG"))
    assert abs(int(arr16.mean()) - int(np.asarray(obama.convert("L")).mean())) <= 1
    cmyk = decode(_encode(obama.convert("CMYK"), "JPEG", quality=95))
    assert cmyk.shape == (obama.height, obama.width, 3)
    assert np.abs(cmyk.astype(int) - np.asarray(obama).astype(int)).mean() < 12


def test_array_variants():
    assert decode(np.zeros((40, 50), np.uint8)).shape == (40, 50, 3)
    assert decode(np.ones((40, 50, 3), np.float32)).max() == 255
    assert decode(np.full((40, 50, 1), 65535, np.uint16)).max() == 255
    assert decode(np.zeros((40, 50, 4), np.uint8)).shape == (40, 50, 3)


def test_empty_bytes_is_not_an_image():
    with pytest.raises(NotAnImageError, match="empty"):
        decode(b"")


def test_random_bytes_is_not_an_image():
    with pytest.raises(NotAnImageError, match="not an image"):
        decode(b"\x00garbage" * 100)


def test_truncated_jpeg(photos):
    data = photos["obama_1"].read_bytes()
    for cut in (3000, len(data) // 2, len(data) - 50):  # inside the header, mid-scan, near the end
        with pytest.raises(TruncatedImageError, match="truncated"):
            decode(data[:cut])


def test_unsupported_format(obama):
    with pytest.raises(UnsupportedFormatError, match="GIF"):
        decode(_encode(obama, "GIF"))


def test_decompression_bomb_rejected_from_header():
    # 20000x20000 = 400 MP PNG of one colour: a few hundred KB on disk, 1.2 GB decoded.
    bomb = _encode(Image.new("L", (20000, 20000)), "PNG")
    assert len(bomb) < 2_000_000
    with pytest.raises(ImageTooLargeError, match=r"too large: 20000×20000"):
        decode(bomb)


def test_pixel_limit_is_configurable(obama):
    data = _encode(obama, "JPEG")
    with pytest.raises(ImageTooLargeError):
        decode(data, max_pixels=1000)
    assert decode(data, max_pixels=obama.width * obama.height).shape[0] == obama.height


def test_too_small():
    with pytest.raises(ImageTooSmallError):
        decode(np.zeros((8, 8, 3), np.uint8))


def test_missing_file(tmp_path):
    with pytest.raises(ImageNotFoundError):
        decode(tmp_path / "nope.jpg")


@pytest.mark.parametrize("bad", [12, None, 3.5, {"a": 1}, np.zeros((4, 4, 7), np.uint8), np.zeros(10)])
def test_wrong_types(bad):
    with pytest.raises(InvalidInputError):
        decode(bad)


def test_nan_float_array():
    arr = np.zeros((30, 30, 3), np.float32)
    arr[0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        decode(arr)
