"""5-point similarity alignment onto a template (by default the 112×112 ArcFace one)."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
CROP_SIZE = 112

Estimator = Literal["umeyama", "lmeds"]
Resample = Literal["area", "bilinear", "cubic"]
_INTERPOLATION = {"area": cv2.INTER_LINEAR, "bilinear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def similarity_transform(src: np.ndarray, dst: np.ndarray = ARCFACE_TEMPLATE) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991) mapping src points onto dst; a 2×3 matrix."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = (s_c**2).sum() / len(src)
    scale = float((sigma * d).sum() / var_s) if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def _estimate(src: np.ndarray, dst: np.ndarray, estimator: Estimator) -> np.ndarray:
    if estimator == "lmeds":  # what OpenCV's samples do; falls back to least squares if it fails
        m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
        if m is not None:
            return m
    return similarity_transform(src, dst)


def align(
    image: np.ndarray,
    landmarks: np.ndarray,
    template: np.ndarray = ARCFACE_TEMPLATE,
    size: int = CROP_SIZE,
    *,
    estimator: Estimator = "lmeds",
    resample: Resample = "bilinear",
) -> np.ndarray:
    """Warp the face with these 5 landmarks to a ``size``×``size`` crop in which they land on
    ``template`` (same channel order as ``image``).

    Defaults chosen by identity-disjoint cross-validation on the dev set (bench/cv.py): the
    similarity is fitted with cv2's LMEDS estimator and the crop is warped bilinearly in one
    step. The alternatives stay selectable for that comparison: ``estimator="umeyama"``
    (least squares), ``resample="area"`` (a face much larger than the crop is first shrunk
    with area averaging) or ``"cubic"``.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    m = _estimate(lm, template, estimator)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    flags = _INTERPOLATION[resample]
    if resample == "area" and scale < 0.5:
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], float) @ inv.T
        h, w = image.shape[:2]
        x0, y0 = np.floor(corners.min(0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 >= 8 and y1 - y0 >= 8:
            roi = image[y0:y1, x0:x1]
            small_size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
            small = cv2.resize(roi, small_size, interpolation=cv2.INTER_AREA)
            fx, fy = small_size[0] / (x1 - x0), small_size[1] / (y1 - y0)
            lm_small = (lm - [x0, y0]) * [fx, fy]
            return cv2.warpAffine(small, _estimate(lm_small, template, estimator), (size, size),
                                  flags=flags, borderMode=cv2.BORDER_CONSTANT)
    return cv2.warpAffine(image, m, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT)
