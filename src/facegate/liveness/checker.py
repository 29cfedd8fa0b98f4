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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FacegateError
from ..results import Embedding, Face
from ..vision import decode
from . import checks
from .capture import Frame
from .challenge import Challenge
from .checks import AnalysedFrame, FaceFrame
from .errors import LivenessInputError
from .motion import ChallengeStatus, Event, PoseThresholds

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


class LivenessChecker:
    """Thread-safe if the engine is (FaceEngine is). One per process is enough."""

    def __init__(self, engine: Any, config: LivenessConfig | None = None) -> None:
        self.engine = engine
        self.config = config or LivenessConfig()

    def threshold(self) -> float:
        if self.config.identity_threshold is not None:
            return float(self.config.identity_threshold)
        return float(self.engine.threshold(self.config.identity_fmr))

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
        times = [float(f.t) for f in frames]
        timestamps_ok = checks.timestamps_valid(times)
        analysed, shapes = self._analyse_all(frames, times)
        n = len(analysed)
        duration = (times[-1] - times[0]) if n >= 2 and timestamps_ok else 0.0
        result = LivenessResult(False, [], [ChallengeStatus(c, "missing") for c in asked], n, 0, duration,
                                model=getattr(self.engine, "model_id", ""))
        result.metrics["identity_threshold"] = threshold
        reasons = checks.capture(times, timestamps_ok, duration, shapes, cfg)
        with_face = [FaceFrame(a.index, a.t, a.face, a.grey, a.chroma) for a in analysed if a.face is not None]
        result.face_frames = len(with_face)
        if n and not with_face:
            reasons.add("no_face")
        if not with_face:
            result.add_reasons(reasons)
            return result
        reasons |= checks.face_presence(analysed, with_face, times, timestamps_ok, cfg, result.metrics)

        embeddings = self.engine.embed_faces([a.face for a in with_face])
        mismatch, ok = checks.identity(embeddings, with_face, threshold, cfg, result.metrics)
        reasons |= mismatch
        # pose, challenges and natural change: identity-accepted frames only
        good = [a for a, k in zip(with_face, ok) if k]
        good_embeddings = [embeddings[k] for k in range(len(with_face)) if ok[k]]
        pose = checks.pose(good, cfg, result.metrics)
        result.events = pose.events
        if asked:
            found, result.challenges = checks.challenges(asked, pose, times[0], cfg)
            reasons |= found
        if cfg.check_motion and len(good) >= 2:
            reasons |= checks.natural_change(good, pose, cfg, result.metrics)

        best = checks.best_frame(good, pose, cfg)
        bf = good[best]
        result.best_frame = bf.index
        result.best_face = bf.face
        result.best_embedding = good_embeddings[best]
        # decode the best frame once more (cheaper than keeping every colour frame)
        result.best_image = checks.portrait(decode(frames[bf.index].image, max_pixels=cfg.max_frame_pixels), bf.face,
                                            cfg.portrait_pad)
        reasons |= checks.quality(bf.face, cfg)

        result.live = True
        result.add_reasons(reasons)
        if not result.live:
            result.best_image = None  # a failed capture hands nothing on
        return result

    def _analyse_all(self, frames: Sequence[Frame], times: Sequence[float]) -> tuple[list[AnalysedFrame], set[tuple[int, ...]]]:
        """One frame at a time: decode, detect, keep the face and the grey image (for the
        natural-change tests); the colour frame is dropped straight away."""
        analysed: list[AnalysedFrame] = []
        shapes: set[tuple[int, ...]] = set()
        for i, f in enumerate(frames):
            try:
                rgb = decode(f.image, max_pixels=self.config.max_frame_pixels)
            except FacegateError as exc:
                raise LivenessInputError(f"frame {i}: {exc.message}", frame=i, cause=exc.code) from None
            shapes.add(rgb.shape)
            analysed.append(checks.analyse_frame(self.engine, self.config, i, times[i], rgb))
            del rgb
        return analysed, shapes


def check_frames(engine: Any, frames: Sequence[Frame], challenges: Sequence[Challenge | str] = (),
                 config: LivenessConfig | None = None) -> LivenessResult:
    """One-shot helper: ``LivenessChecker(engine, config).check(frames, challenges)``."""
    return LivenessChecker(engine, config).check(frames, challenges)
