"""Face quality measures from landmarks and the aligned crop (meanings in results.Quality)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..results import Quality

# Where YuNet puts the nose tip between the eye line (0) and the mouth line (1) on a level face:
# the median over 215 varied photos (6 sources) and 4 official portraits. (The ArcFace
# template's 0.49 is an alignment target, not a pose reference.)
_FRONTAL_NOSE_RATIO = 0.57
# Nose-tip depth relative to the eye-mouth distance: a pitch of θ moves the ratio by about
# this × sin θ.
_NOSE_DEPTH_RATIO = 0.6


def head_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from 5 landmarks; a geometric estimate, not a 3D fit.

    Yaw: nose offset from the eye/mouth midline relative to half the eye distance (a nose on a
    cheek line is ~60°). Pitch: where the nose lies between eye line and mouth line, against
    the frontal template. Roll: angle of the eye line. Positive yaw = face turned to the
    image's right; positive pitch = looking up.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    re, le, nose, rm, lmouth = lm
    eye_vec = le - re
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    # Undo roll so yaw and pitch read along the face's own axes.
    c, s = math.cos(math.radians(-roll)), math.sin(math.radians(-roll))
    rot = np.array([[c, -s], [s, c]])
    p = (lm - lm[:2].mean(0)) @ rot.T
    eye_half = max(np.linalg.norm(eye_vec) / 2, 1e-6)
    mid_x = (p[0, 0] + p[1, 0] + p[3, 0] + p[4, 0]) / 4
    yaw_ratio = np.clip((p[2, 0] - mid_x) / eye_half, -1.0, 1.0)
    yaw = math.degrees(math.asin(yaw_ratio)) * 1.2
    eye_y, mouth_y = (p[0, 1] + p[1, 1]) / 2, (p[3, 1] + p[4, 1]) / 2
    span = mouth_y - eye_y
    ratio = (p[2, 1] - eye_y) / span if abs(span) > 1e-6 else _FRONTAL_NOSE_RATIO
    pitch = -math.degrees(math.asin(float(np.clip((ratio - _FRONTAL_NOSE_RATIO) / _NOSE_DEPTH_RATIO, -1.0, 1.0))))
    return float(np.clip(yaw, -90, 90)), float(np.clip(pitch, -90, 90)), float(roll)


def assess(landmarks: np.ndarray, crop_rgb: np.ndarray, detector_score: float) -> Quality:
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    grey = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2GRAY)
    # Sharpness and exposure on the central face region, so black warp borders do not count.
    centre = grey[16:104, 16:96]
    sharpness = float(cv2.Laplacian(centre, cv2.CV_64F).var())
    yaw, pitch, roll = head_pose(lm)
    return Quality(
        inter_eye_px=float(np.linalg.norm(lm[1] - lm[0])),
        sharpness=sharpness,
        yaw_deg=yaw,
        pitch_deg=pitch,
        roll_deg=roll,
        brightness=float(centre.mean()),
        clipped=float(((centre <= 5) | (centre >= 250)).mean()),
        detector_score=float(detector_score),
    )
