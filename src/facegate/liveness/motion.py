"""Pose track -> movement events -> challenge matching, and 2D-rigidity tests. Pure functions
over numbers and small grey images, so they can be tested without a model.

Definitions (docs/liveness.md repeats them for integrators)
-----------------------------------------------------------
*Deltas.* Head pose comes from the 5 landmarks (``vision.quality.head_pose``). Absolute pitch
is biased per person (the nose/eye/mouth proportions differ: level faces read roughly −5…+2°
on the dev photos, and −6…−18° before head_pose's level-face reference was measured), so every decision uses
changes relative to the session's *baseline*: the median yaw, pitch and face size over the
first ``baseline_s`` seconds of frames with a face. ``dyaw > 0`` means turned to the person's
left (image right on unmirrored frames); ``dpitch > 0`` means looking up; ``scale`` is the face
size (√ of box area) over the baseline's.

*Pitch/yaw crosstalk.* head_pose reads beyond ~25° of yaw as partly "looking up" (on the dev
photos the median pitch is ~3° higher at 40–55° of yaw and ~5° beyond 80° than at frontal).
Pitch is corrected by ``crosstalk × max(0, |yaw| − 25°)`` and a look_up/look_down event may only
*start* while the head is not turned (|dyaw| < yaw_on).

*Rotation events* (turn_left, turn_right, look_up, look_down), on the smoothed track (running
median of 3 when frames are ≤ 0.25 s apart):

- starts at the first frame where a direction's normalised magnitude reaches 1
  (``dyaw/yaw_on``, ``−dyaw/yaw_on``, ``dpitch/pitch_up_on``, ``−dpitch/pitch_down_on``),
  the largest one winning;
- while it is active, other directions are ignored (diagonal movement, crosstalk);
- ends at the first frame where its *own axis* is back inside the neutral band
  (|dyaw| < yaw_off for turns, |dpitch| < pitch_off for looks) — "a return toward neutral".
  Turning straight from left to right crosses the neutral band, so it ends the first event
  and starts the second in the same frame: that is the "clear transition".

*Closer events* (move_closer) are a separate channel, because distance and rotation are
independent: start when ``scale ≥ closer_on``, end when ``scale < closer_off``. A rotation that
starts within one frame of a move_closer start is treated as its crosstalk (moving closer to a
camera above or below the eyes changes the apparent pitch) and dropped.

*Matching.* Events are ordered by start time and consecutive events of the same kind are merged
(turning left twice is one turn_left). Challenges are matched in order, greedily, each to the
first unused event of its kind after the previous match. A challenge is ``met`` when matched in
order and on time; ``late`` when matched but it started more than ``challenge_timeout_s`` after
the previous challenge ended (the first: after the first frame); ``out_of_order`` when its
movement happened, but not in the asked order; ``missing`` when it never happened. Any event not
used by the match is an *unexpected movement* and fails the check: a recording that performs
every movement must not satisfy every challenge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from .challenge import Challenge


@dataclass(frozen=True)
class PoseThresholds:
    yaw_on: float = 20.0  # degrees of change that count as a turn
    yaw_off: float = 10.0  # back within this of the baseline = released
    pitch_up_on: float = 8.0  # head_pose pitch reads about half the real tilt: a clear chin-up ≈ 9°
    pitch_down_on: float = 8.0
    pitch_off: float = 4.0
    closer_on: float = 1.30  # face size ratio to the baseline
    closer_off: float = 1.15
    crosstalk: float = 0.1  # degrees of pitch removed per degree of |yaw| beyond 25
    baseline_s: float = 0.5
    smooth_max_dt: float = 0.25  # smooth (median of 3) only when frames are this close in time


@dataclass(frozen=True)
class PoseSample:
    index: int  # frame index in the submission
    t: float  # seconds
    yaw: float
    pitch: float
    size: float  # sqrt(box area), px


@dataclass
class Event:
    kind: Challenge
    start_t: float
    start_index: int
    peak_t: float
    peak_index: int
    peak: float  # peak |dyaw| / |dpitch| in degrees, or peak scale ratio
    end_t: float | None = None
    end_index: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "movement": self.kind.value,
            "start_s": round(self.start_t, 3),
            "peak_s": round(self.peak_t, 3),
            "end_s": None if self.end_t is None else round(self.end_t, 3),
            "peak": round(self.peak, 3),
        }


@dataclass(frozen=True)
class Baseline:
    yaw: float
    pitch: float
    size: float
    frames: int


@dataclass
class ChallengeStatus:
    challenge: Challenge
    status: str  # met | late | out_of_order | missing
    event: Event | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"challenge": self.challenge.value, "status": self.status}
        if self.event is not None:
            out.update(self.event.to_dict())
            out.pop("movement")
        return out


@dataclass
class MatchResult:
    statuses: list[ChallengeStatus]
    events: list[Event]
    unexpected: list[Event] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.status == "met" for s in self.statuses) and not self.unexpected


def baseline(samples: Sequence[PoseSample], th: PoseThresholds) -> Baseline:
    t0 = samples[0].t
    first = [s for s in samples if s.t - t0 <= th.baseline_s][:15] or [samples[0]]
    return Baseline(
        yaw=float(np.median([s.yaw for s in first])),
        pitch=float(np.median([s.pitch for s in first])),
        size=float(np.median([s.size for s in first])),
        frames=len(first),
    )


def _median3(x: np.ndarray) -> np.ndarray:
    if len(x) < 3:
        return x.copy()
    out = x.copy()
    out[1:-1] = np.median(np.stack([x[:-2], x[1:-1], x[2:]]), axis=0)
    return out


def deltas(samples: Sequence[PoseSample], base: Baseline, th: PoseThresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dyaw, dpitch, scale) per sample, crosstalk-corrected and smoothed."""
    yaw = np.array([s.yaw for s in samples], dtype=np.float64)
    pitch = np.array([s.pitch for s in samples], dtype=np.float64)
    size = np.array([s.size for s in samples], dtype=np.float64)
    pitch = pitch - th.crosstalk * np.maximum(0.0, np.abs(yaw) - 25.0)
    base_pitch = base.pitch - th.crosstalk * max(0.0, abs(base.yaw) - 25.0)
    t = np.array([s.t for s in samples], dtype=np.float64)
    if len(samples) >= 3 and np.median(np.diff(t)) <= th.smooth_max_dt:
        yaw, pitch, size = _median3(yaw), _median3(pitch), _median3(size)
    return yaw - base.yaw, pitch - base_pitch, size / max(base.size, 1e-6)


