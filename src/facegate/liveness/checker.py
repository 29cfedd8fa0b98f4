"""The liveness decision over a capture: frames (with capture times) + the challenges asked.

    >>> checker = LivenessChecker(engine)
    >>> result = checker.check(read_video("selfie.mp4"), ["turn_left", "look_up"])
    >>> result.live, result.reasons, result.best_frame

Checks, each with a stable reason code (``REASONS``; docs/liveness.md explains the numbers):

- capture: enough frames, increasing timestamps, no long gaps, a median rate of at least
  ``min_fps`` (4), not too long, one frame size;
- one face throughout: no second significant face (in two frames or more), the face not lost
  for long;
- one identity: every face matches the session's reference face (the first good frame) at the
  model's FMR 1e-3 threshold — or, in the default ``chain`` mode, the previous accepted frame
  (a hard cut to another person fails both; a head turn that drops similarity to a frontal
  reference does not);
- the challenges: head pose and face size relative to the session's first frames follow the
  asked movements in order, in time, with no other movement (see ``motion``);
- natural change: not (nearly) the same frame over and over, not every frame a single 2D warp
  (shift, rotation, scale, perspective tilt) of the reference frame — a photo held up and moved
  stays one planar image, a head that turns does not — and no movement that jumps between poses
  both ways without an intermediate frame (still photos of different poses shown in turn), and no
  *picture cut* — the skin colour jumping between two consecutive frames while no 2D warp
  explains the pair either (another photo shown, even with half-way poses in between);
- quality: the best frame (sharpest near-frontal frame) is large and sharp enough.

Frames are analysed in memory and dropped; the result keeps only the best frame's face-centred
crop (for verify/enrol) and numbers. ``LivenessResult.audit_record()`` is what may be logged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import FacegateError, TooManyFacesError
from ..results import Embedding, Face
from ..vision import ImageInput, decode
from .challenge import Challenge
from .errors import LivenessInputError
from .motion import (
    ChallengeStatus,
    Event,
    PoseSample,
    PoseThresholds,
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

# Every reason code, in the order they are reported. Stable: never rename one.
REASONS: dict[str, str] = {
    # capture
    "too_few_frames": "fewer usable frames than the minimum",
    "bad_timestamps": "capture times missing, not finite or not strictly increasing",
    "frame_gap": "a gap between consecutive frames longer than the maximum",
    "capture_rate_too_low": "frames too far apart for the movement checks (median rate below the minimum)",
    "capture_too_long": "the capture spans longer than the maximum",
    "inconsistent_frames": "frames of different sizes in one capture",
    # session binding (set by liveness.flow)
    "frame_replayed": "a frame identical to one submitted in another session",
    "timestamp_before_session": "a capture time before the session was created",
    "timestamp_after_expiry": "a capture time after the session expired or in the future",
    "capture_span_too_long": "the frames span more time than the session has existed",
    # faces
    "no_face": "no face in any frame",
    "face_lost": "the face is missing from too many frames or for too long",
    "multiple_faces": "a second face in the frames (seen in at least two)",
    "identity_mismatch": "a frame whose face is not the same person as the reference frame",
    # challenges
    "no_neutral_start": "the capture does not start facing the camera",
    "challenge_not_met": "an asked movement was not performed",
    "challenge_order": "the asked movements were performed in another order",
    "challenge_timeout": "an asked movement started too late",
    "unexpected_movement": "a movement that was not asked for",
    # natural change
    "static_frames": "(nearly) the same frame repeated",
    "planar_motion": "every frame is one 2D warp of the same picture (a photo or screen moved)",
    "abrupt_motion": "a movement jumped between poses with no intermediate frame (still photos shown in turn)",
    "picture_cut": "the face's colour and shape changed at once between two frames (a cut to another photo)",
    # quality
    "face_too_small": "the best frame's face is too small",
    "too_blurry": "the best frame is too blurred",
    # internal
    "check_error": "the check could not be completed",
}

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Frame:
    """One captured frame: an image (numpy RGB array, bytes, path or PIL image) and its capture
    time in seconds (any origin; only differences are used by the checker)."""

    image: ImageInput
    t: float


@dataclass(frozen=True)
class LivenessConfig:
    """Every threshold of the decision; defaults are calibrated in docs/liveness.md."""

    pose: PoseThresholds = field(default_factory=PoseThresholds)
    # identity
    identity_fmr: float = 1e-3
    identity_threshold: float | None = None  # None: engine.threshold(identity_fmr)
    identity_mode: str = "chain"  # "chain" (reference or previous accepted frame) | "reference"
    # capture
    min_frames: int = 5
    max_frames: int = 120
    max_frame_pixels: int = 4_000_000  # per frame; 640×480 is plenty (the decision needs ~60 px between the eyes)
    max_gap_s: float = 1.0
    # Below ~4 fps a head turn falls between two frames, so the movement checks cannot tell it
    # from photos shown in turn (bench, section fps: real motion at 3 fps fails abrupt_motion);
    # refuse such captures by rule, with a reason that says what to fix, not as an attack.
    min_fps: float = 4.0
    max_duration_s: float = 45.0
    max_missing_fraction: float = 0.25
    # faces
    second_face_ratio: float = 0.35  # a face at least this tall (relative to the subject's) …
    second_face_score: float = 0.75  # … and this confident counts as a second face …
    min_multi_face_frames: int = 2  # … when it is seen in at least this many frames (not one false detection)
    # challenges
    challenge_timeout_s: float = 8.0
    max_start_yaw: float = 25.0  # |yaw| of the baseline, absolute degrees
    # natural change
    check_motion: bool = True
    static_diff: float = 2.0  # grey levels: consecutive face windows closer than this are "the same"
    max_static_fraction: float = 0.8
    rigid_fit_max: float = 0.90  # fit at or above this = explained by a 2D warp of the reference
    rigid_samples: int = 16
    min_nonrigid_frames: int = 2  # frames that no 2D warp of the reference explains
    # picture cuts: a jump of the skin colour (CIELAB a*b* distance) between consecutive face
    # frames at least this large, in a frame pair that no 2D warp explains either (fit below
    # cut_rigid_fit_max), is a cut to another photo. None: not checked.
    max_chroma_jump: float | None = 6.0
    cut_rigid_fit_max: float = 0.90
    # quality (of the best frame)
    min_inter_eye_px: float = 30.0
    min_sharpness: float = 40.0
    portrait_pad: float = 0.6  # best-frame crop kept for verify/enrol: face box + this much each side


@dataclass
class LivenessResult:
    live: bool
    reasons: list[str]
    challenges: list[ChallengeStatus]
    frames: int
    face_frames: int
    duration_s: float
    best_frame: int | None = None
    best_face: Face | None = None
    best_embedding: Embedding | None = field(default=None, repr=False)
    # Face-centred RGB crop of the best frame (source resolution) for verify/enrol; never serialised.
    best_image: np.ndarray | None = field(default=None, repr=False)
    events: list[Event] = field(default_factory=list)
    metrics: dict[str, float | int | None] = field(default_factory=dict)
    model: str = ""

    def add_reasons(self, extra: Iterable[str]) -> None:
        merged = set(self.reasons) | set(extra)
        self.reasons = [r for r in REASONS if r in merged]
        self.live = self.live and not self.reasons

    def to_dict(self) -> dict[str, Any]:
        return {
            "live": self.live,
            "reasons": list(self.reasons),
            "challenges": [c.to_dict() for c in self.challenges],
            "movements": [e.to_dict() for e in self.events],
            "frames": self.frames,
            "face_frames": self.face_frames,
            "duration_s": round(self.duration_s, 3),
            "best_frame": self.best_frame,
            "best_face": self.best_face.to_dict() if self.best_face is not None else None,
            "metrics": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.metrics.items()},
            "model": self.model,
        }

    def audit_record(self, session_id: str | None = None) -> dict[str, Any]:
        """What may be logged: the decision and why, no image, landmark or template."""
        out: dict[str, Any] = {
            "event": "liveness.decision",
            "live": self.live,
            "reasons": list(self.reasons),
            "challenges": {c.challenge.value: c.status for c in self.challenges},
            "challenge_order": [c.challenge.value for c in self.challenges],
            "frames": self.frames,
            "duration_s": round(self.duration_s, 2),
            "model": self.model,
        }
        if session_id is not None:
            out["session_id"] = session_id
        return out


@dataclass
class _Analysed:
    index: int
    t: float
    face: Face | None
    others: int  # significant second faces
    grey: np.ndarray | None = field(default=None, repr=False)
    chroma: np.ndarray | None = None  # skin colour (a*, b*) of the face, for picture cuts


class LivenessChecker:
    """Thread-safe if the engine is (FaceEngine is). One per process is enough."""

    def __init__(self, engine: Any, config: LivenessConfig | None = None) -> None:
        self.engine = engine
        self.config = config or LivenessConfig()

    def threshold(self) -> float:
        if self.config.identity_threshold is not None:
            return float(self.config.identity_threshold)
        return float(self.engine.threshold(self.config.identity_fmr))

    # ------------------------------------------------------------------------------------------

    def check(self, frames: Sequence[Frame], challenges: Sequence[Challenge | str] = ()) -> LivenessResult:
        """Decide live / not live. ``challenges`` empty = passive check (no movement asked; an
        unasked movement is then not held against the capture)."""
        cfg = self.config
        asked = Challenge.parse_list(challenges)
        threshold = self.threshold()  # fail early (CalibrationError) before any work
        if len(frames) > cfg.max_frames:
            raise LivenessInputError(
                f"{len(frames)} frames, more than the limit of {cfg.max_frames}; send fewer (about 10 per second)",
                frames=len(frames), limit=cfg.max_frames,
            )
        reasons: set[str] = set()
        times = [float(f.t) for f in frames]
        if not all(math.isfinite(t) for t in times) or any(b <= a for a, b in zip(times, times[1:])):
            reasons.add("bad_timestamps")
        # One frame at a time: decode, detect, keep the face and the grey image (for the
        # natural-change tests); the colour frame is dropped straight away.
        analysed: list[_Analysed] = []
        shapes = set()
        for i, f in enumerate(frames):
            try:
                rgb = decode(f.image, max_pixels=cfg.max_frame_pixels)
            except FacegateError as exc:
                raise LivenessInputError(f"frame {i}: {exc.message}", frame=i, cause=exc.code) from None
            shapes.add(rgb.shape)
            analysed.append(self._analyse(i, times[i], rgb))
            del rgb
        n = len(analysed)
        duration = (times[-1] - times[0]) if n >= 2 and "bad_timestamps" not in reasons else 0.0
        result = LivenessResult(False, [], [ChallengeStatus(c, "missing") for c in asked], n, 0, duration,
                                model=getattr(self.engine, "model_id", ""))
        result.metrics["identity_threshold"] = threshold
        if n < cfg.min_frames:
            reasons.add("too_few_frames")
        if n == 0:
            result.add_reasons(reasons)
            return result
        if "bad_timestamps" not in reasons:
            gaps = np.diff(times) if n >= 2 else np.zeros(0)
            if gaps.size and float(gaps.max()) > cfg.max_gap_s:
                reasons.add("frame_gap")
            if gaps.size and float(np.median(gaps)) > 1.0 / cfg.min_fps:
                reasons.add("capture_rate_too_low")
            if duration > cfg.max_duration_s:
                reasons.add("capture_too_long")
        if len(shapes) > 1:
            reasons.add("inconsistent_frames")

        # -- faces -----------------------------------------------------------------------------
        with_face = [a for a in analysed if a.face is not None]
        result.face_frames = len(with_face)
        if not with_face:
            reasons.add("no_face")
            result.add_reasons(reasons)
            return result
        multi = sum(1 for a in analysed if a.others)
        result.metrics["multi_face_frames"] = multi
        if multi >= cfg.min_multi_face_frames:
            reasons.add("multiple_faces")
        missing = n - len(with_face)
        face_times = [a.t for a in with_face]
        longest_gap = max([b - a for a, b in zip(face_times, face_times[1:])] + [face_times[0] - times[0], times[-1] - face_times[-1]])
        if missing / n > cfg.max_missing_fraction or ("bad_timestamps" not in reasons and longest_gap > cfg.max_gap_s):
            reasons.add("face_lost")

        # -- identity --------------------------------------------------------------------------
        embeddings = self.engine.embed_faces([a.face for a in with_face])
        vectors = np.stack([e.vector for e in embeddings])
        ref = self._reference(with_face)
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
        if not ok.all():
            reasons.add("identity_mismatch")
        result.metrics.update(
            identity_min_ref_similarity=float(sims_ref.min()),
            identity_ref_match_fraction=float((sims_ref >= threshold).mean()),
            identity_rejected_frames=int((~ok).sum()),
        )

        # -- pose and challenges (identity-accepted frames only) -------------------------------
        good_frames = [a for a, k in zip(with_face, ok) if k]
        good_vectors = [embeddings[k] for k in range(len(with_face)) if ok[k]]
        samples = [
            PoseSample(a.index, a.t, a.face.quality.yaw_deg, a.face.quality.pitch_deg, math.sqrt(max(a.face.box[2] * a.face.box[3], 1.0)))
            for a in good_frames
        ]
        events, base = detect_events(samples, cfg.pose)
        dyaw, dpitch, scale = deltas(samples, base, cfg.pose)
        result.events = events
        result.metrics.update(baseline_yaw=base.yaw, baseline_pitch=base.pitch,
                              max_abs_dyaw=float(np.abs(dyaw).max()), max_dpitch=float(dpitch.max()),
                              min_dpitch=float(dpitch.min()), max_scale=float(scale.max()))
        if asked:
            if abs(base.yaw) > cfg.max_start_yaw:
                reasons.add("no_neutral_start")
            match = match_challenges(asked, events, t0=times[0], challenge_timeout_s=cfg.challenge_timeout_s)
            result.challenges = match.statuses
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

        # -- natural change --------------------------------------------------------------------
        if cfg.check_motion and len(good_frames) >= 2:
            reasons |= self._motion(good_frames, dyaw, dpitch, result)
            jumps = abrupt_events(events, samples, dyaw, dpitch, scale, cfg.pose)
            result.metrics["abrupt_movements"] = len(jumps)
            if jumps:
                reasons.add("abrupt_motion")

        # -- best frame and quality ------------------------------------------------------------
        th = cfg.pose
        near = [k for k in range(len(good_frames))
                if abs(dyaw[k]) < th.yaw_off and abs(dpitch[k]) < th.pitch_off * 1.5 and scale[k] < th.closer_off]
        pool = near or list(range(len(good_frames)))
        best = max(pool, key=lambda k: (good_frames[k].face.quality.sharpness, -abs(good_frames[k].face.quality.yaw_deg)))
        bf = good_frames[best]
        result.best_frame = bf.index
        result.best_face = bf.face
        result.best_embedding = good_vectors[best]
        # decode the best frame once more (cheaper than keeping every colour frame)
        result.best_image = _portrait(decode(frames[bf.index].image, max_pixels=cfg.max_frame_pixels), bf.face, cfg.portrait_pad)
        if bf.face.quality.inter_eye_px < cfg.min_inter_eye_px:
            reasons.add("face_too_small")
        if bf.face.quality.sharpness < cfg.min_sharpness:
            reasons.add("too_blurry")

        result.live = True
        result.add_reasons(reasons)
        if not result.live:
            result.best_image = None  # a failed capture hands nothing on
        return result

    # ------------------------------------------------------------------------------------------

    def _analyse(self, index: int, t: float, rgb: np.ndarray) -> _Analysed:
        cfg = self.config
        try:
            faces = self.engine.detect(rgb)
        except TooManyFacesError:
            return _Analysed(index, t, None, 2)
        if not faces:
            return _Analysed(index, t, None, 0)
        subject = faces[0]
        others = sum(
            1 for f in faces[1:] if f.box[3] >= cfg.second_face_ratio * subject.box[3] and f.score >= cfg.second_face_score
        )
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if cfg.check_motion else None
        chroma = face_chroma(rgb, subject.box) if cfg.check_motion and cfg.max_chroma_jump is not None else None
        return _Analysed(index, t, subject, others, grey, chroma)

    def _reference(self, with_face: list[_Analysed]) -> int:
        """The first good frame: big and sharp enough and roughly frontal; else the first face."""
        cfg = self.config
        for k, a in enumerate(with_face):
            q = a.face.quality
            if q.inter_eye_px >= cfg.min_inter_eye_px and q.sharpness >= cfg.min_sharpness and abs(q.yaw_deg) <= cfg.max_start_yaw:
                return k
        return 0

    def _motion(self, good: list[_Analysed], dyaw: np.ndarray, dpitch: np.ndarray, result: LivenessResult) -> set[str]:
        cfg = self.config
        reasons: set[str] = set()
        diffs = [frame_difference(a.grey, a.face.box, b.grey) for a, b in zip(good, good[1:])]
        static_fraction = float(np.mean(np.array(diffs) < cfg.static_diff)) if diffs else 0.0
        if static_fraction >= cfg.max_static_fraction:
            reasons.add("static_frames")
        ref = good[0]
        ref_lm = np.asarray(ref.face.landmarks)
        parallax = np.array([landmark_parallax(ref_lm, np.asarray(a.face.landmarks)) for a in good])
        # Test the frames most likely to show 3D change first (largest pose change / parallax);
        # stop at the first one no 2D warp of the reference explains.
        change = np.abs(dyaw) + np.abs(dpitch) + 30.0 * parallax
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
            if _inside(a.face, a.grey.shape):
                fit = rigid_fit(ref.grey, ref.face.box, ref_lm, a.grey, np.asarray(a.face.landmarks))
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
                fit = rigid_fit(a.grey, a.face.box, np.asarray(a.face.landmarks), b.grey, np.asarray(b.face.landmarks))
                if fit is not None and fit < cfg.cut_rigid_fit_max:  # untestable (face at the border): not held against it
                    cuts += 1
            if cuts:
                reasons.add("picture_cut")
        result.metrics.update(max_chroma_jump=float(jumps.max()) if jumps.size else None, picture_cuts=cuts)
        result.metrics.update(static_fraction=static_fraction, min_rigid_fit=min_fit,
                              max_parallax=float(parallax.max()), rigid_tests=len(fits), rigid_untestable=untestable)
        return reasons


def _inside(face: Face, shape: tuple[int, ...], margin: float = 0.02) -> bool:
    """The whole face box lies inside the image (not cut by its border)."""
    h, w = shape[:2]
    x, y, bw, bh = face.box
    mx, my = margin * w, margin * h
    return x >= mx and y >= my and x + bw <= w - mx and y + bh <= h - my


def _portrait(rgb: np.ndarray, face: Face, pad: float) -> np.ndarray:
    x, y, w, h = face.box
    x0, y0 = max(int(x - pad * w), 0), max(int(y - pad * h), 0)
    x1, y1 = min(int(math.ceil(x + w + pad * w)), rgb.shape[1]), min(int(math.ceil(y + h + pad * h)), rgb.shape[0])
    return np.ascontiguousarray(rgb[y0:y1, x0:x1].copy())


# --- inputs ---------------------------------------------------------------------------------------


def read_video(path: str | os.PathLike, *, max_fps: float = 10.0, max_frames: int = 120) -> list[Frame]:
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


def read_frames(paths: Sequence[str | os.PathLike], *, fps: float = 10.0) -> list[Frame]:
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


def check_frames(engine: Any, frames: Sequence[Frame], challenges: Sequence[Challenge | str] = (),
                 config: LivenessConfig | None = None) -> LivenessResult:
    """One-shot helper: ``LivenessChecker(engine, config).check(frames, challenges)``."""
    return LivenessChecker(engine, config).check(frames, challenges)
