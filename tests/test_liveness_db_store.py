"""The database-backed liveness session store on SQLite and on a real PostgreSQL (embedded
server, tests/pg_support.py): the same life cycle as the in-memory store, single use that holds
between threads, processes and store instances, replay digests shared by instances and kept
24 h, expiry and purge; a passed session's result usable once from any instance or process,
stored only encrypted (AES-GCM, key derived from the master key, bound to the session id),
deleted on use, on expiry and by the purge, and unusable after a master-key rotation."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import LargeBinary, delete, inspect, select, text, update

import pg_support
from facegate.clock import SYSTEM, ManualClock
from facegate.gallery.crypto import encode_key, generate_key
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
from facegate.liveness.db_store import DatabaseSessionStore
from facegate.liveness.schema import LivenessFrameDigestRow, LivenessResultRow, LivenessSessionRow

R = LivenessResultRow.__table__


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path, monkeypatch):
    """SQLite: the master key is created beside the file (tmp_path/master.key). PostgreSQL: the
    key comes from $FACEGATE_MASTER_KEY (inherited by the subprocesses of a test)."""
    if request.param == "sqlite":
        monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
        monkeypatch.delenv("FACEGATE_DATA_DIR", raising=False)
        yield f"sqlite:///{tmp_path / 'gallery.db'}"
        return
    monkeypatch.setenv("FACEGATE_MASTER_KEY", encode_key(generate_key()))
    u = pg_support.fresh_database()
    yield u
    pg_support.drop_database(u)


@pytest.fixture
def clock():
    """Starts at the present: the racing child processes read the system clock."""
    return ManualClock(SYSTEM.now())


@pytest.fixture
def store(url, clock):
    st = DatabaseSessionStore.open(url, clock=clock)
    yield st
    st.close()


FACE = Path(__file__).parent / "data" / "obama_1.jpg"


def _crop(shift: int = 0) -> np.ndarray:
    """A real face-centred crop (RGB), as the checker's best_image is; ``shift`` gives another one."""
    import cv2

    bgr = cv2.imread(str(FACE))
    return np.ascontiguousarray(cv2.cvtColor(bgr[150 + shift:450 + shift, 300:560], cv2.COLOR_BGR2RGB))


TEMPLATE = (np.arange(128, dtype=np.float32) / 128.0 + 0.123).astype(np.float32)


def _outcome(live=True, at=100.0, image=None):
    return SessionOutcome(live, {"event": "liveness.decision", "live": live, "reasons": [] if live else ["static_frames"],
                                 "frames": np.int64(40), "duration_s": np.float32(4.2)}, at,
                          best_image=_crop() if image is None else image, best_embedding=TEMPLATE.copy(), model="sface")


def _passed(store, clock, owner=None, at=None, image=None):
    s = create_session(owner=owner, now=clock.now().timestamp() if at is None else at)
    store.add(s)
    store.claim(s.id, owner=owner, now=s.created_at + 1.0)
    store.finish(s.id, _outcome(True, at=s.created_at + 2.0, image=image))
    return s


def _results(store) -> int:
    return store.counts()["results"]


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
    assert _results(store) == 1  # the passed session's result, encrypted
    out = store.consume(s.id, owner="k1", now=30.0)
    assert np.array_equal(out.best_image, _crop())  # lossless: verify/enrol see the same pixels as in memory
    assert out.best_embedding is None  # the template is never stored: verify/enrol compute theirs from the crop
    with pytest.raises(SessionUsedError):
        store.consume(s.id, owner="k1", now=31.0)
    assert _results(store) == 0  # handed out once, deleted in the same transaction


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
    assert _results(store) == 0  # a failed check keeps no frame
    with pytest.raises(SessionNotLiveError):
        store.consume(f.id, now=3.0)
    p = create_session(now=0.0)
    store.add(p)
    store.claim(p.id, now=1.0)
    store.finish(p.id, _outcome(True, at=2.0))
    assert _results(store) == 1
    with pytest.raises(SessionExpiredError):
        store.consume(p.id, now=2.0 + p.result_ttl_s)
    assert _results(store) == 0  # an attempt after expiry deletes the expired result at once
    with pytest.raises(SessionExpiredError):
        store.consume(p.id, now=3.0 + p.result_ttl_s)


