"""The checks of one liveness decision, each over the frames already analysed: what it found goes
into the result's metrics, and the reason codes it raises are returned (``checker.REASONS``).
``LivenessChecker.check`` runs them in order."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ..errors import TooManyFacesError
from ..results import Embedding, Face
from .challenge import Challenge
from .motion import (
    Baseline,
    ChallengeStatus,
    Event,
    PoseSample,
    abrupt_events,
    chroma_jumps,
    deltas,
    detect_events,
    face_chroma,
    frame_difference,
    landmark_parallax,
    match_challenges,
    rigid_fit,
)

if TYPE_CHECKING:
    from .checker import LivenessConfig

Metrics = dict[str, float | int | None]


@dataclass
class AnalysedFrame:
    """What the checks keep of one decoded frame (the colour image itself is dropped)."""

    index: int
    t: float
    face: Face | None
    others: int  # significant second faces
    grey: np.ndarray | None = field(default=None, repr=False)
    chroma: np.ndarray | None = None  # skin colour (a*, b*) of the face, for picture cuts


@dataclass
class FaceFrame:
    """An analysed frame with a face, as the identity, pose and motion checks use it."""

    index: int
    t: float
    face: Face
    grey: np.ndarray | None
    chroma: np.ndarray | None


@dataclass
class Pose:
    """Head pose of the identity-accepted frames relative to the session's start."""

    samples: list[PoseSample]
    events: list[Event]
    base: Baseline
    dyaw: np.ndarray
    dpitch: np.ndarray
    scale: np.ndarray


def analyse_frame(engine: Any, cfg: LivenessConfig, index: int, t: float, rgb: np.ndarray) -> AnalysedFrame:
    try:
        faces = engine.detect(rgb)
    except TooManyFacesError:
        return AnalysedFrame(index, t, None, 2)
    if not faces:
        return AnalysedFrame(index, t, None, 0)
    subject = faces[0]
    others = sum(
        1 for f in faces[1:] if f.box[3] >= cfg.second_face_ratio * subject.box[3] and f.score >= cfg.second_face_score
    )
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if cfg.check_motion else None
    chroma = face_chroma(rgb, subject.box) if cfg.check_motion and cfg.max_chroma_jump is not None else None
    return AnalysedFrame(index, t, subject, others, grey, chroma)


def timestamps_valid(times: Sequence[float]) -> bool:
    return all(math.isfinite(t) for t in times) and all(b > a for a, b in zip(times, times[1:]))


def capture(times: Sequence[float], timestamps_ok: bool, duration: float, shapes: set[tuple[int, ...]],
            cfg: LivenessConfig) -> set[str]:
    """Frame count, gaps, rate, length and frame sizes."""
    reasons: set[str] = set()
    if not timestamps_ok:
        reasons.add("bad_timestamps")
    n = len(times)
    if n < cfg.min_frames:
        reasons.add("too_few_frames")
    if timestamps_ok and n:
        gaps = np.diff(times) if n >= 2 else np.zeros(0)
        if gaps.size and float(gaps.max()) > cfg.max_gap_s:
            reasons.add("frame_gap")
        if gaps.size and float(np.median(gaps)) > 1.0 / cfg.min_fps:
            reasons.add("capture_rate_too_low")
        if duration > cfg.max_duration_s:
            reasons.add("capture_too_long")
    if len(shapes) > 1:
        reasons.add("inconsistent_frames")
    return reasons


def face_presence(analysed: Sequence[AnalysedFrame], with_face: Sequence[FaceFrame], times: Sequence[float],
                  timestamps_ok: bool, cfg: LivenessConfig, metrics: Metrics) -> set[str]:
    """One face throughout: no second significant face, the face not lost for long."""
    reasons: set[str] = set()
    n = len(analysed)
    multi = sum(1 for a in analysed if a.others)
    metrics["multi_face_frames"] = multi
    if multi >= cfg.min_multi_face_frames:
        reasons.add("multiple_faces")
    missing = n - len(with_face)
    face_times = [a.t for a in with_face]
    edges = [face_times[0] - times[0], times[-1] - face_times[-1]]
    longest_gap = max([b - a for a, b in zip(face_times, face_times[1:])] + edges)
    if missing / n > cfg.max_missing_fraction or (timestamps_ok and longest_gap > cfg.max_gap_s):
        reasons.add("face_lost")
    return reasons


def reference_frame(with_face: Sequence[FaceFrame], cfg: LivenessConfig) -> int:
    """The first good frame: big and sharp enough and roughly frontal; else the first face."""
    for k, a in enumerate(with_face):
        q = a.face.quality
        if q.inter_eye_px >= cfg.min_inter_eye_px and q.sharpness >= cfg.min_sharpness and abs(q.yaw_deg) <= cfg.max_start_yaw:
            return k
    return 0


