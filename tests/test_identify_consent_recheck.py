"""What an identification returns of its hits is decided in its write transaction, in the
database: the first top_k (best first) whose consent covers the purpose, and only those are
marked as seen (retention counts from the last use). On SQLite and PostgreSQL (where it is one
statement); two ``Gallery`` objects on one store stand for two processes."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

import pg_support
from facegate.clock import ManualClock
from facegate.gallery import ConsentSpec, Gallery
from facegate.gallery.synth import FaceLikeGenerator

MODEL = "sface-2021dec-int8bq"
DIM = 128
T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(request, tmp_path, monkeypatch):
    """(searcher, other process, clock, probe): subjects t0..t3 are four people who look alike
    (samples of one identity, all above the threshold for the probe), x0..x9 others."""
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)
    url = pg_support.fresh_database() if request.param == "postgresql" else None
    clock = ManualClock(T0)
    a = Gallery.open(tmp_path / "a", store=url, clock=clock)
    key = (tmp_path / "a" / "master.key").read_text().strip()
    b = Gallery.open(tmp_path / "a" if url is None else tmp_path / "b", store=url, master_key=key, clock=clock)
    gen = FaceLikeGenerator(DIM, seed=8)
    alike = gen.samples(gen.centres(np.arange(1)), 5, seed=1)
    others = gen.samples(gen.centres(np.arange(1, 11)), 1, seed=1)
    b.create_collection("c", purposes=["p"], threshold=0.3)
    items = [(f"t{i}", alike[i : i + 1], ConsentSpec(["p"])) for i in range(4)]
    items += [(f"x{i}", others[i : i + 1], ConsentSpec(["p"])) for i in range(10)]
    b.import_templates("c", items, model_id=MODEL)
    yield a, b, clock, alike[4]
    a.close()
    b.close()
    if url is not None:
        pg_support.drop_database(url)


def _last_seen(g: Gallery, subject: str) -> dt.datetime:
    return g.get_subject("c", subject).last_seen_at


def test_the_first_top_k_are_returned_best_first_and_only_they_are_marked_seen(setup):
    a, _b, clock, probe = setup
    clock.advance(3600)
    res = a.identify_vector("c", probe, purpose="p", top_k=2, model_id=MODEL)
    got = [c.subject for c in res.candidates]
    assert len(got) == 2 and set(got) < {"t0", "t1", "t2", "t3"}
    assert [c.rank for c in res.candidates] == [1, 2] and res.candidates[0].score >= res.candidates[1].score
    for s in ("t0", "t1", "t2", "t3"):
        assert _last_seen(a, s) == (T0 + dt.timedelta(hours=1) if s in got else T0), s
    assert a.audit_list(action="identify", limit=1)[0].subjects == tuple(got)


def test_a_withdrawal_committed_between_the_search_and_its_record_is_honoured(setup, monkeypatch):
    a, b, clock, probe = setup
    clock.advance(60)
    first = a.identify_vector("c", probe, purpose="p", top_k=1, model_id=MODEL).candidates[0].subject
    idx = a.index.loaded()[0]
    search = type(idx).search

    def search_then_withdraw(self, *args, **kw):
        out = search(self, *args, **kw)
        b.withdraw_consent("c", first, ["p"])  # another process, after this search saw the subject
        return out

    monkeypatch.setattr(type(idx), "search", search_then_withdraw)
    clock.advance(60)
    res = a.identify_vector("c", probe, purpose="p", top_k=1, model_id=MODEL)
    monkeypatch.setattr(type(idx), "search", search)
    assert [c.subject for c in res.candidates] != [first] and len(res.candidates) == 1
    assert res.candidates[0].subject in {"t0", "t1", "t2", "t3"} and res.candidates[0].rank == 1
    assert _last_seen(a, first) == T0 + dt.timedelta(seconds=60)  # the withdrawn one was not marked seen
    assert _last_seen(a, res.candidates[0].subject) == T0 + dt.timedelta(seconds=120)
    assert a.audit_list(action="identify", limit=1)[0].subjects == (res.candidates[0].subject,)
    assert a.audit_verify().ok
