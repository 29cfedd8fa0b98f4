"""bytes / path / array / PIL image -> RGB uint8 numpy array, or a specific decode error.

Pillow does the decoding; facegate adds the checks a service facing untrusted uploads needs:
a pixel limit and a memory estimate enforced from the header before any pixel is decoded, a
process-wide memory budget shared by concurrent decodes, EXIF orientation, and a single colour
convention (RGB, uint8, HxWx3) for everything downstream.

Memory: Pillow holds 1, 2 or 4 bytes per pixel depending on the mode; the conversion to RGB runs
in strips of rows into the one output array, so a decode peaks at about (Pillow's bytes per
pixel + 3) x pixels whatever the mode (a float TIFF or an RGBA PNG used to cost several times that).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import (
    DecodeMemoryError,
    ImageNotFoundError,
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidInputError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedFormatError,
)

ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | np.ndarray | Image.Image

DEFAULT_MAX_PIXELS = 40_000_000
MIN_SIDE = 16
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF"})
STRIP_ROWS = 256  # rows converted at a time: temporaries stay a few MB at any width
_ORIENTATION = 0x0112

# facegate applies its own pixel limit; Pillow's global one would fire with a different error.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


def decode(image: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return the image as a C-contiguous RGB uint8 array of shape (H, W, 3).

    numpy input is taken as RGB (or grey / RGBA); uint16 and float arrays are rescaled.
    """
    if isinstance(image, np.ndarray):
        return _from_array(image, max_pixels)
    if isinstance(image, Image.Image):
        _check_size(image.width, image.height, max_pixels)
        return _from_pil(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(image), max_pixels)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ImageNotFoundError(f"no such image file: {path}", path=str(path))
        return _from_bytes(path.read_bytes(), max_pixels, name=str(path))
    raise InvalidInputError(
        f"cannot read an image from {type(image).__name__}; pass a path, bytes, a numpy array or a PIL image",
        type=type(image).__name__,
    )


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"too large: {width}×{height} = {width * height:,} pixels > limit {max_pixels:,}",
            width=width,
            height=height,
            max_pixels=max_pixels,
        )
    if min(width, height) < MIN_SIDE:
        raise ImageTooSmallError(
            f"too small: {width}×{height}; each side must be at least {MIN_SIDE} px", width=width, height=height
        )


class DecodeBudget:
    """Bytes that concurrent decodes in this process may hold together. A decode reserves its
    header estimate before Pillow decodes a pixel and waits while others hold the budget; one
    that alone needs more than the whole budget is refused. ``limit=None``: no bound."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.held = 0
        self._cond = threading.Condition()

    def configure(self, limit: int | None) -> None:
        with self._cond:
            self.limit = limit
            self._cond.notify_all()

    @contextlib.contextmanager
    def reserve(self, nbytes: int, name: str = "image") -> Iterator[None]:
        with self._cond:
            if self.limit is not None and nbytes > self.limit:
                raise DecodeMemoryError(
                    f"too large to decode: {name} needs about {nbytes / 2**20:,.0f} MiB of memory, more than the "
                    f"decode budget of {self.limit / 2**20:,.0f} MiB; send an 8-bit JPEG, PNG or WebP of fewer pixels",
                    needed_bytes=nbytes, limit_bytes=self.limit,
                )
            while self.limit is not None and self.held + nbytes > self.limit:
                self._cond.wait()
            self.held += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.held -= nbytes
                self._cond.notify_all()


# One per process: the service sizes it from its settings (decode_memory_mb).
budget = DecodeBudget()


def decode_cost(img: Image.Image) -> int:
    """Peak bytes decoding ``img`` to RGB takes, from its header: Pillow's buffer plus the output."""
    pillow_bytes = {"1": 1, "L": 1, "P": 1}.get(img.mode, 2 if img.mode.startswith("I;16") else 4)
    return img.width * img.height * (pillow_bytes + 3)


