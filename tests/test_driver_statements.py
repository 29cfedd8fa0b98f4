"""Statements sent on SQLite's driver connection (``gallery/driver.py``): an identification's
write transaction and the change-feed head read skip SQLAlchemy's execution, so they must
store and read exactly what SQLAlchemy stores and reads, fail as it fails, and see every
commit."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.exc import IntegrityError

from facegate.gallery import ConsentSpec, Gallery
from facegate.gallery.driver import DriverStatement
from facegate.gallery.synth import FaceLikeGenerator
from facegate.gallery.transaction import AH, K, S

MODEL = "sface-2021dec-int8bq"
DIM = 128


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)


@pytest.fixture
def gallery(tmp_path):
    g = Gallery.open(tmp_path / "d")
    g.create_collection("c", purposes=["p", "q"], liveness_required=[], description="ü – JSON and text")
    gen = FaceLikeGenerator(DIM, seed=4)
    V = gen.samples(gen.centres(np.arange(6)), 2, seed=2)  # an enrolled and a probe photo each
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    g.import_templates("c", [(f"s{i}", V[2 * i : 2 * i + 1], ConsentSpec(("p",) if i % 2 else ("p", "q"), expires_at=until))
                             for i in range(6)], model_id=MODEL)
    g.withdraw_consent("c", "s2", ["p"])
    g.probes = V[1::2]  # type: ignore[attr-defined]
    yield g
    g.close()


def sids_of(g: Gallery) -> list[int]:
    with g.store.read() as tx:
        cid = tx.collection_by_name("c").id
        return [tx.subject(cid, f"s{i}").id for i in range(6)]


def last_seen(g: Gallery, sids: list[int]) -> dict[int, dt.datetime | None]:
    with g.store.read() as tx:
        return {r.id: r.last_seen_at for r in tx.conn.execute(select(S.c.id, S.c.last_seen_at).where(S.c.id.in_(sids)))}


def test_identification_reads_on_the_driver_equal_what_sqlalchemy_reads(gallery):
    g = gallery
    sids = sids_of(g)
    now = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=678901)  # consents run 30 days
    cases = (("p", 6, [s for s in sids[::-1] if s != sids[2]]),  # s2 withdrew "p"
             ("q", 6, [sids[4], sids[2], sids[0]]), ("p", 2, [sids[5], sids[4]]), ("r", 3, []),
             ("p", 4, [sids[5], sids[4], sids[3], sids[1]]),  # s2 among the first 4: s1 moves up
             ("q", 1, [sids[4]]), ("q", 2, [sids[4], sids[2]]))  # s5 and s3 never granted "q"
    for n, (purpose, limit, expected) in enumerate(cases):
        now += dt.timedelta(seconds=1)
        before = last_seen(g, sids)
        with g.store.write() as tx:
            cid = tx.collection_by_name("c").id
            reads = tx.identification_reads(cid, sids[::-1], purpose, now, limit)
            assert tuple(reads.collection) == tuple(tx.collection_by_id(cid))  # datetimes and JSON as SQLAlchemy reads them
            assert reads.seen == expected, n
            assert reads.audit_head == tuple(tx.conn.execute(select(AH.c.seq, AH.c.mac)).one())
        after = last_seen(g, sids)
        assert all(after[s] == now for s in expected)  # stored as SQLAlchemy stores it, read back exactly
        assert all(after[s] == before[s] for s in sids if s not in expected), n  # only the returned hits
    with g.store.write() as tx:
        assert tx.identification_reads(cid + 999, [], "p", now, 6).collection is None


def test_an_identification_audited_on_the_driver_verifies_and_reads_back(gallery):
    g = gallery
    res = g.identify_vector("c", g.probes[1], purpose="p", model_id=MODEL)
    assert [c.subject for c in res.candidates][:1] == ["s1"]
    assert g.audit_verify().ok  # the chain's MACs recomputed from the rows as SQLAlchemy reads them
    with g.store.read() as tx:
        ev = list(tx.audit_rows())[-1]
    assert (ev.action, ev.subjects, ev.purpose, ev.decision) == ("identify", ["s1"], "p", "match")
    assert ev.details["threshold"] == round(res.threshold, 6)
    assert ev.ts.tzinfo is not None
    assert abs(ev.ts - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


def test_a_driver_error_fails_as_sqlalchemys_and_leaves_nothing(gallery):
    """A forged audit row at the next sequence number: the identification's append fails with
    SQLAlchemy's error, and its last-seen mark is rolled back with it."""
    g = gallery
    sid = sids_of(g)[1]
    before = last_seen(g, [sid])
    with g.store.read() as tx:
        seq, _mac = tx.audit_head()
    with g.store.engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_events (seq, ts, actor, action, subjects, details, prev_mac, mac) "
                          "VALUES (:s, '2030-01-01 00:00:00.000000', 'x', 'x', '[]', '{}', 'x', 'x')"), {"s": seq + 1})
    with pytest.raises(IntegrityError):
        g.identify_vector("c", g.probes[1], purpose="p", model_id=MODEL)
    assert last_seen(g, [sid]) == before
    with g.store.read() as tx:
        assert tx.audit_head()[0] == seq


