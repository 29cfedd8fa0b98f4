"""The database-backed liveness session store on SQLite and on a real PostgreSQL (embedded
server, tests/pg_support.py): the same life cycle as the in-memory store, single use that holds
between threads, processes and store instances, replay digests shared by instances and kept
24 h, expiry and purge, and no frame or image in the database."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import LargeBinary, inspect, select

import pg_support
from facegate.gallery.liveness_schema import LivenessFrameDigestRow, LivenessSessionRow
from facegate.liveness import (
    Challenge,
    SessionExpiredError,
    SessionNotFoundError,
    SessionNotLiveError,
    SessionOutcome,
    SessionResultUnavailableError,
    SessionUsedError,
    create_session,
)
from facegate.liveness.db_store import DatabaseSessionStore, LocalResults


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gallery.db'}"
        return
    u = pg_support.fresh_database()
    yield u
    pg_support.drop_database(u)


@pytest.fixture
def store(url):
    st = DatabaseSessionStore.open(url)
    yield st
    st.close()


def _outcome(live=True, at=100.0):
    return SessionOutcome(live, {"event": "liveness.decision", "live": live, "reasons": [] if live else ["static_frames"],
                                 "frames": np.int64(40), "duration_s": np.float32(4.2)}, at,
                          best_image=np.full((8, 8, 3), 7, np.uint8), best_embedding=np.ones(4, np.float32), model="sface")


def test_life_cycle(store):
    s = create_session(now=0.0, owner="k1")
    store.add(s)
    with pytest.raises(ValueError):
        store.add(s)  # ids are unique
    with pytest.raises(SessionNotFoundError):
        store.get(s.id, owner="k2")  # another caller's session does not exist for it
    with pytest.raises(SessionNotFoundError):
        store.claim(s.id, owner="k2", now=1.0)
    with pytest.raises(SessionNotFoundError):
        store.claim("nope", owner="k1")
    got = store.get(s.id, owner="k1")
    assert (got.id, got.nonce, got.challenges, got.state) == (s.id, s.nonce, s.challenges, "pending")
    assert got.created_at == pytest.approx(0.0) and got.expires_at == pytest.approx(s.expires_at)
    assert store.claim(s.id, owner="k1", now=10.0).state == "checking"
    with pytest.raises(SessionUsedError):
        store.claim(s.id, owner="k1", now=11.0)
    with pytest.raises(SessionNotLiveError):
        store.consume(s.id, owner="k1", now=12.0)  # not decided yet
    store.finish(s.id, _outcome(True, at=20.0))
    with pytest.raises(SessionUsedError):
        store.finish(s.id, _outcome(True, at=20.0))  # decided once
    got = store.get(s.id, owner="k1")
    assert got.state == "passed" and got.outcome.live and got.outcome.decision["frames"] == 40
    assert got.outcome.best_image is None  # get() never hands out the frame
    assert got.to_dict()["live"] is True and got.to_dict()["reasons"] == []
    with pytest.raises(SessionNotFoundError):
        store.consume(s.id, owner="k2", now=30.0)
    out = store.consume(s.id, owner="k1", now=30.0)
    assert out.best_image is not None and int(out.best_image[0, 0, 0]) == 7 and out.best_embedding is not None
    with pytest.raises(SessionUsedError):
        store.consume(s.id, owner="k1", now=31.0)
    assert len(store.results) == 0  # handed out once, forgotten


def test_expiry_failed_sessions_and_result_ttl(store):
    s = create_session(now=0.0, ttl_s=60)
    store.add(s)
    with pytest.raises(SessionExpiredError):
        store.claim(s.id, now=60.0)
    assert store.get(s.id).state == "pending"  # an expired claim does not change the row
    f = create_session(now=0.0)
    store.add(f)
    store.claim(f.id, now=1.0)
    store.finish(f.id, _outcome(False, at=2.0))
    assert store.get(f.id).state == "failed" and store.get(f.id).to_dict()["reasons"] == ["static_frames"]
    assert len(store.results) == 0  # a failed check keeps no frame
    with pytest.raises(SessionNotLiveError):
        store.consume(f.id, now=3.0)
    p = create_session(now=0.0)
    store.add(p)
    store.claim(p.id, now=1.0)
    store.finish(p.id, _outcome(True, at=2.0))
    with pytest.raises(SessionExpiredError):
        store.consume(p.id, now=2.0 + p.result_ttl_s)
    assert len(store.results) == 0  # the expired frame is dropped


def test_purge_deletes_expired_sessions_and_digests(store):
    old = create_session(now=0.0, ttl_s=10)
    store.add(old)
    store.claim(old.id, now=1.0)
    store.finish(old.id, _outcome(True, at=2.0))
    fresh = create_session(now=5000.0)
    store.add(fresh)
    assert store.remember_frames(old.id, ["b:1", "p:1"], now=2.0) == set()
    assert store.remember_frames(fresh.id, ["b:2"], now=5000.0) == set()
    # An hour after the result expired the session row goes; the frame stays in memory only until then.
    assert store.purge(now=2.0 + old.result_ttl_s) == 0 and len(store.results) == 0
    assert store.purge(now=2.0 + old.result_ttl_s + 3600.0) == 1
    with pytest.raises(SessionNotFoundError):
        store.get(old.id)
    assert store.get(fresh.id).state == "pending"
    assert store.counts()["digests"] == 3
    store.purge(now=2.0 + 24 * 3600.0)  # digests are kept 24 h
    assert store.counts()["digests"] == 1
    store.purge(now=5000.0 + 24 * 3600.0)
    assert store.counts()["digests"] == 0


def test_replay_digests_shared_by_instances(url):
    a, b = DatabaseSessionStore.open(url, replay_ttl_s=100), DatabaseSessionStore.open(url, replay_ttl_s=100)
    try:
        assert a.remember_frames("s1", ["x", "y", "y"], now=0.0) == set()
        assert a.remember_frames("s1", ["x"], now=1.0) == set()  # the same session: not a replay
        assert b.remember_frames("s2", ["y", "z"], now=2.0) == {"y"}  # another process's session saw y
        assert a.remember_frames("s3", ["z"], now=3.0) == {"z"}
        assert b.remember_frames("s4", ["x"], now=200.0) == set()  # outside the window: taken over
        assert a.remember_frames("s5", ["x"], now=201.0) == {"x"}
        many = [f"p:{i:064x}" for i in range(900)]  # more digests than one statement takes
        assert a.remember_frames("s6", many, now=300.0) == set()
        assert b.remember_frames("s7", many[::7], now=301.0) == set(many[::7])
    finally:
        a.close()
        b.close()


def test_session_outlives_its_store_instance(url):
    """A restart: the process that created the session is gone; single use and the decision stay."""
    first = DatabaseSessionStore.open(url)
    s = create_session(owner="k1")
    first.add(s)
    first.close()
    second = DatabaseSessionStore.open(url)
    try:
        assert second.claim(s.id, owner="k1").state == "checking"
        second.finish(s.id, _outcome(True, at=time.time()))
        third = DatabaseSessionStore.open(url)
        try:
            with pytest.raises(SessionUsedError):
                third.claim(s.id, owner="k1")
            # The best frame is in `second`'s memory only: another process cannot take it, and its
            # failed attempt does not use the session up.
            with pytest.raises(SessionResultUnavailableError):
                third.consume(s.id, owner="k1")
            assert third.get(s.id, owner="k1").state == "passed"
        finally:
            third.close()
        assert second.consume(s.id, owner="k1").best_image is not None
    finally:
        second.close()


def test_claim_is_atomic_across_threads_and_instances(url):
    stores = [DatabaseSessionStore.open(url) for _ in range(2)]
    try:
        sessions = [create_session() for _ in range(4)]
        for s in sessions:
            stores[0].add(s)
        wins: list[str] = []
        used: list[str] = []
        barrier = threading.Barrier(12)

        def go(i: int) -> None:
            st = stores[i % 2]
            barrier.wait()
            for s in sessions:
                try:
                    st.claim(s.id)
                    wins.append(s.id)
                except SessionUsedError:
                    used.append(s.id)

        threads = [threading.Thread(target=go, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(wins) == sorted(s.id for s in sessions)  # each session claimed exactly once
        assert len(used) == 12 * 4 - 4
    finally:
        for st in stores:
            st.close()


def test_consume_is_atomic_across_threads(store):
    s = create_session()
    store.add(s)
    store.claim(s.id)
    store.finish(s.id, _outcome(True, at=time.time()))
    got, refused = [], []
    barrier = threading.Barrier(8)

    def go() -> None:
        barrier.wait()
        try:
            got.append(store.consume(s.id).best_image)
        except SessionUsedError:
            refused.append(1)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 1 and got[0] is not None and len(refused) == 7


# Claims every session id listed in a file, starting at a common wall-clock instant; prints the
# ids it won. Two of these run at once on one database.
CLAIMER = r"""
import sys, time
from facegate.liveness.db_store import DatabaseSessionStore
from facegate.liveness import SessionUsedError
url, start = sys.argv[1], float(sys.argv[2])
ids = open(sys.argv[3]).read().split()
st = DatabaseSessionStore.open(url)
st.get(ids[0])  # connect before the start line
while time.time() < start:
    time.sleep(0.001)