_ROTATIONS = (Challenge.TURN_LEFT, Challenge.TURN_RIGHT, Challenge.LOOK_UP, Challenge.LOOK_DOWN)


def detect_events(samples: Sequence[PoseSample], th: PoseThresholds = PoseThresholds()) -> tuple[list[Event], Baseline]:
    """Movement events in start order (same-kind neighbours merged) and the baseline used."""
    if not samples:
        return [], Baseline(0.0, 0.0, 0.0, 0)
    base = baseline(samples, th)
    dyaw, dpitch, scale = deltas(samples, base, th)
    events: list[Event] = []
    start_pos: dict[int, int] = {}
    active: Event | None = None
    closer: Event | None = None
    for k, s in enumerate(samples):
        dy, dp, sc = dyaw[k], dpitch[k], scale[k]
        mags = {
            Challenge.TURN_LEFT: dy / th.yaw_on,
            Challenge.TURN_RIGHT: -dy / th.yaw_on,
            Challenge.LOOK_UP: dp / th.pitch_up_on if abs(dy) < th.yaw_on else 0.0,
            Challenge.LOOK_DOWN: -dp / th.pitch_down_on if abs(dy) < th.yaw_on else 0.0,
        }
        amount = {Challenge.TURN_LEFT: dy, Challenge.TURN_RIGHT: -dy, Challenge.LOOK_UP: dp, Challenge.LOOK_DOWN: -dp}
        # rotation channel
        if active is not None:
            own = amount[active.kind]
            limit = th.yaw_off if active.kind in (Challenge.TURN_LEFT, Challenge.TURN_RIGHT) else th.pitch_off
            if own < limit:
                active.end_t, active.end_index = s.t, s.index
                active = None
            elif own > active.peak:
                active.peak, active.peak_t, active.peak_index = float(own), s.t, s.index
        if active is None:
            kind = max(_ROTATIONS, key=lambda c: mags[c])
            if mags[kind] >= 1.0:
                active = Event(kind, s.t, s.index, s.t, s.index, float(amount[kind]))
                events.append(active)
                start_pos[id(active)] = k
        # distance channel
        if closer is not None:
            if sc < th.closer_off:
                closer.end_t, closer.end_index = s.t, s.index
                closer = None
            elif sc > closer.peak:
                closer.peak, closer.peak_t, closer.peak_index = float(sc), s.t, s.index
        elif sc >= th.closer_on:
            closer = Event(Challenge.MOVE_CLOSER, s.t, s.index, s.t, s.index, float(sc))
            events.append(closer)
            start_pos[id(closer)] = k
    # Moving closer changes the viewing angle (and zooming resamples the landmarks): a rotation
    # that starts within one frame of a move_closer start is crosstalk of that movement, not a
    # movement of its own. It is dropped — it can neither satisfy a challenge nor count against one.
    closer_starts = [start_pos[id(e)] for e in events if e.kind is Challenge.MOVE_CLOSER]
    events = [e for e in events if e.kind is Challenge.MOVE_CLOSER
              or all(abs(start_pos[id(e)] - c) > 1 for c in closer_starts)]
    events.sort(key=lambda e: (e.start_t, e.start_index))
    merged: list[Event] = []
    for e in events:
        if merged and merged[-1].kind is e.kind:
            prev = merged[-1]
            if e.peak > prev.peak:
                prev.peak, prev.peak_t, prev.peak_index = e.peak, e.peak_t, e.peak_index
            prev.end_t, prev.end_index = e.end_t, e.end_index
        else:
            merged.append(e)
    return merged, base