def test_the_feed_head_read_sees_every_commit(gallery, tmp_path):
    """The head is read on a connection kept for it, outside any transaction: a commit of this
    process or of another one that returned is seen by the next read."""
    a = gallery
    b = Gallery.open(tmp_path / "d")  # another process's view of the same store
    gen = FaceLikeGenerator(DIM, seed=8)
    V = gen.samples(gen.centres(np.arange(2)), 1, seed=3)
    head = b.store.max_seq()
    a.import_templates("c", [("new0", V[:1], ConsentSpec(("p",)))], model_id=MODEL)
    assert b.store.max_seq() == a.store.max_seq() > head
    head = b.store.max_seq()
    b.import_templates("c", [("new1", V[1:], ConsentSpec(("p",)))], model_id=MODEL)
    assert a.store.max_seq() == b.store.max_seq() > head
    b.close()


@pytest.mark.parametrize("dialect", [sqlite.dialect(), psycopg.dialect()], ids=["sqlite", "postgresql"])
def test_an_expanding_statement_binds_as_sqlalchemy_renders_it_for_every_list_length(dialect):
    """A rendering kept per list length is reused with new values: each call must send what
    SQLAlchemy renders for that call, processed by its bind processors, a value the statement
    holds itself included."""
    now = dt.datetime(2026, 3, 1, 12, 0, 0, 123456, dt.UTC)
    sids = bindparam("b_sids", expanding=True)
    held = select(K.c.subject_id).where(K.c.subject_id.in_(sids), K.c.purpose == "fixed", K.c.granted_at <= bindparam("b_now"))
    touch = update(S).where(S.c.id.in_(sids)).values(last_seen_at=bindparam("b_now"))
    for stmt in (DriverStatement(held), DriverStatement(touch)):
        compiled = stmt.stmt.compile(dialect=dialect)
        procs = {k: b.type.dialect_impl(dialect).bind_processor(dialect) for k, b in compiled.binds.items()}
        for call, n in enumerate([0, 1, 3, 1, 7, 3, 0, 12]):
            params = {"b_sids": list(range(100 * call, 100 * call + n)), "b_now": now + dt.timedelta(seconds=call)}
            state = compiled.construct_expanded_state(dict(params), escape_names=False)
            key = {name: key for key, names in (state.parameter_expansion or {}).items() for name in names}
            expected = {name: v if (p := procs.get(key.get(name, name))) is None else p(v)
                        for name, v in state.parameters.items()}
            sql, values = stmt.bind(dialect, params)
            assert sql == state.statement
            if state.positiontup is not None:
                assert values == tuple(expected[name] for name in state.positiontup)
            else:
                assert values == expected
            assert "fixed" in expected.values() or stmt.stmt is touch
