"""Captures as the checker takes them: frames with capture times, read from a video file or a
list of image files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2

from ..vision import ImageInput
from .errors import LivenessInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Frame:
    """One captured frame: an image (numpy RGB array, bytes, path or PIL image) and its capture
    time in seconds (any origin; only differences are used by the checker)."""

    image: ImageInput
    t: float


def read_video(path: str | os.PathLike[str], *, max_fps: float = 10.0, max_frames: int = 120) -> list[Frame]:
    """Decode a video file with OpenCV into frames with their timestamps (seconds from start),
    keeping at most ``max_fps`` frames per second and ``max_frames`` frames spread over it."""
    p = Path(path)
    if not p.is_file():
        raise LivenessInputError(f"no such video file: {p}", path=str(p))
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise LivenessInputError(f"cannot open {p} as a video", path=str(p))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0
        rate = max_fps
        if fps > 0 and count > 0:
            duration = count / fps
            rate = min(max_fps, max_frames / max(duration, 1e-6))
        step = 1.0 / rate
        frames: list[Frame] = []
        idx = 0
        next_t = 0.0
        while len(frames) < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            # a container without a frame rate: trust the decoder's clock
            t = idx / fps if fps > 0 else (cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
            if t + 1e-6 >= next_t:
                frames.append(Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t))
                next_t = t + step
            idx += 1
    finally:
        cap.release()
    if not frames:
        raise LivenessInputError(f"no frames could be decoded from {p}", path=str(p))
    t0 = frames[0].t
    return [replace(f, t=f.t - t0) for f in frames]


def read_frames(paths: Sequence[str | os.PathLike[str]], *, fps: float = 10.0) -> list[Frame]:
    """Image files (or one directory of them, sorted by name) as frames ``1/fps`` apart."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(p)
    if fps <= 0:
        raise LivenessInputError("fps must be positive")
    return [Frame(f, i / fps) for i, f in enumerate(files)]