def match_challenges(
    challenges: Sequence[Challenge], events: Sequence[Event], *, t0: float, challenge_timeout_s: float
) -> MatchResult:
    statuses: list[ChallengeStatus] = []
    used: set[int] = set()
    pos = 0
    prev_end = t0
    for c in challenges:
        hit = next((j for j in range(pos, len(events)) if events[j].kind is c), None)
        if hit is None:
            anywhere = next((j for j, e in enumerate(events) if e.kind is c and j not in used), None)
            statuses.append(ChallengeStatus(c, "out_of_order" if anywhere is not None else "missing",
                                            events[anywhere] if anywhere is not None else None))
            continue
        e = events[hit]
        used.add(hit)
        pos = hit + 1
        status = "met" if e.start_t - prev_end <= challenge_timeout_s else "late"
        statuses.append(ChallengeStatus(c, status, e))
        prev_end = e.end_t if e.end_t is not None else e.peak_t
    unexpected = [e for j, e in enumerate(events) if j not in used]
    return MatchResult(statuses, list(events), unexpected)


def abrupt_events(
    events: Sequence[Event], samples: Sequence[PoseSample], dyaw: np.ndarray, dpitch: np.ndarray, scale: np.ndarray,
    th: PoseThresholds = PoseThresholds(),
) -> list[Event]:
    """Events with no frame in their transition band (between the neutral and the movement
    threshold) on the way out *and* none on the way back: the pose jumped both times, as when
    still photos of different poses are shown one after the other. A real head passes through
    intermediate poses; at ~10 frames per second at least one frame lands in the band on one of
    the two transitions unless the movement is very fast. A movement still under way when the
    capture ends (no way back observed) is not judged."""
    pos = {s.index: k for k, s in enumerate(samples)}
    out = []
    for e in events:
        if e.kind in (Challenge.TURN_LEFT, Challenge.TURN_RIGHT):
            amount = dyaw if e.kind is Challenge.TURN_LEFT else -dyaw
            lo, hi = th.yaw_off, th.yaw_on
        elif e.kind in (Challenge.LOOK_UP, Challenge.LOOK_DOWN):
            amount = dpitch if e.kind is Challenge.LOOK_UP else -dpitch
            lo, hi = th.pitch_off, th.pitch_up_on if e.kind is Challenge.LOOK_UP else th.pitch_down_on
        else:
            amount, lo, hi = scale, th.closer_off, th.closer_on
        if e.end_index is None:
            continue
        k0 = pos[e.start_index]
        ramp = 0
        k = k0 - 1
        while k >= 0 and lo <= amount[k] < hi:
            ramp += 1
            k -= 1
        if ramp == 0:
            k = pos[e.end_index] - 1
            while k > k0 and lo <= amount[k] < hi:
                ramp += 1
                k -= 1
        if ramp == 0:
            out.append(e)
    return out


