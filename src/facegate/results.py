"""Typed results returned by the library (and serialised by the CLI and the service)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Quality:
    """Per-face quality measures; see docs/quality.md for meaning and ranges.

    - ``inter_eye_px``: distance between the eye centres in source-image pixels (≥ 0).
      Below ~30 px identity detail is mostly lost; ISO/IEC 19794-5 asks ≥ 60 for documents.
    - ``sharpness``: variance of the Laplacian of the aligned 112×112 grey face (≥ 0);
      under ~50 is visibly blurred, over ~200 is crisp.
    - ``yaw_deg`` / ``pitch_deg`` / ``roll_deg``: head pose estimated from the 5 landmarks,
      in degrees; 0 is frontal. Yaw/pitch are coarse (±10°) beyond 30°.
    - ``brightness``: mean grey level of the aligned face, 0–255 (well exposed ≈ 80–180).
    - ``clipped``: fraction of aligned-face pixels at ≤ 5 or ≥ 250 (0–1; > 0.2 is badly exposed).
    - ``detector_score``: YuNet confidence, 0–1.
    """

    inter_eye_px: float
    sharpness: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    brightness: float
    clipped: float
    detector_score: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Face:
    """One detected face. Coordinates are in the (EXIF-corrected) source image's pixels."""

    box: tuple[float, float, float, float]  # x, y, width, height
    landmarks: tuple[tuple[float, float], ...]  # right eye, left eye, nose, right mouth, left mouth (image left first)
    score: float
    quality: Quality
    prominence: float = 0.0
    # The aligned 112x112 RGB crop, kept so embedding needs no second warp; not serialised.
    crop: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
            "score": round(float(self.score), 4),
            "prominence": round(float(self.prominence), 4),
            "quality": self.quality.to_dict(),
        }


@dataclass(frozen=True)
class Embedding:
    """An L2-normalised face template from one model. Compare only templates of the same ``model``."""

    vector: np.ndarray = field(repr=False)
    model: str
    face: Face

    @property
    def dim(self) -> int:
        return int(self.vector.shape[0])

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "dim": self.dim, "embedding": [float(x) for x in self.vector], "face": self.face.to_dict()}


@dataclass(frozen=True)
class VerifyResult:
    match: bool
    score: float
    threshold: float
    fmr: float
    model: str
    face_a: Face
    face_b: Face

    def to_dict(self) -> dict[str, object]:
        return {
            "match": self.match,
            "score": round(float(self.score), 6),
            "threshold": round(float(self.threshold), 6),
            "fmr": self.fmr,
            "model": self.model,
            "face_a": self.face_a.to_dict(),
            "face_b": self.face_b.to_dict(),
        }
