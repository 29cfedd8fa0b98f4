"""bytes / path / array / PIL image -> RGB uint8 numpy array, or a specific decode error.

Pillow does the decoding; facegate adds the checks a service facing untrusted uploads needs:
a pixel limit enforced from the header before any pixel is decoded, EXIF orientation,
and a single colour convention (RGB, uint8, HxWx3) for everything downstream.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import (
    ImageNotFoundError,
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidInputError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedFormatError,
)

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, Image.Image]

DEFAULT_MAX_PIXELS = 40_000_000
MIN_SIDE = 16
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF"})

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
    try:
        img.load()
    except OSError as exc:
        if _is_truncation(exc):
            raise TruncatedImageError(f"truncated: {name} ends before the image data is complete") from exc
        raise NotAnImageError(f"not an image: {name} could not be decoded ({exc})") from exc
    except (ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise NotAnImageError(f"not an image: {name} could not be decoded ({exc})") from exc
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block must not lose an otherwise good photo
        pass
    return _from_pil(img)


def _is_truncation(exc: Exception) -> bool:
    text = str(exc).lower()
    return "truncat" in text or "broken data stream" in text


def _from_pil(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        return _from_array(arr, None)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Transparent areas become white, like a browser shows them, rather than black noise.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    rgb = img.convert("RGB")  # handles L, 1, P, CMYK, YCbCr, LAB, RGBX
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


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


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise InvalidInputError("float image contains NaN or infinite values")
        hi = 1.0 if arr.size and float(arr.max()) <= 1.0 else 255.0
        return np.clip(arr * (255.0 / hi), 0, 255).round().astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        # 16-bit (and PIL's 32-bit "I" mode holding 16-bit data): scale by the type's range.
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return np.clip(arr.astype(np.float32) * (255.0 / top), 0, 255).round().astype(np.uint8)
    raise InvalidInputError(f"unsupported array dtype {arr.dtype}", dtype=str(arr.dtype))