def identity(embeddings: Sequence[Embedding], with_face: Sequence[FaceFrame], threshold: float, cfg: LivenessConfig,
             metrics: Metrics) -> tuple[set[str], np.ndarray]:
    """Every face matches the reference face, or in ``chain`` mode the previous accepted one;
    also which frames were accepted."""
    vectors = np.stack([e.vector for e in embeddings])
    ref = reference_frame(with_face, cfg)
    sims_ref = vectors @ vectors[ref]
    ok = np.zeros(len(with_face), bool)
    last_ok: int | None = None
    for k in range(len(with_face)):
        good = sims_ref[k] >= threshold
        if not good and cfg.identity_mode == "chain" and last_ok is not None:
            good = float(vectors[k] @ vectors[last_ok]) >= threshold
        if good:
            ok[k] = True
            last_ok = k
    ok[ref] = True
    metrics.update(
        identity_min_ref_similarity=float(sims_ref.min()),
        identity_ref_match_fraction=float((sims_ref >= threshold).mean()),
        identity_rejected_frames=int((~ok).sum()),
    )
    return (set() if ok.all() else {"identity_mismatch"}), ok


def pose(good: Sequence[FaceFrame], cfg: LivenessConfig, metrics: Metrics) -> Pose:
    samples = [
        PoseSample(a.index, a.t, q.yaw_deg, q.pitch_deg, math.sqrt(max(a.face.box[2] * a.face.box[3], 1.0)))
        for a, q in ((a, a.face.quality) for a in good)
    ]
    events, base = detect_events(samples, cfg.pose)
    dyaw, dpitch, scale = deltas(samples, base, cfg.pose)
    metrics.update(baseline_yaw=base.yaw, baseline_pitch=base.pitch,
                   max_abs_dyaw=float(np.abs(dyaw).max()), max_dpitch=float(dpitch.max()),
                   min_dpitch=float(dpitch.min()), max_scale=float(scale.max()))
    return Pose(samples, events, base, dyaw, dpitch, scale)


def challenges(asked: Sequence[Challenge], p: Pose, t0: float, cfg: LivenessConfig) -> tuple[set[str], list[ChallengeStatus]]:
    """The asked movements, in order and in time, from a frontal start, and no other movement."""
    reasons: set[str] = set()
    if abs(p.base.yaw) > cfg.max_start_yaw:
        reasons.add("no_neutral_start")
    match = match_challenges(asked, p.events, t0=t0, challenge_timeout_s=cfg.challenge_timeout_s)
    statuses = {s.status for s in match.statuses}
    if "missing" in statuses:
        reasons.add("challenge_not_met")
    if "out_of_order" in statuses:
        reasons.add("challenge_order")
    if "late" in statuses:
        reasons.add("challenge_timeout")
    referenced = {id(s.event) for s in match.statuses if s.event is not None}
    if any(id(e) not in referenced for e in match.unexpected):
        reasons.add("unexpected_movement")
    return reasons, match.statuses


def natural_change(good: Sequence[FaceFrame], p: Pose, cfg: LivenessConfig, metrics: Metrics) -> set[str]:
    """Not the same frame over and over, not one 2D warp of a picture, no picture cut, no jump
    between poses."""
    reasons = _planar_and_cuts(good, p, cfg, metrics)
    jumps = abrupt_events(p.events, p.samples, p.dyaw, p.dpitch, p.scale, cfg.pose)
    metrics["abrupt_movements"] = len(jumps)
    if jumps:
        reasons.add("abrupt_motion")
    return reasons


