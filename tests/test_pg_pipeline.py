"""PostgreSQL's pipelined statements against a real server: an identification's reads sent in
one round trip answer as the same reads sent apart, the writers' lock is still taken by every
write transaction before its first statement, and a deferred audit append that fails at COMMIT
leaves nothing of its operation behind."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pytest
from sqlalchemy import text

import pg_support
from facegate.gallery import ConsentSpec, Gallery, StoreError
from facegate.gallery.pg.store import WRITE_LOCK_KEY
from facegate.gallery.synth import FaceLikeGenerator
from facegate.gallery.transaction import StoreTx

MODEL = "sface-2021dec-int8bq"
DIM = 128


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)


@pytest.fixture
def gallery(tmp_path):
    url = pg_support.fresh_database()
    g = Gallery.open(tmp_path / "d", store=url)
    g.create_collection("c", purposes=["p", "q"], liveness_required=[])
    gen = FaceLikeGenerator(DIM, seed=4)
    V = gen.samples(gen.centres(np.arange(6)), 1, seed=2)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    g.import_templates("c", [(f"s{i}", V[i : i + 1], ConsentSpec(("p",) if i % 2 else ("p", "q"), expires_at=until))
                             for i in range(6)], model_id=MODEL)
    g.withdraw_consent("c", "s2", ["p"])
    yield g
    g.close()
    pg_support.drop_database(url)


def sids_of(g: Gallery) -> list[int]:
    with g.store.read() as tx:
        cid = tx.collection_by_name("c").id
        return [tx.subject(cid, f"s{i}").id for i in range(6)]


def test_pipelined_identification_reads_equal_the_reads_sent_apart(gallery):
    g = gallery
    sids = sids_of(g)
    now = dt.datetime.now(dt.UTC)
    with g.store.read() as tx:
        col = tx.collection_by_name("c")
    for purpose, limit in (("p", 6), ("q", 6), ("p", 2), ("r", 3)):
        ranked = sids[::-1]  # best first: any order the index gave
        with g.store.write() as tx:
            piped = tx.identification_reads(col.id, ranked, purpose, now, limit)
        with g.store.write() as tx:
            apart = StoreTx.identification_reads(tx, col.id, ranked, purpose, now, limit)
        assert tuple(piped.collection) == tuple(apart.collection) == tuple(col)  # datetimes and JSON as SQLAlchemy reads them
        assert piped.seen == apart.seen
        assert piped.audit_head == apart.audit_head
    expected = [s for s in sids[::-1] if s != sids[2]]  # s2 withdrew "p"
    with g.store.write() as tx:
        assert tx.identification_reads(col.id, sids[::-1], "p", now, 6).seen == expected
        assert tx.identification_reads(col.id + 999, [], "p", now, 6).collection is None


def _writers_lock_holders(g: Gallery) -> int:
    with g.store.engine.connect() as conn:  # a connection of its own, outside any write transaction
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = :k"),
            {"k": WRITE_LOCK_KEY}).scalar())


@pytest.mark.parametrize("first", ["a read", "an audit append alone"])
def test_every_write_transaction_takes_the_writers_lock_first(gallery, first):
    """The lock rides with the transaction's first statement (a read, or a deferred write sent
    with COMMIT); another writer waits for it either way."""
    g = gallery
    inside, release = threading.Event(), threading.Event()
    order: list[str] = []

    def holder() -> None:
        with g.store.write() as tx:
            tx.get_meta("master_key_id")
            inside.set()
            release.wait(10)
            order.append("holder")

    def second() -> None:
        with g.store.write() as tx:
            if first == "a read":
                tx.get_meta("master_key_id")
            else:
                g.audit.append(tx, actor="t", action="test", now=dt.datetime.now(dt.UTC))
        order.append("second")

    t1 = threading.Thread(target=holder)
    t1.start()
    assert inside.wait(10)
    assert _writers_lock_holders(g) == 1
    t2 = threading.Thread(target=second)
    t2.start()
    t2.join(0.5)
    assert t2.is_alive()  # waiting for the lock
    release.set()
    t1.join(10)
    t2.join(10)
    assert order == ["holder", "second"]
    assert _writers_lock_holders(g) == 0
    assert g.audit_verify().ok


def test_a_deferred_audit_append_failing_at_commit_leaves_nothing(gallery):
    """A forged audit row at the next sequence number makes the next append fail when it is
    sent with COMMIT: the enrolment it records is not committed, and the error is the store's."""
    g = gallery
    with g.store.read() as tx:
        seq, _mac = tx.audit_head()
    with g.store.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO audit_events (seq, ts, actor, action, subjects, details, prev_mac, mac) "
            "VALUES (:s, now(), 'x', 'x', '[]', '{}', 'x', 'x')"), {"s": seq + 1})
    gen = FaceLikeGenerator(DIM, seed=9)
    with pytest.raises(StoreError):
        g.import_templates("c", [("new", gen.samples(gen.centres(np.arange(1)), 1, seed=3), ConsentSpec(("p",)))],
                           model_id=MODEL)
    with g.store.read() as tx:
        cid = tx.collection_by_name("c").id
        assert tx.subject(cid, "new") is None
        assert tx.audit_head()[0] == seq


def test_the_feed_head_read_beside_the_search_never_gives_a_stale_answer(gallery, tmp_path, monkeypatch):
    """Another process's enrolment that returned before an identification began is found by it:
    the head read beside the search shows the commit, and the search runs again on the index
    caught up. With nothing written meanwhile the search runs once."""
    from facegate.gallery.index import CollectionIndex

    a = gallery
    b = Gallery.open(tmp_path / "d", store=a.store.url.render_as_string(hide_password=False))  # another process's view
    assert b.index.overlap_head_read
    gen = FaceLikeGenerator(DIM, seed=21)
    V = gen.samples(gen.centres(np.arange(3)), 2, seed=5)  # 3 new people, an enrolled and a probe photo each
    runs: list[int] = []
    real = CollectionIndex.search

    def counted(self, *args, **kw):
        runs.append(1)
        return real(self, *args, **kw)

    monkeypatch.setattr(CollectionIndex, "search", counted)
    b.identify_vector("c", V[1], purpose="p", model_id=MODEL)  # loads b's index
    runs.clear()
    assert not b.identify_vector("c", V[1], purpose="p", model_id=MODEL).candidates
    assert len(runs) == 1
    for i in range(3):
        a.import_templates("c", [(f"new{i}", V[2 * i : 2 * i + 1], ConsentSpec(("p",)))], model_id=MODEL)
        runs.clear()
        res = b.identify_vector("c", V[2 * i + 1], purpose="p", model_id=MODEL)
        assert [c.subject for c in res.candidates][:1] == [f"new{i}"]
        assert len(runs) == 2  # the first search ran on the index from before the enrolment
    b.close()