def test_purge_deletes_expired_sessions_and_digests(store):
    old = create_session(now=0.0, ttl_s=10)
    store.add(old)
    store.claim(old.id, now=1.0)
    store.finish(old.id, _outcome(True, at=2.0))
    fresh = create_session(now=5000.0)
    store.add(fresh)
    assert store.remember_frames(old.id, ["b:1", "p:1"], now=2.0) == set()
    assert store.remember_frames(fresh.id, ["b:2"], now=5000.0) == set()
    # The result goes when it expires; the session row an hour later.
    assert _results(store) == 1
    assert store.purge(now=1.0 + old.result_ttl_s) == 0 and _results(store) == 1
    assert store.purge(now=2.0 + old.result_ttl_s) == 0 and _results(store) == 0
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


def test_session_outlives_its_store_instance(url, clock):
    """A restart: the process that created the session is gone; single use and the decision stay."""
    first = DatabaseSessionStore.open(url, clock=clock)
    s = create_session(owner="k1", clock=clock)
    first.add(s)
    first.close()
    second = DatabaseSessionStore.open(url, clock=clock)
    try:
        assert second.claim(s.id, owner="k1").state == "checking"
        second.finish(s.id, _outcome(True, at=clock.now().timestamp()))
        second.close()
        third = DatabaseSessionStore.open(url, clock=clock)  # `second` is gone too: the result is in the database
        try:
            with pytest.raises(SessionUsedError):
                third.claim(s.id, owner="k1")
            with pytest.raises(SessionNotFoundError):
                third.consume(s.id, owner="k2")  # another caller: no such session, nothing used up
            assert np.array_equal(third.consume(s.id, owner="k1").best_image, _crop())
            assert third.get(s.id, owner="k1").state == "consumed" and _results(third) == 0
        finally:
            third.close()
        fourth = DatabaseSessionStore.open(url, clock=clock)
        try:
            with pytest.raises(SessionUsedError):
                fourth.consume(s.id, owner="k1")
        finally:
            fourth.close()
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


def test_consume_is_atomic_across_threads(store, url, clock):
    other = DatabaseSessionStore.open(url, clock=clock)
    try:
        s = _passed(store, clock)
        got, refused = [], []
        barrier = threading.Barrier(8)

        def go(i: int) -> None:
            barrier.wait()
            try:
                got.append((store if i % 2 else other).consume(s.id).best_image)
            except SessionUsedError:
                refused.append(1)

        threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 1 and np.array_equal(got[0], _crop()) and len(refused) == 7
        assert _results(store) == 0
    finally:
        other.close()


# The racing child processes' start line: each connects, says "ready" on stdout and blocks
# reading the go pipe, which the parent closes (one end-of-file for all) once every child is ready.
START_LINE = r"""
import os, sys, time
from facegate.liveness.db_store import DatabaseSessionStore
from facegate.liveness import SessionUsedError
url, go = sys.argv[1], int(sys.argv[2])
ids = open(sys.argv[3]).read().split()
st = DatabaseSessionStore.open(url)
st.get(ids[0])  # connect before the start line
print("ready", flush=True)
os.read(go, 1)
"""

# Claims every session id listed in a file; prints the ids it won.
CLAIMER = START_LINE + r"""
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


def _race(script: str, url: str, tmp_path: Path, ids: list[str]) -> tuple[list[str], list[str]]:
    """Runs ``script`` in two processes on one database, over ``ids`` in opposite orders (they
    meet in the middle), let go together once both are connected; returns each one's "ready"
    line and what each printed after it."""
    go_read, go_write = os.pipe()
    procs = []
    try:
        for n, order in enumerate((ids, ids[::-1])):
            listing = tmp_path / f"ids{n}.txt"
            listing.write_text("\n".join(order))
            procs.append(subprocess.Popen([sys.executable, "-c", script, url, str(go_read), str(listing)],
                                          pass_fds=(go_read,), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        ready = [p.stdout.readline().strip() for p in procs if p.stdout is not None]  # the barrier
    finally:
        os.close(go_read)
        os.close(go_write)  # go
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        outputs.append(out)
    return ready, outputs


def test_claim_is_atomic_across_processes(url, tmp_path):
    st = DatabaseSessionStore.open(url)
    try:
        sessions = [create_session() for _ in range(40)]
        for s in sessions:
            st.add(s)
        ids = [s.id for s in sessions]
        ready, outputs = _race(CLAIMER, url, tmp_path, ids)
        won = [out.split() for out in outputs]
        assert ready == ["ready", "ready"]  # they did run concurrently from the start line
        assert sorted(won[0] + won[1]) == sorted(ids)  # every session claimed by exactly one process
        assert not set(won[0]) & set(won[1])
        assert won[0] and won[1], [len(w) for w in won]  # both took part
        assert all(st.get(i).state == "checking" for i in ids)
    finally:
        st.close()


CONSUMER = START_LINE + r"""
import hashlib
won = []
for sid in ids:
    try:
        img = st.consume(sid).best_image
        won.append(sid + ":" + hashlib.sha256(img.tobytes()).hexdigest())
    except SessionUsedError:
        pass
    time.sleep(0.005)
