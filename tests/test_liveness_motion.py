"""Liveness pose/event logic and 2D-rigidity measures, on synthetic numbers (no model needed)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facegate.liveness import Challenge
from facegate.liveness.motion import (
    PoseSample,
    PoseThresholds,
    detect_events,
    frame_difference,
    landmark_parallax,
    match_challenges,
    rigid_fit,
)

L, R, U, D, C = Challenge.TURN_LEFT, Challenge.TURN_RIGHT, Challenge.LOOK_UP, Challenge.LOOK_DOWN, Challenge.MOVE_CLOSER
FPS = 10.0


def track(*segments: tuple[float, float, float, int], base_pitch: float = -12.0, noise: float = 0.0, seed: int = 0):
    """Segments of (yaw, pitch offset, size, frames), linearly interpolated from the previous
    segment's values so movements ramp like a real head."""
    rng = np.random.default_rng(seed)
    samples = []
    prev = (0.0, 0.0, 100.0)
    k = 0
    for yaw, dp, size, n in segments:
        for i in range(n):
            a = (i + 1) / n
            y = prev[0] + (yaw - prev[0]) * a
            p = prev[1] + (dp - prev[1]) * a
            s = prev[2] + (size - prev[2]) * a
            samples.append(PoseSample(k, k / FPS, y + rng.normal(0, noise), base_pitch + p + rng.normal(0, noise), s))
            k += 1
        prev = (yaw, dp, size)
    return samples


NEUTRAL = (0.0, 0.0, 100.0, 6)


DEFAULT_THRESHOLDS = PoseThresholds()


def kinds(samples, th=DEFAULT_THRESHOLDS):
    events, _ = detect_events(samples, th)
    return [e.kind for e in events]


def test_left_then_up_with_returns():
    s = track(NEUTRAL, (30, 0, 100, 5), (30, 0, 100, 4), (0, 0, 100, 5), (0, 0, 100, 3), (0, 18, 100, 5), (0, 0, 100, 5))
    assert kinds(s) == [L, U]
    events, _ = detect_events(s)
    m = match_challenges([L, U], events, t0=0.0, challenge_timeout_s=8.0)
    assert m.ok and [x.status for x in m.statuses] == ["met", "met"]
    assert events[0].end_t is not None and events[0].peak == pytest.approx(30, abs=0.5)


def test_wrong_order_and_missing():
    s = track(NEUTRAL, (0, 18, 100, 5), (0, 0, 100, 5), (30, 0, 100, 5), (0, 0, 100, 5))
    events, _ = detect_events(s)
    m = match_challenges([L, U], events, t0=0.0, challenge_timeout_s=8.0)
    assert not m.ok
    assert [x.status for x in m.statuses] == ["met", "out_of_order"]
    m = match_challenges([L, R], events, t0=0.0, challenge_timeout_s=8.0)
    assert [x.status for x in m.statuses] == ["met", "missing"]


def test_direct_left_to_right_is_a_clear_transition():
    s = track(NEUTRAL, (30, 0, 100, 5), (-30, 0, 100, 6), (0, 0, 100, 5))
    assert kinds(s) == [L, R]


def test_no_release_means_no_second_challenge():
    # turned left and, still turned, looks up: the up is not counted (diagonal / crosstalk)
    s = track(NEUTRAL, (30, 0, 100, 5), (30, 20, 100, 6), (0, 0, 100, 5))
    assert kinds(s) == [L]


def test_repeated_movement_counts_once_and_extra_movement_is_unexpected():
    s = track(NEUTRAL, (30, 0, 100, 4), (0, 0, 100, 4), (30, 0, 100, 4), (0, 0, 100, 4),
              (-30, 0, 100, 5), (0, 0, 100, 4), (0, -18, 100, 4), (0, 0, 100, 4))
    assert kinds(s) == [L, R, D]
    events, _ = detect_events(s)
    m = match_challenges([L, D], events, t0=0.0, challenge_timeout_s=8.0)
    assert [x.status for x in m.statuses] == ["met", "met"]
    assert [e.kind for e in m.unexpected] == [R] and not m.ok


def test_pose_noise_and_small_movements_make_no_event():
    s = track(NEUTRAL, (12, 5, 105, 10), (-12, -5, 95, 10), (0, 0, 100, 10), noise=2.5, seed=3)
    assert kinds(s) == []


def test_single_frame_spike_is_smoothed_away():
    s = track(NEUTRAL, (0, 0, 100, 10))
    s[8] = PoseSample(8, s[8].t, 45.0, s[8].pitch + 25, 100.0)  # one bad landmark frame
    assert kinds(s) == []


