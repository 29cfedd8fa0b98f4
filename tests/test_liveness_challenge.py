"""Liveness challenges, sessions and the in-memory session store (no model needed)."""

from __future__ import annotations

import collections
import threading

import numpy as np
import pytest

from facegate.liveness import (
    Challenge,
    InMemorySessionStore,
    SessionExpiredError,
    SessionNotFoundError,
    SessionNotLiveError,
    SessionOutcome,
    SessionUsedError,
    UnknownChallengeError,
    create_session,
    random_challenges,
)


def test_random_challenges_shape_and_no_immediate_repeats():
    lengths = collections.Counter()
    kinds = collections.Counter()
    for _ in range(3000):
        seq = random_challenges()
        lengths[len(seq)] += 1
        kinds.update(seq)
        assert 2 <= len(seq) <= 4
        assert all(a is not b for a, b in zip(seq, seq[1:]))
    assert set(lengths) == {2, 3, 4} and min(lengths.values()) > 800  # about a third each
    assert set(kinds) == set(Challenge) and min(kinds.values()) > 1000  # every movement, about evenly
    assert len(random_challenges(4)) == 4
    with pytest.raises(ValueError):
        random_challenges(5)


def test_random_challenges_are_unpredictable():
    draws = {tuple(random_challenges(4)) for _ in range(200)}
    assert len(draws) > 120  # 320 sequences of 4: about 149 distinct expected in 200 draws


def test_parse_aliases_and_errors():
    assert Challenge.parse_list("left, up,closer") == [Challenge.TURN_LEFT, Challenge.LOOK_UP, Challenge.MOVE_CLOSER]
    assert Challenge.parse_list(["turn_right", "Look-Down"]) == [Challenge.TURN_RIGHT, Challenge.LOOK_DOWN]
    assert Challenge.parse_list("") == []
    with pytest.raises(UnknownChallengeError) as exc:
        Challenge.parse("smile")
    assert exc.value.code == "liveness_unknown_challenge"
    assert "left" in Challenge.TURN_LEFT.prompt.lower()


def test_create_session():
    a = create_session(now=1000.0, owner="k1")
    b = create_session(now=1000.0)
    assert a.id != b.id and a.nonce != b.nonce and len(a.nonce) >= 20
    assert a.expires_at == pytest.approx(1180.0)
    assert a.state == "pending" and a.owner == "k1"
    d = a.to_dict()
    assert d["nonce"] == a.nonce and d["expires_at"].endswith("Z") and len(d["prompts"]) == len(d["challenges"])
    assert "nonce" not in a.to_dict(include_nonce=False)
    fixed = create_session(["left", "up"], ttl_s=10, now=0.0)
    assert fixed.challenges == (Challenge.TURN_LEFT, Challenge.LOOK_UP)


def _outcome(live=True, at=100.0):
    return SessionOutcome(live, {"live": live, "reasons": [] if live else ["static_frames"]}, at,
                          best_image=np.zeros((8, 8, 3), np.uint8), best_embedding=np.ones(4, np.float32))


def test_store_life_cycle():
    store = InMemorySessionStore()
    s = create_session(now=0.0, owner="k1")
    store.add(s)
    with pytest.raises(SessionNotFoundError):
        store.get(s.id, owner="k2")  # another caller's session does not exist for it
    with pytest.raises(SessionNotFoundError):
        store.claim("nope", owner="k1")
    assert store.claim(s.id, owner="k1", now=10.0).state == "checking"
    with pytest.raises(SessionUsedError):
        store.claim(s.id, owner="k1", now=11.0)
    with pytest.raises(SessionNotLiveError):
        store.consume(s.id, owner="k1", now=12.0)  # not finished yet
    store.finish(s.id, _outcome(True, at=20.0))
    assert store.get(s.id, owner="k1").state == "passed"
    out = store.consume(s.id, owner="k1", now=30.0)
    assert out.best_image is not None and out.best_embedding is not None
    with pytest.raises(SessionUsedError):
        store.consume(s.id, owner="k1", now=31.0)
    assert store.get(s.id, owner="k1").outcome.best_image is None  # handed out once, forgotten


def test_store_expiry_and_failed_sessions():
    store = InMemorySessionStore()
    s = create_session(now=0.0, ttl_s=60)
    store.add(s)
    with pytest.raises(SessionExpiredError):
        store.claim(s.id, now=60.0)
    f = create_session(now=0.0)
    store.add(f)
    store.claim(f.id, now=1.0)
    store.finish(f.id, _outcome(False, at=2.0))
    assert store.get(f.id).outcome.best_image is None  # a failed check keeps no frame
    with pytest.raises(SessionNotLiveError):
        store.consume(f.id, now=3.0)
    p = create_session(now=0.0)
    store.add(p)
    store.claim(p.id, now=1.0)
    store.finish(p.id, _outcome(True, at=2.0))
    with pytest.raises(SessionExpiredError):
        store.consume(p.id, now=2.0 + p.result_ttl_s)


def test_replay_digests():
    store = InMemorySessionStore(replay_ttl_s=100)
    assert store.remember_frames("a", ["x", "y"], now=0.0) == set()
    assert store.remember_frames("a", ["x"], now=1.0) == set()  # same session: not a replay
    assert store.remember_frames("b", ["y", "z"], now=2.0) == {"y"}
    assert store.remember_frames("c", ["y"], now=200.0) == set()  # outside the window


def test_purge_drops_old_sessions_and_frames():
    store = InMemorySessionStore()
    s = create_session(now=0.0, ttl_s=10)
    store.add(s)
    store.claim(s.id, now=1.0)
    store.finish(s.id, _outcome(True, at=2.0))
    store.purge(now=2.0 + s.result_ttl_s)
    assert store.get(s.id).outcome.best_image is None
    assert store.purge(now=1e6) == 1 and len(store) == 0


def test_claim_is_atomic_across_threads():
    store = InMemorySessionStore()
    s = create_session()
    store.add(s)
    wins, errors = [], []
    barrier = threading.Barrier(16)

    def go():
        barrier.wait()
        try:
            store.claim(s.id)
            wins.append(1)
        except SessionUsedError:
            errors.append(1)

    threads = [threading.Thread(target=go) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(errors) == 15


def test_store_is_bounded():
    store = InMemorySessionStore(max_sessions=3)
    ids = []
    for _ in range(5):
        s = create_session()
        store.add(s)
        ids.append(s.id)
    assert len(store) == 3
    with pytest.raises(SessionNotFoundError):
        store.get(ids[0])
