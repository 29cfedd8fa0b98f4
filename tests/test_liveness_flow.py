"""Binding a capture to its session: nonce, single use, expiry, verbatim replay, timestamps,
and handing the best frame to verify/enrol once. Uses the public-domain test clip."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from facegate.clock import ManualClock
from facegate.liveness import (
    InMemorySessionStore,
    LivenessChecker,
    LivenessInputError,
    NonceMismatchError,
    SessionExpiredError,
    SessionNotFoundError,
    SessionNotLiveError,
    SessionUsedError,
    create_session,
)
from facegate.liveness.flow import SubmittedFrame, owner_of, submit_frames, take_best_frame


@pytest.fixture(scope="module")
def checker(engine):
    return LivenessChecker(engine)


@pytest.fixture(scope="module")
def jpegs(clip):
    quality = [cv2.IMWRITE_JPEG_QUALITY, 90]
    return [cv2.imencode(".jpg", cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR), quality)[1].tobytes() for f in clip]


def _submission(jpegs, clip, start_s):
    return [SubmittedFrame(j, (start_s + f.t) * 1000.0) for j, f in zip(jpegs, clip)]


def test_genuine_session_then_verbatim_replay(checker, clip, jpegs, moves):
    clock = ManualClock()
    store = InMemorySessionStore(clock=clock)
    now = clock.now().timestamp()
    a = create_session(moves, now=now - 10, owner="k1")
    store.add(a)
    session, result = submit_frames(store, checker, a.id, a.nonce, _submission(jpegs, clip, now - 8), owner="k1", now=now)
    assert result.live, result.reasons
    assert session.state == "passed" and session.outcome.decision["live"] is True
    # the same frames, re-stamped, into a new session asking the same movements
    b = create_session(moves, now=now + 20, owner="k1")
    store.add(b)
    session_b, rb = submit_frames(store, checker, b.id, b.nonce, _submission(jpegs, clip, now + 22), owner="k1", now=now + 30)
    assert not rb.live and "frame_replayed" in rb.reasons
    assert session_b.state == "failed"
    # the first session's best frame, once, to its owner only
    with pytest.raises(SessionNotFoundError):
        take_best_frame(store, a.id, owner="k2")
    img = take_best_frame(store, a.id, owner="k1")
    assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) > 60
    with pytest.raises(SessionUsedError):
        take_best_frame(store, a.id, owner="k1")
    with pytest.raises(SessionNotLiveError):
        take_best_frame(store, b.id, owner="k1")


def test_nonce_expiry_single_use(checker, clip, jpegs, moves):
    clock = ManualClock()
    store = InMemorySessionStore(clock=clock)
    now = clock.now().timestamp()
    s = create_session(moves, now=now - 5)
    store.add(s)
    frames = _submission(jpegs[:10], clip[:10], now - 4)
    with pytest.raises(NonceMismatchError):
        submit_frames(store, checker, s.id, "wrong", frames, now=now)
    assert store.get(s.id).state == "pending"  # a wrong nonce does not use the session up
    with pytest.raises(SessionNotFoundError):
        submit_frames(store, checker, "unknown", s.nonce, frames, now=now)
    with pytest.raises(LivenessInputError):
        submit_frames(store, checker, s.id, s.nonce, [], now=now)
    with pytest.raises(LivenessInputError):
        submit_frames(store, checker, s.id, s.nonce, [SubmittedFrame(b"junk", now * 1000)] * 6, now=now)
    assert store.get(s.id).state == "pending"  # unreadable input does not use it up either
    submit_frames(store, checker, s.id, s.nonce, frames, now=now)
    with pytest.raises(SessionUsedError):
        submit_frames(store, checker, s.id, s.nonce, frames, now=now + 1)
    late = create_session(moves, ttl_s=180, clock=clock)
    store.add(late)
    clock.advance(200)
    with pytest.raises(SessionExpiredError):
        submit_frames(store, checker, late.id, late.nonce, frames, clock=clock)


def test_timestamps_bind_to_the_session(checker, clip, jpegs, moves):
    clock = ManualClock()
    store = InMemorySessionStore(clock=clock)
    now = clock.now().timestamp()
    s = create_session(moves, now=now - 10)
    store.add(s)
    recorded_yesterday = _submission(jpegs, clip, now - 86400)
    _, r = submit_frames(store, checker, s.id, s.nonce, recorded_yesterday, now=now)
    assert not r.live and "timestamp_before_session" in r.reasons
    # a capture longer than the session has existed (the client's clock offset does not matter)
    s2 = create_session(moves, now=now - 1)
    store.add(s2)
    frames = [SubmittedFrame(j, (now - 0.5 + 3 * f.t) * 1000.0) for j, f in zip(jpegs, clip)]
    _, r = submit_frames(store, checker, s2.id, s2.nonce, frames, now=now)
    assert "capture_span_too_long" in r.reasons
    s3 = create_session(moves, now=now - 10)
    store.add(s3)
    _, r = submit_frames(store, checker, s3.id, s3.nonce, _submission(jpegs, clip, now + 3600), now=now)
    assert "timestamp_after_expiry" in r.reasons


def test_numpy_frames_and_hook(checker, clip, moves):
    clock = ManualClock()
    store = InMemorySessionStore(clock=clock)
    now = clock.now().timestamp()
    s = create_session(moves, now=now - 10, owner="key-7")
    store.add(s)
    frames = [SubmittedFrame(f.image, (now - 8 + f.t) * 1000.0) for f in clip]
    _, r = submit_frames(store, checker, s.id, s.nonce, frames, owner="key-7", now=now)
    assert r.live, r.reasons
    principal = SimpleNamespace(key_id="key-7")
    img = take_best_frame(store, s.id, owner=owner_of(principal))
    assert isinstance(img, np.ndarray)
    with pytest.raises(SessionUsedError):
        take_best_frame(store, s.id, owner=owner_of(principal))


def test_owner_of():
    assert owner_of(None) is None and owner_of("k") == "k"
    assert owner_of(SimpleNamespace(key_id=5)) == "5"
    assert owner_of(SimpleNamespace(id="x")) == "x"
