"""Synthetic captures for benches and tests: presentation attacks built from real photos, and
genuine-looking sequences assembled from several real photos of one person.

Nothing here is used by the decision itself. Attack models (what an attacker with a photo can
do in front of a camera, simulated):

- ``still_frames``: the photo held up, with small hand jitter (shift ±4 px, rotation ±2°,
  scale ±2 %), exposure changes (±10 %), sensor noise and JPEG compression;
- ``photo_following``: the photo tilted and moved to imitate each asked movement — rotated
  about its vertical axis for turns, its horizontal axis for looks, brought closer for
  move_closer — through a pinhole camera (true perspective warps), plus the jitter above;
- ``assemble``: one frame group per pose from *different* real photos of one person (neutral,
  turned, looking up/down, a zoomed neutral for move_closer) on a common canvas. Used as a
  genuine sequence for the challenge order/timing logic, and — with jitter — as the
  "photo sequence" attack (someone showing the right photos in the right order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from .capture import Frame
from .challenge import Challenge

CANVAS = (640, 480)  # width, height
EYE_CENTRE = (320.0, 200.0)
# eye-to-mouth distance over inter-eye distance on a frontal face (ArcFace template: 40.4 / 35.2)
FRONTAL_EYE_MOUTH = 1.15


def perspective(width: int, height: int, yaw_deg: float = 0.0, pitch_deg: float = 0.0, *, scale: float = 1.0,
                roll_deg: float = 0.0, tx: float = 0.0, ty: float = 0.0, centre: tuple[float, float] | None = None,
                focal: float | None = None) -> np.ndarray:
    """Homography of a flat picture rotated by yaw (about its vertical axis) and pitch (about its
    horizontal axis) around ``centre``, seen by a pinhole camera of focal length ``focal`` px
    (default 1.2 × the longer side); ``scale`` > 1 brings it closer."""
    f = focal or 1.2 * max(width, height)
    cx, cy = centre if centre is not None else (width / 2, height / 2)
    a, b, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    rot = rz @ ry @ rx
    k = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]])
    src = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    dst = []
    for x, y in src:
        p = k @ (rot @ np.array([x - cx, y - cy, 0.0]) + np.array([0, 0, f / scale]))
        dst.append([p[0] / p[2] + tx, p[1] / p[2] + ty])
    return cv2.getPerspectiveTransform(src, np.array(dst, np.float32))


def degrade(rgb: np.ndarray, rng: np.random.Generator, *, noise: float = 2.0, gain: float = 0.1, jpeg: int = 85) -> np.ndarray:
    """Camera-like photometric change: exposure gain, sensor noise, JPEG round trip."""
    out = rgb.astype(np.float32) * rng.uniform(1 - gain, 1 + gain) + rng.normal(0, noise, rgb.shape)
    out = np.clip(out, 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg])
    bgr = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    assert bgr is not None  # a JPEG OpenCV just encoded
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def jitter(rgb: np.ndarray, rng: np.random.Generator, *, shift: float = 4.0, rot: float = 2.0, zoom: float = 0.02,
           extra: np.ndarray | None = None) -> np.ndarray:
    """Small random similarity warp (hand shake), optionally after a homography ``extra``."""
    h, w = rgb.shape[:2]
    m = np.asarray(cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-rot, rot), 1 + rng.uniform(-zoom, zoom)), np.float64)
    m[:, 2] += rng.uniform(-shift, shift, 2)
    hom = np.vstack([m, [0, 0, 1]])
    if extra is not None:
        hom = hom @ extra
    return cv2.warpPerspective(rgb, hom, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def still_frames(rgb: np.ndarray, n: int, rng: np.random.Generator, *, fps: float = 10.0, move: bool = True) -> list[Frame]:
    """A photo held up to the camera for ``n`` frames (``move=False``: the exact same frame)."""
    if not move:
        return [Frame(rgb, i / fps) for i in range(n)]
    return [Frame(degrade(jitter(rgb, rng), rng), i / fps) for i in range(n)]


def _tilt_for(c: Challenge | None, amount: float) -> tuple[float, float, float]:
    """(yaw, pitch, scale) of the photo plane imitating ``c`` at ``amount`` (0–1)."""
    if c is Challenge.TURN_LEFT:
        return 40.0 * amount, 0.0, 1.0
    if c is Challenge.TURN_RIGHT:
        return -40.0 * amount, 0.0, 1.0
    if c is Challenge.LOOK_UP:
        return 0.0, 35.0 * amount, 1.0
    if c is Challenge.LOOK_DOWN:
        return 0.0, -35.0 * amount, 1.0
    if c is Challenge.MOVE_CLOSER:
        return 0.0, 0.0, 1.0 + 0.5 * amount
    return 0.0, 0.0, 1.0


def photo_following(rgb: np.ndarray, challenges: Sequence[Challenge], rng: np.random.Generator, *, fps: float = 10.0,
                    hold_s: float = 0.6, move_s: float = 0.5, centre: tuple[float, float] | None = None,
                    sign: float = 1.0) -> list[Frame]:
    """A photo tilted/moved to imitate each challenge in turn (out, hold, back, hold)."""
    h, w = rgb.shape[:2]
    amounts: list[tuple[Challenge | None, float]] = [(None, 0.0)] * int(hold_s * fps)
    steps = max(int(move_s * fps), 1)
    for c in challenges:
        amounts += [(c, (i + 1) / steps) for i in range(steps)]
        amounts += [(c, 1.0)] * int(hold_s * fps)
        amounts += [(c, 1.0 - (i + 1) / steps) for i in range(steps)]
        amounts += [(None, 0.0)] * int(hold_s * fps)
    frames = []
    for i, (shown, a) in enumerate(amounts):
        yaw, pitch, scale = _tilt_for(shown, a)
        hom = perspective(w, h, sign * yaw, sign * pitch, scale=scale, centre=centre)
        frames.append(Frame(degrade(jitter(rgb, rng, extra=hom), rng), i / fps))
    return frames


def on_canvas(rgb: np.ndarray, landmarks: np.ndarray, *, inter_eye: float = 60.0, zoom: float = 1.0,
              size: tuple[int, int] = CANVAS, eye_centre: tuple[float, float] = EYE_CENTRE) -> np.ndarray:
    """The photo scaled to one camera's framing and centred on ``eye_centre`` of a ``size`` canvas
    (edges replicated): as large as a frontal face with eyes ``inter_eye × zoom`` px apart.

    The scale comes from the eye-to-mouth distance, which a head turn does not shrink (the
    distance between the eyes does: scaling turned faces by it would make them look closer)."""
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    eyes, mouth = lm[:2].mean(0), lm[3:].mean(0)
    eye_mouth = float(np.linalg.norm(mouth - eyes))
    s = FRONTAL_EYE_MOUTH * inter_eye * zoom / max(eye_mouth, 1e-6)
    m = np.array([[s, 0, eye_centre[0] - s * eyes[0]], [0, s, eye_centre[1] - s * eyes[1]]])
    return cv2.warpAffine(rgb, m, size, flags=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def assemble(poses: Mapping[str, Sequence[np.ndarray]], challenges: Sequence[Challenge], *, fps: float = 5.0,
             hold: int = 3, rng: np.random.Generator | None = None, move: bool = False, ramps: bool = False) -> list[Frame]:
    """Frames from canvas-normalised photos of one person: ``poses["neutral"]`` (≥1) and one list
    per challenge value (``poses["turn_left"]`` …; ``poses["move_closer"]`` holds the neutral
    photos zoomed, in the same order, and the one zoomed is the neutral shown just before). Each
    photo is held ``hold`` frames: neutral, then per challenge the pose and a neutral again.
    ``move=True`` adds jitter/noise to every frame (attack); ``ramps=True`` shows a half-way photo
    (``poses["half_turn_left"]`` …) for one frame on the way out and back where one exists (an
    attacker imitating a continuous movement)."""
    rng = rng or np.random.default_rng(0)
    neutral = list(poses["neutral"])
    seq: list[np.ndarray] = [neutral[0]] * hold
    for k, c in enumerate(challenges):
        options = list(poses[c.value])
        half = list(poses.get("half_" + c.value, ())) if ramps else []
        if half:
            seq.append(half[int(rng.integers(len(half)))])
        if c is Challenge.MOVE_CLOSER and len(options) == len(neutral):
            pick = options[k % len(neutral)]  # the same photo as the neutral before it, zoomed
        else:
            pick = options[int(rng.integers(len(options)))]
        seq += [pick] * hold
        if half:
            seq.append(half[int(rng.integers(len(half)))])
        seq += [neutral[(k + 1) % len(neutral)]] * hold
    if move:
        return [Frame(degrade(jitter(img, rng, shift=2, rot=1, zoom=0.01), rng), i / fps) for i, img in enumerate(seq)]
    return [Frame(img, i / fps) for i, img in enumerate(seq)]