st.close()
print(" ".join(won), flush=True)
"""


def test_consume_is_atomic_across_processes(url, tmp_path, clock):
    """Two processes that did not run the checks use the same passed sessions at once: each
    session's result goes to exactly one of them, intact, and no ciphertext is left."""
    st = DatabaseSessionStore.open(url, clock=clock)
    try:
        sessions = [_passed(st, clock, image=_crop(i)) for i in range(16)]
        want = {s.id: hashlib.sha256(_crop(i).tobytes()).hexdigest() for i, s in enumerate(sessions)}
        ids = list(want)
        ready, outputs = _race(CONSUMER, url, tmp_path, ids)
        won = [dict(w.split(":") for w in out.split()) for out in outputs]
        assert ready == ["ready", "ready"]
        assert sorted([*won[0], *won[1]]) == sorted(ids) and not set(won[0]) & set(won[1])
        assert won[0] and won[1], [len(w) for w in won]
        assert {**won[0], **won[1]} == want  # each got the crop sealed for that session
        assert st.counts()["consumed"] == 16 and _results(st) == 0
    finally:
        st.close()


def _raw_bytes(st) -> bytes:
    """Every byte the database keeps on disk for this database: SQLite's file and WAL; for
    PostgreSQL (after a CHECKPOINT) the database's directory and the server's WAL."""
    if st.dialect == "sqlite":
        db = Path(st.store.engine.url.database)
        return b"".join(f.read_bytes() for f in (db, db.with_name(db.name + "-wal")) if f.exists())
    with st.store.engine.connect() as conn:
        conn.execute(text("CHECKPOINT"))
        oid = conn.execute(text("SELECT oid FROM pg_database WHERE datname = current_database()")).scalar()
        conn.rollback()
    pgdata = pg_support.server().pgdata
    files = [f for f in (pgdata / "base" / str(oid)).iterdir() if f.is_file()]
    files += [f for f in (pgdata / "pg_wal").iterdir() if f.is_file()]
    return b"".join(f.read_bytes() for f in files)


def _windows(data: bytes, n: int = 6, size: int = 24) -> list[bytes]:
    step = max(1, (len(data) - size) // n)
    return [data[i:i + size] for i in range(0, len(data) - size, step)][:n]


def test_only_ciphertext_in_the_database(store, clock):
    """No probe retention in the clear: the sessions and digests tables have no binary column;
    the result table holds one ciphertext per passed session, and the database's raw bytes
    contain neither the crop (PNG or pixels) nor the template."""
    import cv2

    for table in (LivenessSessionRow.__table__, LivenessFrameDigestRow.__table__):
        assert not any(isinstance(c.type, LargeBinary) for c in table.columns), table.name
    assert [c.name for c in R.columns if isinstance(c.type, LargeBinary)] == ["ciphertext"]
    s = create_session(challenges=[Challenge.TURN_LEFT, Challenge.LOOK_UP], clock=clock)
    store.add(s)
    store.claim(s.id)
    store.finish(s.id, _outcome(True, at=clock.now().timestamp()))
    crop = _crop()
    png = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))[1].tobytes()  # what is sealed
    with store.store.engine.connect() as conn:
        row = conn.execute(select(LivenessSessionRow.__table__).where(LivenessSessionRow.__table__.c.id == s.id)).one()
        res = conn.execute(select(R).where(R.c.session_id == s.id)).one()
        cols = {c["name"] for c in inspect(conn).get_columns("liveness_sessions")}
    assert set(row.decision) == {"event", "live", "reasons", "frames", "duration_s"}
    assert "image" not in " ".join(cols) and "embedding" not in " ".join(cols)
    assert res.key_id == store.cipher.crypto.master_key_id and len(res.ciphertext) == 12 + len(png) + 16
    assert res.expires_at.timestamp() == pytest.approx(row.completed_at.timestamp() + s.result_ttl_s)
    raw = _raw_bytes(store)
    assert bytes(res.ciphertext[20:60]) in raw  # the scan does see the stored result
    needles = [b"\x89PNG\r\n\x1a\n", *_windows(png), *_windows(crop.tobytes()), *_windows(TEMPLATE.tobytes())]
    assert not [n for n in needles if n in raw]
    assert np.array_equal(store.consume(s.id).best_image, crop)