def _planar_and_cuts(good: Sequence[FaceFrame], p: Pose, cfg: LivenessConfig, metrics: Metrics) -> set[str]:
    reasons: set[str] = set()
    greys = [_grey(a) for a in good]
    diffs = [frame_difference(ga, a.face.box, gb) for a, ga, gb in zip(good, greys, greys[1:])]
    static_fraction = float(np.mean(np.array(diffs) < cfg.static_diff)) if diffs else 0.0
    if static_fraction >= cfg.max_static_fraction:
        reasons.add("static_frames")
    ref = good[0]
    ref_lm = np.asarray(ref.face.landmarks)
    parallax = np.array([landmark_parallax(ref_lm, np.asarray(a.face.landmarks)) for a in good])
    # Test the frames most likely to show 3D change first (largest pose change / parallax);
    # stop at the first one no 2D warp of the reference explains.
    change = np.abs(p.dyaw) + np.abs(p.dpitch) + 30.0 * parallax
    order = [int(k) for k in np.argsort(-change) if k != 0]
    if len(order) > cfg.rigid_samples:
        spread = np.linspace(0, len(good) - 1, cfg.rigid_samples // 2).round().astype(int).tolist()
        order = list(dict.fromkeys(order[: cfg.rigid_samples // 2] + [k for k in spread if k != 0]))
    fits: list[float] = []
    untestable = 0
    nonrigid = 0
    for k in order:
        a = good[k]
        fit = None
        if _inside(a.face, greys[k].shape):
            fit = rigid_fit(greys[0], ref.face.box, ref_lm, greys[k], np.asarray(a.face.landmarks))
        if fit is None:
            untestable += 1
            continue
        fits.append(fit)
        nonrigid += fit < cfg.rigid_fit_max
        if nonrigid >= cfg.min_nonrigid_frames:
            break
    # Planar unless enough testable frames show change no 2D warp explains. A face cut by the
    # image border is not testable (its landmarks are unreliable); nothing testable cannot
    # show 3D change either.
    min_fit = min(fits) if fits else None
    if nonrigid < cfg.min_nonrigid_frames:
        reasons.add("planar_motion")
    # Picture cuts: a photo sequence changes the picture at once — the colour of the light on
    # the skin (another day, camera, white balance) together with everything else — while a
    # live head under one light changes its shading and shape, not its colour, from one
    # frame to the next. A colour jump alone can be the camera's white balance or exposure
    # (a 2D-explainable change of a still face), so the pair must also fail the rigid fit.
    cuts = 0
    jumps = np.zeros(0)
    if cfg.max_chroma_jump is not None:
        jumps = chroma_jumps([a.chroma for a in good])
        pairs = [(a, b) for a, b in zip(good, good[1:]) if a.chroma is not None and b.chroma is not None]
        for (a, b), jump in zip(pairs, jumps):
            if jump < cfg.max_chroma_jump:
                continue
            fit = rigid_fit(_grey(a), a.face.box, np.asarray(a.face.landmarks), _grey(b), np.asarray(b.face.landmarks))
            if fit is not None and fit < cfg.cut_rigid_fit_max:  # untestable (face at the border): not held against it
                cuts += 1
        if cuts:
            reasons.add("picture_cut")
    metrics.update(max_chroma_jump=float(jumps.max()) if jumps.size else None, picture_cuts=cuts)
    metrics.update(static_fraction=static_fraction, min_rigid_fit=min_fit,
                   max_parallax=float(parallax.max()), rigid_tests=len(fits), rigid_untestable=untestable)
    return reasons


def _grey(a: FaceFrame) -> np.ndarray:
    # analyse_frame keeps the grey image whenever the motion checks are on, and only they read it
    assert a.grey is not None
    return a.grey


def best_frame(good: Sequence[FaceFrame], p: Pose, cfg: LivenessConfig) -> int:
    """The sharpest near-frontal frame (the sharpest of all when none is near-frontal)."""
    th = cfg.pose
    near = [k for k in range(len(good))
            if abs(p.dyaw[k]) < th.yaw_off and abs(p.dpitch[k]) < th.pitch_off * 1.5 and p.scale[k] < th.closer_off]
    pool = near or list(range(len(good)))
    return max(pool, key=lambda k: (good[k].face.quality.sharpness, -abs(good[k].face.quality.yaw_deg)))


def quality(face: Face, cfg: LivenessConfig) -> set[str]:
    reasons: set[str] = set()
    if face.quality.inter_eye_px < cfg.min_inter_eye_px:
        reasons.add("face_too_small")
    if face.quality.sharpness < cfg.min_sharpness:
        reasons.add("too_blurry")
    return reasons


def _inside(face: Face, shape: tuple[int, ...], margin: float = 0.02) -> bool:
    """The whole face box lies inside the image (not cut by its border)."""
    h, w = shape[:2]
    x, y, bw, bh = face.box
    mx, my = margin * w, margin * h
    return x >= mx and y >= my and x + bw <= w - mx and y + bh <= h - my


def portrait(rgb: np.ndarray, face: Face, pad: float) -> np.ndarray:
    """The face-centred crop kept for verify/enrol: the face box and ``pad`` of it on each side."""
    x, y, w, h = face.box
    x0, y0 = max(int(x - pad * w), 0), max(int(y - pad * h), 0)
    x1, y1 = min(int(math.ceil(x + w + pad * w)), rgb.shape[1]), min(int(math.ceil(y + h + pad * h)), rgb.shape[0])
    return np.ascontiguousarray(rgb[y0:y1, x0:x1].copy())