def _from_bytes(data: bytes, max_pixels: int, name: str = "image") -> np.ndarray:
    if not data:
        raise NotAnImageError(f"not an image: {name} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise NotAnImageError(f"not an image: {name} is not in a recognised image format") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        if _is_truncation(exc):
            raise TruncatedImageError(f"truncated: {name} ends inside its header") from exc
        raise NotAnImageError(f"not an image: {name} could not be parsed ({exc})") from exc
    if img.format not in SUPPORTED_FORMATS:
        raise UnsupportedFormatError(
            f"unsupported format {img.format}; use JPEG, PNG, WebP, BMP or TIFF", format=img.format
        )
    # Header-only so far: refuse decompression bombs before a single pixel is decoded.
    _check_size(img.width, img.height, max_pixels)
    with budget.reserve(decode_cost(img), name):
        try:
            img.load()
        except OSError as exc:
            if _is_truncation(exc):
                raise TruncatedImageError(f"truncated: {name} ends before the image data is complete") from exc
            raise NotAnImageError(f"not an image: {name} could not be decoded ({exc})") from exc
        except (ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise NotAnImageError(f"not an image: {name} could not be decoded ({exc})") from exc
        orientation = _orientation(img)
        rgb = _from_pil(img)
        img.close()
        # A view; the copy that makes it contiguous is made after Pillow's buffer is released.
        return np.ascontiguousarray(_orient(rgb, orientation))


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block must not lose an otherwise good photo
        return 1


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """The EXIF orientation applied as a numpy view (what ImageOps.exif_transpose does, without
    a second full-size Pillow image)."""
    turns = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, -1)[::-1],
        8: lambda a: np.rot90(a, 1),
    }
    turn = turns.get(orientation)
    return arr if turn is None else turn(arr)


def _is_truncation(exc: Exception) -> bool:
    text = str(exc).lower()
    return "truncat" in text or "broken data stream" in text


def _from_pil(img: Image.Image) -> np.ndarray:
    """RGB uint8 array of ``img``, converted STRIP_ROWS rows at a time into one output array."""
    width, height = img.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    convert = _strip_converter(img)
    for top in range(0, height, STRIP_ROWS):
        bottom = min(height, top + STRIP_ROWS)
        out[top:bottom] = convert(img.crop((0, top, width, bottom)))
    return out


def _strip_converter(img: Image.Image) -> Callable[[Image.Image], np.ndarray]:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # The scale is the whole image's (a dark strip must not be stretched on its own).
        lo, hi = cast(tuple[float, float], img.getextrema())  # one band: (min, max)
        scale = _uint8_scale(np.dtype(np.float32 if mode == "F" else np.int32), float(hi))
        return lambda strip: _to_uint8(np.asarray(strip), scale)[:, :, None]
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        def composite(strip: Image.Image) -> np.ndarray:
            # Transparent areas become white, like a browser shows them, rather than black noise.
            rgba = strip.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
        return composite
    return lambda strip: np.asarray(strip.convert("RGB"), dtype=np.uint8)  # L, 1, P, RGB, CMYK, YCbCr, LAB, RGBX


def _from_array(arr: np.ndarray, max_pixels: int | None) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InvalidInputError(
            f"array of shape {arr.shape} is not an image; expected HxW, HxWx3 (RGB) or HxWx4 (RGBA)",
            shape=list(arr.shape),
        )
    if max_pixels is not None:
        _check_size(arr.shape[1], arr.shape[0], max_pixels)
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = (arr[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


def _uint8_scale(dtype: np.dtype, top: float) -> float:
    """Factor taking samples of ``dtype`` whose largest value is ``top`` to 0-255."""
    if np.issubdtype(dtype, np.floating):
        return 255.0 / (1.0 if top <= 1.0 else 255.0)
    # 16-bit (and PIL's 32-bit "I" mode holding 16-bit data): scale by the type's range.
    return 255.0 / (65535.0 if top > 255 else 255.0)


def _to_uint8(arr: np.ndarray, scale: float | None = None) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise InvalidInputError("float image contains NaN or infinite values")
        if scale is None:
            scale = _uint8_scale(arr.dtype, float(arr.max()) if arr.size else 0.0)
        return np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if scale is None:
            scale = _uint8_scale(arr.dtype, float(arr.max(initial=0)))
        scaled: np.ndarray = np.clip(arr.astype(np.float32) * scale, 0, 255).round().astype(np.uint8)
        return scaled
    raise InvalidInputError(f"unsupported array dtype {arr.dtype}", dtype=str(arr.dtype))