won = []
for sid in ids:
    try:
        st.claim(sid)
        won.append(sid)
    except SessionUsedError:
        pass
    time.sleep(0.005)  # requests arrive spaced: let the other process in between
st.close()
print(" ".join(won), flush=True)
"""


def test_claim_is_atomic_across_processes(url, tmp_path):
    st = DatabaseSessionStore.open(url)
    try:
        sessions = [create_session() for _ in range(40)]
        for s in sessions:
            st.add(s)
        ids = [s.id for s in sessions]
        start = time.time() + 8.0  # both interpreters import facegate first
        procs = []
        for n, order in enumerate((ids, ids[::-1])):  # opposite orders: they meet in the middle
            listing = tmp_path / f"ids{n}.txt"
            listing.write_text("\n".join(order))
            procs.append(subprocess.Popen([sys.executable, "-c", CLAIMER, url, str(start), str(listing)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        won = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-2000:]
            won.append(out.split())
        assert time.time() > start  # they did run concurrently from the start line
        assert sorted(won[0] + won[1]) == sorted(ids)  # every session claimed by exactly one process
        assert not set(won[0]) & set(won[1])
        assert won[0] and won[1], [len(w) for w in won]  # both took part
        assert all(st.get(i).state == "checking" for i in ids)
    finally:
        st.close()


def test_nothing_but_codes_and_digests_in_the_database(store):
    """No probe retention: the tables have no binary column, the decision row holds the audit record."""
    for table in (LivenessSessionRow.__table__, LivenessFrameDigestRow.__table__):
        assert not any(isinstance(c.type, LargeBinary) for c in table.columns), table.name
    s = create_session(challenges=[Challenge.TURN_LEFT, Challenge.LOOK_UP])
    store.add(s)
    store.claim(s.id)
    store.finish(s.id, _outcome(True, at=time.time()))
    with store.store.engine.connect() as conn:
        row = conn.execute(select(LivenessSessionRow.__table__).where(LivenessSessionRow.__table__.c.id == s.id)).one()
        cols = {c["name"] for c in inspect(conn).get_columns("liveness_sessions")}
    assert set(row.decision) == {"event", "live", "reasons", "frames", "duration_s"}
    assert "image" not in " ".join(cols) and "embedding" not in " ".join(cols)


def test_local_results_are_bounded_and_expire():
    r = LocalResults(max_items=2)
    for i in range(3):
        r.put(f"s{i}", np.zeros(1), None, deadline=10.0 + i)
    assert len(r) == 2 and not r.has("s0", 0.0) and r.has("s1", 0.0)
    assert not r.has("s1", 11.0)
    assert r.drop_expired(11.5) == 1 and len(r) == 1


def test_migration_creates_the_tables(url):
    st = DatabaseSessionStore.open(url)
    try:
        assert st.store.schema_version() == "0002"
        with st.store.engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
        assert {"liveness_sessions", "liveness_frame_digests"} <= names
    finally:
        st.close()


def test_sqlite_store_file_is_the_gallery_file(tmp_path):
    """`DatabaseSessionStore.open` on a gallery's SQLite file adds its tables beside the gallery's."""
    from facegate.gallery import Gallery

    g = Gallery.open(tmp_path / "g")
    g.close()
    st = DatabaseSessionStore.open(f"sqlite:///{Path(tmp_path / 'g' / 'gallery.db')}")
    try:
        s = create_session()
        st.add(s)
        assert st.get(s.id).state == "pending"
    finally:
        st.close()
    Gallery.open(tmp_path / "g").close()  # the gallery still opens the file


# --- through the service: two app instances (two `facegate serve` processes) on one database ---

CLIP = Path(__file__).parent / "data" / "liveness" / "miranda_motion.mp4"


@pytest.fixture(scope="module")
def clip():
    from facegate.liveness import read_video

    return read_video(CLIP)


@pytest.fixture(scope="module")
def moves(engine, clip):
    from facegate.liveness import LivenessChecker

    return [e.kind for e in LivenessChecker(engine).check(clip, []).events]


def _jpegs(clip, quality):
    import cv2

    return [cv2.imencode(".jpg", cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
            for f in clip]


def _app(data_dir, engine):
    from facegate.service import Settings, create_app

    return create_app(Settings(data_dir=data_dir, rate_limit_per_s=1000, rate_limit_burst=1000, bootstrap_admin_key=False),
                      engine=engine)


def _submit(client, key, session, clip, jpegs, *, age_s=8.0):
    import json

    files = [("frames", (f"f{i}.jpg", j, "image/jpeg")) for i, j in enumerate(jpegs)]
    stamps = json.dumps([round((time.time() - age_s + f.t) * 1000.0, 1) for f in clip])
    return client.post(f"/v1/liveness/sessions/{session['id']}/frames", headers={"X-API-Key": key}, files=files,
                       data={"nonce": session["nonce"], "timestamps": stamps})


def test_serve_instances_share_sessions_through_the_database(url, tmp_path, engine, clip, moves, monkeypatch):
    """Created in instance A, completed in instance B, used once; a restart of A keeps every
    session's state; a replay of B's frames through A is refused; A cannot hand out B's frame.
    On SQLite (the embedded default) and on PostgreSQL."""
    from fastapi.testclient import TestClient

    from facegate.gallery import Gallery
    from facegate.gallery.crypto import encode_key, generate_key

    data = tmp_path / "data"
    if url.startswith("postgresql"):
        monkeypatch.setenv("FACEGATE_STORE", url)
        monkeypatch.setenv("FACEGATE_MASTER_KEY", encode_key(generate_key()))
    else:
        url = f"sqlite:///{data / 'gallery.db'}"
    g = Gallery.open(data)
    g.create_collection("staff", purposes=["access"])
    key = g.keys.create("desk", ["verify", "enroll"], ["staff"])[1]
    g.close()
    H = {"X-API-Key": key}
    jpegs = _jpegs(clip, 90)

    app_a = _app(data, engine)
    with TestClient(app_a) as a:
        me = a.get("/v1/me", headers=H).json()
        store_a = app_a.state.service.extensions["liveness_store"]
        assert isinstance(store_a.target, DatabaseSessionStore)
        # A random session through the API and one whose challenge is the clip's own movement
        # (created server-side: the client never picks challenges).
        rand = a.post("/v1/liveness/sessions", headers=H).json()
        fixed = create_session(moves, now=time.time() - 10, owner=me["key_id"])
        store_a.add(fixed)
        fixed_d = {"id": fixed.id, "nonce": fixed.nonce}
    # Instance A is gone (a restart); B opens the same database.
    app_b = _app(data, engine)
    with TestClient(app_b) as b:
        assert b.get(f"/v1/liveness/sessions/{rand['id']}", headers=H).json()["state"] == "pending"
        r = _submit(b, key, fixed_d, clip, jpegs)
        assert r.status_code == 200 and r.json()["live"] is True, r.json()
        r = _submit(b, key, fixed_d, clip, jpegs)
        assert r.status_code == 409 and r.json()["code"] == "liveness_session_used"
        # The random session: the clip does not perform its movements (not live), decided once.
        r = _submit(b, key, rand, clip, _jpegs(clip, 85), age_s=3.0)
        decided = r.json()
        assert r.status_code == 200 and decided["live"] is False and decided["reasons"], decided

        app_a2 = _app(data, engine)  # A again, running beside B
        with TestClient(app_a2) as a2:
            st = a2.get(f"/v1/liveness/sessions/{rand['id']}", headers=H).json()
            assert st["state"] == "failed" and st["reasons"] == decided["reasons"]
            # B's passed session: its best frame is in B's memory only. A refuses, without using it up.
            r = a2.post("/v1/collections/staff/subjects/E-1/faces", headers=H,
                        json={"liveness_session": fixed.id, "purposes": ["access"], "evidence_ref": "form-1"})
            assert r.status_code == 409 and r.json()["code"] == "liveness_result_unavailable", r.text
            # Verbatim replay of B's frames into a new session created through A.
            again = create_session(moves, now=time.time() - 10, owner=me["key_id"])
            app_a2.state.service.extensions["liveness_store"].add(again)
            r = _submit(a2, key, {"id": again.id, "nonce": again.nonce}, clip, jpegs)
            assert r.status_code == 200 and r.json()["live"] is False and "frame_replayed" in r.json()["reasons"]
        # B still holds the frame: enrol with the session, exactly once.
        r = b.post("/v1/collections/staff/subjects/E-1/faces", headers=H,
                   json={"liveness_session": fixed.id, "purposes": ["access"], "evidence_ref": "form-1"})
        assert r.status_code == 201 and r.json()["accepted"] == 1, r.text
        r = b.post("/v1/collections/staff/subjects/E-1/faces", headers=H, json={"liveness_session": fixed.id})
        assert r.status_code == 409 and r.json()["code"] == "liveness_session_used"
    # Everything the database kept about these sessions: state and codes.
    st = DatabaseSessionStore.open(url)
    try:
        counts = st.counts()
        assert counts["consumed"] == 1 and counts["failed"] == 2 and "pending" not in counts
        assert counts["digests"] >= 2 * len(jpegs)
    finally:
        st.close()


def test_memory_store_can_still_be_chosen(tmp_path, engine, monkeypatch):
    from fastapi.testclient import TestClient

    from facegate.liveness import InMemorySessionStore

    monkeypatch.setenv("FACEGATE_LIVENESS_STORE", "memory")
    app = _app(tmp_path / "d", engine)
    with TestClient(app):
        assert isinstance(app.state.service.extensions["liveness_store"], InMemorySessionStore)