def test_tampered_or_moved_ciphertext_is_refused(store, url, clock):
    """AES-GCM with the session id as associated data: a flipped bit, or another session's
    ciphertext copied into this session's row, fails authentication. Fails closed: the session
    is used up and its row deleted, and the untouched sessions still work."""
    a, b, c = (_passed(store, clock, image=_crop(i)) for i in (0, 5, 9))
    with store.store.engine.begin() as conn:
        blob = bytearray(conn.execute(select(R.c.ciphertext).where(R.c.session_id == a.id)).scalar())
        blob[40] ^= 0x01
        conn.execute(update(R).where(R.c.session_id == a.id).values(ciphertext=bytes(blob)))
        moved = conn.execute(select(R.c.ciphertext).where(R.c.session_id == c.id)).scalar()
        conn.execute(update(R).where(R.c.session_id == b.id).values(ciphertext=moved))  # c's result under b's id
    other = DatabaseSessionStore.open(url, clock=clock)  # another instance (process) using them
    try:
        for sid in (a.id, b.id):
            with pytest.raises(SessionResultUnavailableError) as err:
                other.consume(sid)
            assert err.value.code == "liveness_result_unavailable" and err.value.details["reason"] == "integrity"
            assert "new liveness check" in err.value.message
            assert other.get(sid).state == "consumed"
            with pytest.raises(SessionUsedError):
                other.consume(sid)
        assert np.array_equal(other.consume(c.id).best_image, _crop(9))  # the original is intact
        assert _results(other) == 0
    finally:
        other.close()


def test_a_result_missing_its_row_fails_closed(store, clock):
    s = _passed(store, clock)
    with store.store.engine.begin() as conn:
        conn.execute(delete(R).where(R.c.session_id == s.id))
    with pytest.raises(SessionResultUnavailableError) as err:
        store.consume(s.id)
    assert err.value.details["reason"] == "not_stored"
    with pytest.raises(SessionUsedError):
        store.consume(s.id)


def test_master_key_rotation_fails_closed(url, tmp_path, monkeypatch, clock):
    """A result sealed before a master-key rotation cannot be opened after it (its derived key
    went with the old master key): the use fails closed with "run a new check", in the process
    that rotated and in a process opened with the new key. Checks made after the rotation work."""
    from facegate.gallery import Gallery

    if url.startswith("sqlite"):
        g = Gallery.open(tmp_path / "g")  # the key in g/master.key: the rotation replaces the file
        url = f"sqlite:///{tmp_path / 'g' / 'gallery.db'}"
        rotate = {}
    else:
        monkeypatch.setenv("FACEGATE_MASTER_KEY", encode_key(old := generate_key()))
        g = Gallery.open(tmp_path / "g", store=url)
        rotate = {"new_key": (new := generate_key())}
    try:
        st = DatabaseSessionStore(g.store, g.crypto, clock=clock)
        before = [_passed(st, clock) for _ in range(2)]
        old_id = g.crypto.master_key_id
        g.rotate_master_key(**rotate)
        assert g.crypto.master_key_id != old_id
        if rotate:
            assert old  # the operator now runs the services with the new key
            monkeypatch.setenv("FACEGATE_MASTER_KEY", encode_key(new))
        with pytest.raises(SessionResultUnavailableError) as err:
            st.consume(before[0].id)  # the process that rotated
        assert err.value.details["reason"] == "master_key_rotated" and "rotated" in err.value.message
        fresh = DatabaseSessionStore.open(url, clock=clock)  # another process, holding the new key
        try:
            assert fresh.cipher.crypto.master_key_id == g.crypto.master_key_id
            with pytest.raises(SessionResultUnavailableError) as err:
                fresh.consume(before[1].id)
            assert err.value.details["reason"] == "master_key_rotated"
            after = _passed(st, clock, image=_crop(3))
            assert np.array_equal(fresh.consume(after.id).best_image, _crop(3))
            assert _results(fresh) == 0 and fresh.counts()["consumed"] == 3
        finally:
            fresh.close()
    finally:
        g.close()