# --- 2D rigidity ---------------------------------------------------------------------------------

RIGID_SIZE = 64


def face_window(box: Sequence[float], pad: float = 0.15) -> tuple[float, float, float]:
    """(x0, y0, side) of a square around a face box, padded."""
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * (1 + 2 * pad)
    return x + w / 2 - side / 2, y + h / 2 - side / 2, side


def _window_transform(box: Sequence[float], size: int = RIGID_SIZE) -> np.ndarray:
    x0, y0, side = face_window(box)
    k = size / max(side, 1e-6)
    return np.array([[k, 0, -x0 * k], [0, k, -y0 * k], [0, 0, 1]], dtype=np.float64)


def _face_mask(size: int = RIGID_SIZE) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (size // 2, size // 2), (int(size * 0.33), int(size * 0.42)), 0, 0, 360, 255, -1)
    return mask


_MASK = _face_mask()


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    av = a[mask].astype(np.float64)
    bv = b[mask].astype(np.float64)
    av -= av.mean()
    bv -= bv.mean()
    den = math.sqrt(float((av * av).sum() * (bv * bv).sum()))
    return float((av * bv).sum() / den) if den > 1e-9 else 1.0


def rigid_fit(
    grey_a: np.ndarray, box_a: Sequence[float], lm_a: np.ndarray, grey_b: np.ndarray, lm_b: np.ndarray
) -> float | None:
    """How well one planar (homography) warp explains face B as face A: the best normalised
    correlation (−1…1) inside the face after warping B onto A — from the homography of the 5
    landmarks, refined by ECC when ECC converges.

    ≈1 for the same image moved, scaled, rotated or tilted (a photo held up, jitter,
    perspective warps); lower for a real head that turned, changed expression or blinked.
    ``None`` when less than half of the face window lies inside both images (not testable).
    """
    ta = _window_transform(box_a)
    size = (RIGID_SIZE, RIGID_SIZE)
    try:
        h0, _ = cv2.findHomography(np.asarray(lm_b, np.float64), np.asarray(lm_a, np.float64), 0)
    except cv2.error:
        return None
    if h0 is None or not np.all(np.isfinite(h0)):
        return None
    m = ta @ h0
    a = cv2.warpPerspective(grey_a, ta, size, flags=cv2.INTER_AREA)
    b = cv2.warpPerspective(grey_b, m, size, flags=cv2.INTER_AREA)
    inside_a = cv2.warpPerspective(np.full(grey_a.shape[:2], 255, np.uint8), ta, size, flags=cv2.INTER_NEAREST)
    inside_b = cv2.warpPerspective(np.full(grey_b.shape[:2], 255, np.uint8), m, size, flags=cv2.INTER_NEAREST)
    mask = cv2.erode(_MASK & inside_a & inside_b, np.ones((3, 3), np.uint8))
    if np.count_nonzero(mask) < 0.5 * np.count_nonzero(_MASK):
        return None
    sel = mask > 0
    if float(a[sel].std()) < 2.0 or float(b[sel].std()) < 2.0:
        return 1.0  # flat patches: nothing non-rigid to see
    best = _ncc(a, b, sel)
    warp = np.eye(3, dtype=np.float32)
    try:
        rho, _ = cv2.findTransformECC(
            a.astype(np.float32), b.astype(np.float32), warp, cv2.MOTION_HOMOGRAPHY,
            (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-5), mask, 3,
        )
        if math.isfinite(rho):
            best = max(best, float(rho))
    except cv2.error:
        pass  # ECC diverged: keep the landmark homography's correlation
    return best


def frame_difference(grey_a: np.ndarray, box_a: Sequence[float], grey_b: np.ndarray) -> float:
    """Mean absolute grey difference (0–255) of the face window of A and the same window of B,
    without any alignment: ≈0 for a repeated frame, a few levels for sensor noise."""
    ta = _window_transform(box_a)
    a = cv2.warpPerspective(grey_a, ta, (RIGID_SIZE, RIGID_SIZE), flags=cv2.INTER_AREA).astype(np.float32)
    b = cv2.warpPerspective(grey_b, ta, (RIGID_SIZE, RIGID_SIZE), flags=cv2.INTER_AREA).astype(np.float32)
    return float(np.abs(a - b)[_MASK > 0].mean())


def landmark_parallax(lm_a: np.ndarray, lm_b: np.ndarray) -> float:
    """Nose-tip parallax: map A's eyes and mouth corners onto B's with the homography they define
    and measure how far B's nose is from where a flat face would put it, in B's eye distances.
    A planar picture gives landmark noise (≲0.07 on 40 px eye distances); a real 20° turn ~0.25."""
    a = np.asarray(lm_a, np.float32).reshape(5, 2)
    b = np.asarray(lm_b, np.float32).reshape(5, 2)
    try:
        h = cv2.getPerspectiveTransform(a[[0, 1, 3, 4]], b[[0, 1, 3, 4]])
    except cv2.error:
        return 0.0
    p = h @ np.array([a[2, 0], a[2, 1], 1.0])
    if abs(p[2]) < 1e-9:
        return 0.0
    ie = float(np.linalg.norm(b[1] - b[0]))
    return float(np.linalg.norm(p[:2] / p[2] - b[2]) / max(ie, 1e-6))


# --- picture cuts (photo sequences) ---------------------------------------------------------------


def face_chroma(rgb: np.ndarray, box: Sequence[float]) -> np.ndarray | None:
    """Colour of the face's skin (CIELAB a*, b* of the patch scaled to one mean brightness; trimmed
    mean over the centre of the face box: half its width, 30–80 % of its height — cheeks, nose,
    upper lip). Head pose and distance
    change the shading (L*) of the skin, not the colour of the light on it; a cut to another
    photograph (another day, camera, white balance) usually does. ``None`` when the patch is
    empty (a face at the image border)."""
    x, y, w, h = (float(v) for v in box)
    cx = x + w / 2
    x0, x1 = int(max(cx - 0.25 * w, 0)), int(min(cx + 0.25 * w, rgb.shape[1]))
    y0, y1 = int(max(y + 0.30 * h, 0)), int(min(y + 0.80 * h, rgb.shape[0]))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    patch = rgb[y0:y1, x0:x1]
    if max(patch.shape[:2]) > 48:  # the statistic needs no detail; keep it cheap
        s = 48 / max(patch.shape[:2])
        patch = cv2.resize(patch, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    # exposure: scale the patch to one mean brightness first (a*, b* grow with L*; a camera's
    # auto-exposure step must not read as a colour change)
    rgbf = patch.astype(np.float32) / 255.0
    mean = float(rgbf.mean())
    if mean < 1e-3:
        return None
    rgbf = np.clip(rgbf * (0.5 / mean), 0.0, 1.0)
    lab = cv2.cvtColor(rgbf, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    out = []
    for ch in (lab[:, 1], lab[:, 2]):
        lo, hi = np.percentile(ch, [10, 90])
        sel = ch[(ch >= lo) & (ch <= hi)]
        out.append(float(sel.mean()) if sel.size else float(ch.mean()))
    return np.array(out)


def chroma_jumps(chromas: Sequence[np.ndarray | None]) -> np.ndarray:
    """Distance in the a*b* plane between each frame's face colour and the previous frame's
    (frames without a value are skipped)."""
    vals = [c for c in chromas if c is not None]
    if len(vals) < 2:
        return np.zeros(0)
    arr = np.stack(vals)
    return np.linalg.norm(np.diff(arr, axis=0), axis=1)