def test_yaw_crosstalk_does_not_read_as_looking_up():
    # head_pose reads large yaw as partly "up": 55° right with +8° apparent pitch
    s = track(NEUTRAL, (-55, 8, 100, 6), (-55, 8, 100, 4), (0, 0, 100, 6))
    assert kinds(s) == [R]


def test_move_closer_is_its_own_channel():
    s = track(NEUTRAL, (0, 0, 140, 5), (30, 0, 140, 5), (0, 0, 140, 5))
    assert kinds(s) == [C, L]
    s = track(NEUTRAL, (0, 0, 140, 5), (0, 0, 100, 5), (0, 0, 120, 5))
    assert kinds(s) == [C]  # 1.2× is not closer


def test_a_look_starting_with_move_closer_is_its_crosstalk():
    s = track(NEUTRAL, (0, -10, 150, 1), (0, -10, 150, 4), (0, 0, 100, 4), (30, 0, 100, 4), (0, 0, 100, 4))
    assert kinds(s) == [C, L]
    s = track(NEUTRAL, (0, 0, 150, 1), (0, 0, 150, 4), (0, -10, 150, 4), (0, -10, 150, 3), (0, 0, 150, 4))
    assert kinds(s) == [C, D]  # a look after moving closer still counts


def test_baseline_is_the_first_frames_not_absolute_pitch():
    # a person whose frontal pitch reads -25° (head_pose's offset) looks up by 15°
    s = track(NEUTRAL, (0, 15, 100, 5), (0, 0, 100, 5), base_pitch=-25.0)
    assert kinds(s) == [U]
    events, base = detect_events(s)
    assert base.pitch == pytest.approx(-25.0)


def test_late_challenge():
    s = track(NEUTRAL, (30, 0, 100, 5), (0, 0, 100, 5), (0, 0, 100, 100), (0, 18, 100, 5), (0, 0, 100, 5))
    events, _ = detect_events(s)
    m = match_challenges([L, U], events, t0=0.0, challenge_timeout_s=8.0)
    assert [x.status for x in m.statuses] == ["met", "late"]


def test_empty_track():
    assert detect_events([]) == ([], detect_events([])[1])


# --- rigidity ------------------------------------------------------------------------------------


def _textured(seed=0, size=240):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (size, size)).astype(np.uint8), (0, 0), 2.0)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


LM = np.array([[95, 100], [145, 100], [120, 130], [100, 160], [140, 160]], np.float64)
BOX = (70, 60, 100, 130)


def _warp(img, h):
    return cv2.warpPerspective(img, h, img.shape[::-1], borderMode=cv2.BORDER_REFLECT)


def _apply(h, pts):
    p = np.c_[pts, np.ones(len(pts))] @ h.T
    return p[:, :2] / p[:, 2:]


def test_a_planar_warp_is_rigid_and_has_no_parallax():
    img = _textured()
    h = np.array([[1.02, 0.05, -3], [-0.03, 0.97, 4], [2e-4, -1e-4, 1]])
    moved, lm2 = _warp(img, h), _apply(h, LM)
    assert rigid_fit(img, BOX, LM, moved, lm2) > 0.97
    assert landmark_parallax(LM, lm2) < 1e-6
    assert frame_difference(img, BOX, img) == 0.0


def test_nose_out_of_plane_shows_parallax_and_other_content_is_not_rigid():
    img = _textured(0)
    lm2 = LM.copy()
    lm2[2, 0] += 12  # nose moved relative to eyes/mouth: a head turn
    assert landmark_parallax(LM, lm2) > 0.2
    other = _textured(1)  # different content (3D change, other person): no warp explains it
    assert rigid_fit(img, BOX, LM, other, LM) < 0.5
    assert frame_difference(img, BOX, other) > 20


def test_abrupt_pose_jumps_are_flagged():
    from facegate.liveness.motion import abrupt_events, deltas

    th = PoseThresholds()
    smooth = track(NEUTRAL, (30, 0, 100, 4), (30, 0, 100, 3), (0, 0, 100, 4), (0, 0, 100, 3))
    jumpy = track(NEUTRAL, (30, 0, 100, 1), (30, 0, 100, 3), (0, 0, 100, 1), (0, 0, 100, 3))
    for samples, expected in ((smooth, 0), (jumpy, 1)):
        events, base = detect_events(samples, th)
        assert [e.kind for e in events] == [L]
        dy, dp, sc = deltas(samples, base, th)
        assert len(abrupt_events(events, samples, dy, dp, sc, th)) == expected