def test_purge_results_deletes_expired_results_only(store, clock):
    s, t = _passed(store, clock, at=1000.0), _passed(store, clock, at=2000.0)
    assert store.purge_results(now=1002.0 + s.result_ttl_s - 0.5) == 0
    assert store.purge_results(now=1002.0 + s.result_ttl_s) == 1 and _results(store) == 1
    assert store.get(s.id).state == "passed"  # the session row stays (it answers "expired")
    with pytest.raises(SessionExpiredError):
        store.consume(s.id, now=1002.0 + s.result_ttl_s)
    assert np.array_equal(store.consume(t.id, now=2010.0).best_image, _crop())


def test_migration_creates_the_tables(url):
    st = DatabaseSessionStore.open(url)
    try:
        from facegate.gallery.store import SCHEMA_HEAD

        assert st.store.schema_version() == SCHEMA_HEAD and SCHEMA_HEAD >= "0003"  # 0003 adds liveness_results
        with st.store.engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
            fks = inspect(conn).get_foreign_keys("liveness_results")
        assert {"liveness_sessions", "liveness_frame_digests", "liveness_results"} <= names
        assert fks and fks[0]["referred_table"] == "liveness_sessions" and fks[0]["options"].get("ondelete") == "CASCADE"
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


def _jpegs(clip, quality):
    import cv2

    return [cv2.imencode(".jpg", cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
            for f in clip]


def _app(data_dir, engine, clock=SYSTEM):
    from facegate.service import Settings, create_app

    return create_app(Settings(data_dir=data_dir, rate_limit_per_s=1000, rate_limit_burst=1000, bootstrap_admin_key=False),
                      engine=engine, clock=clock)


def _submit(client, key, session, clip, jpegs, clock, *, age_s=8.0):
    import json

    files = [("frames", (f"f{i}.jpg", j, "image/jpeg")) for i, j in enumerate(jpegs)]
    stamps = json.dumps([round((clock.now().timestamp() - age_s + f.t) * 1000.0, 1) for f in clip])
    return client.post(f"/v1/liveness/sessions/{session['id']}/frames", headers={"X-API-Key": key}, files=files,
                       data={"nonce": session["nonce"], "timestamps": stamps})


def test_serve_instances_share_sessions_through_the_database(url, tmp_path, engine, clip, moves, monkeypatch, clock):
    """Created in instance A, completed in instance B, used through another instance, once; a
    restart of A keeps every session's state; a replay of B's frames through A is refused. The
    passed result lies in the database encrypted only, and is gone once used. On SQLite (the
    embedded default) and on PostgreSQL."""
    from fastapi.testclient import TestClient

    from facegate.gallery import Gallery

    data = tmp_path / "data"
    if url.startswith("postgresql"):
        monkeypatch.setenv("FACEGATE_STORE", url)
    else:
        url = f"sqlite:///{data / 'gallery.db'}"
    g = Gallery.open(data)
    g.create_collection("staff", purposes=["access"])
    key = g.keys.create("desk", ["verify", "enroll"], ["staff"])[1]
    g.close()
    H = {"X-API-Key": key}
    jpegs = _jpegs(clip, 90)

    app_a = _app(data, engine, clock)
    with TestClient(app_a) as a:
        me = a.get("/v1/me", headers=H).json()
        store_a = app_a.state.service.liveness.store
        assert isinstance(store_a.target, DatabaseSessionStore)
        # A random session through the API and one whose challenge is the clip's own movement
        # (created server-side: the client never picks challenges).
        rand = a.post("/v1/liveness/sessions", headers=H).json()
        fixed = create_session(moves, now=clock.now().timestamp() - 10, owner=me["key_id"])
        store_a.add(fixed)
        fixed_d = {"id": fixed.id, "nonce": fixed.nonce}
    # Instance A is gone (a restart); B opens the same database.
    app_b = _app(data, engine, clock)
    with TestClient(app_b) as b:
        assert b.get(f"/v1/liveness/sessions/{rand['id']}", headers=H).json()["state"] == "pending"
        r = _submit(b, key, fixed_d, clip, jpegs, clock)
        assert r.status_code == 200 and r.json()["live"] is True, r.json()
        r = _submit(b, key, fixed_d, clip, jpegs, clock)
        assert r.status_code == 409 and r.json()["code"] == "liveness_session_used"
        # The random session: the clip does not perform its movements (not live), decided once.
        r = _submit(b, key, rand, clip, _jpegs(clip, 85), clock, age_s=3.0)
        decided = r.json()
        assert r.status_code == 200 and decided["live"] is False and decided["reasons"], decided
        # The passed result waits in the database, encrypted: no frame, no PNG in its bytes.
        store_b = app_b.state.service.liveness.store.target
        assert store_b.counts()["results"] == 1
        raw = _raw_bytes(store_b)
        assert b"\x89PNG\r\n\x1a\n" not in raw
        assert not [w for j in jpegs[::10] for w in _windows(j[600:], 3) if w in raw]

        app_a2 = _app(data, engine, clock)  # A again, running beside B
        with TestClient(app_a2) as a2:
            st = a2.get(f"/v1/liveness/sessions/{rand['id']}", headers=H).json()
            assert st["state"] == "failed" and st["reasons"] == decided["reasons"]
            # B's passed session, used through A: enrolment works, exactly once, on either instance.
            r = a2.post("/v1/collections/staff/subjects/E-1/faces", headers=H,
                        json={"liveness_session": fixed.id, "purposes": ["access"], "evidence_ref": "form-1"})
            assert r.status_code == 201 and r.json()["accepted"] == 1, r.text
            for c in (a2, b):
                r = c.post("/v1/collections/staff/subjects/E-1/faces", headers=H, json={"liveness_session": fixed.id})
                assert r.status_code == 409 and r.json()["code"] == "liveness_session_used"
            # Verbatim replay of B's frames into a new session created through A.
            again = create_session(moves, now=clock.now().timestamp() - 10, owner=me["key_id"])
            app_a2.state.service.liveness.store.add(again)
            r = _submit(a2, key, {"id": again.id, "nonce": again.nonce}, clip, jpegs, clock)
            assert r.status_code == 200 and r.json()["live"] is False and "frame_replayed" in r.json()["reasons"]
            # A new capture passes through A and is used to verify through B, once.
            probe = create_session(moves, now=clock.now().timestamp() - 10, owner=me["key_id"])
            app_a2.state.service.liveness.store.add(probe)
            r = _submit(a2, key, {"id": probe.id, "nonce": probe.nonce}, clip, _jpegs(clip, 80), clock)
            assert r.status_code == 200 and r.json()["live"] is True, r.json()
        verify = {"purpose": "access", "collection": "staff", "subject": "E-1", "liveness_session": probe.id}
        r = b.post("/v1/verify", headers=H, json=verify)
        assert r.status_code == 200 and r.json()["decision"] == "match", r.text
        r = b.post("/v1/verify", headers=H, json=verify)
        assert r.status_code == 409 and r.json()["code"] == "liveness_session_used"
        gal = app_b.state.service.gallery
        used = [e.to_dict() if hasattr(e, "to_dict") else e for e in gal.audit_list(action="liveness.used", limit=10)]
        refused = [e.to_dict() if hasattr(e, "to_dict") else e for e in gal.audit_list(action="liveness.use_refused", limit=10)]
    # The audit log has each use and refusal: session id, caller, purpose, code — no payload.
    assert sorted(e["details"]["session_id"] for e in used) == sorted([fixed.id, probe.id])
    assert [e["purpose"] for e in used if e["details"]["session_id"] == probe.id] == ["access"]
    assert len(refused) == 3 and {e["details"]["code"] for e in refused} == {"liveness_session_used"}
    assert all(set(e["details"]) <= {"session_id", "code"} for e in used + refused)
    # Everything the database kept about these sessions: state and codes; no result left.
    st = DatabaseSessionStore.open(url, data_dir=str(data))
    try:
        counts = st.counts()
        assert counts["consumed"] == 2 and counts["failed"] == 2 and "pending" not in counts
        assert counts["results"] == 0 and counts["digests"] >= 3 * len(jpegs)
    finally:
        st.close()


def test_memory_store_can_still_be_chosen(tmp_path, engine, monkeypatch):
    from fastapi.testclient import TestClient

    from facegate.liveness import InMemorySessionStore

    monkeypatch.setenv("FACEGATE_LIVENESS_STORE", "memory")
    app = _app(tmp_path / "d", engine)
    with TestClient(app):
        assert isinstance(app.state.service.liveness.store, InMemorySessionStore)
