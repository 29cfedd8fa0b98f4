"""dlib's ResNet face descriptor (CC0 weights from ``face_recognition_models``) on facegate's
aligned crops, without dlib's own detector or landmark model.

dlib's network expects a 150×150 chip cut the way ``dlib.get_face_chip`` cuts it (its 5-point
shape, padding 0.25). :data:`CHIP_TEMPLATE` is where YuNet's five landmarks land in such a chip:
the mean over the faces of dev half A that dlib's HOG detector and YuNet both found (303 faces;
each face's landmarks mapped through dlib's own chip transform). The chip is warped from the
112×112 ArcFace crop the engine already holds (the chip's chin rows fall a few pixels outside
that crop and stay black). On dev half B (285 faces), descriptors of these chips agreed with
dlib's own pipeline at median cosine 0.990 (5th percentile 0.975; measured with least-squares
alignment); tests/test_accurate.py checks the agreement on the public-domain photos.
"""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np

from ..errors import ModelFileMissingError
from ..models import DLIB_RESNET, ModelSpec
from .align import ARCFACE_TEMPLATE, similarity_transform

CHIP_SIZE = 150
CHIP_TEMPLATE = np.array(
    [[48.263, 44.896], [101.604, 45.85], [73.191, 77.614], [51.101, 99.872], [96.379, 101.355]],
    dtype=np.float64,
)
_FROM_ARCFACE = similarity_transform(ARCFACE_TEMPLATE, CHIP_TEMPLATE)


def _dlib() -> Any:  # the dlib module (untyped)
    try:
        import dlib
    except ImportError as exc:  # an optional extra, not a core dependency
        raise ModelFileMissingError(
            f"model {DLIB_RESNET.id!r} needs dlib; install facegate's extra: {DLIB_RESNET.install_hint()}",
            model=DLIB_RESNET.id,
        ) from exc
    return dlib


def chips_from_crops(crops: np.ndarray) -> list[np.ndarray]:
    """(N, 112, 112, 3) ArcFace-aligned RGB crops -> N dlib chips (150×150×3, RGB uint8)."""
    return [
        np.ascontiguousarray(cv2.warpAffine(np.ascontiguousarray(c), _FROM_ARCFACE, (CHIP_SIZE, CHIP_SIZE),
                                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))
        for c in np.asarray(crops, dtype=np.uint8)
    ]


class DlibEmbedder:
    """Thread-safe: dlib's network keeps per-call state, so each thread gets its own copy
    (loaded on its first call)."""

    def __init__(self, spec: ModelSpec = DLIB_RESNET) -> None:
        self._dlib = _dlib()
        self.spec = spec
        self.dim = int(spec.embedding_dim or 128)
        spec.read_verified()  # the sha256 check; dlib itself loads from the path
        self._path = str(spec.path())
        self._local = threading.local()
        self._net()  # load now: a broken file fails at construction, not at the first face

    def _net(self) -> Any:  # a dlib.face_recognition_model_v1 (untyped)
        net = getattr(self._local, "net", None)
        if net is None:
            net = self._local.net = self._dlib.face_recognition_model_v1(self._path)
        return net

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) ArcFace-aligned RGB uint8 -> (N, 128) float32, rows of unit length."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = np.asarray(self._net().compute_face_descriptor(chips_from_crops(crops)), dtype=np.float32)
        unit: np.ndarray = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return unit
