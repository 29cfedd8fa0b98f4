"""Identification remembers collection rows (it opens no read transaction for them): a change
another process commits — a liveness requirement, a deletion, the name reused by a new
collection — is honoured by this process's next identification, on SQLite and PostgreSQL.
Two ``Gallery`` objects on one store stand for two processes (each its own connections,
context and index)."""

from __future__ import annotations

import numpy as np
import pytest

import pg_support
from facegate.gallery import ConsentSpec, Gallery
from facegate.gallery.errors import (
    CollectionNotFoundError,
    ConflictError,
    LivenessRequiredError,
    PurposeNotAllowedError,
)
from facegate.gallery.synth import FaceLikeGenerator

MODEL = "sface-2021dec-int8bq"
DIM = 128


@pytest.fixture(params=["sqlite", "postgresql"])
def pair(request, tmp_path, monkeypatch):
    """Two galleries on one store: (searcher, other process), the searcher's probe of subject s0."""
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)
    url = pg_support.fresh_database() if request.param == "postgresql" else None
    a = Gallery.open(tmp_path / "a", store=url)
    key = (tmp_path / "a" / "master.key").read_text().strip()
    b = Gallery.open(tmp_path / "a" if url is None else tmp_path / "b", store=url, master_key=key)
    gen = FaceLikeGenerator(DIM, seed=3)
    C = gen.centres(np.arange(20))
    V = gen.samples(C, 2, seed=1)
    b.create_collection("c", purposes=["p"], threshold=0.3)
    b.import_templates("c", [(f"s{i}", V[2 * i : 2 * i + 2], ConsentSpec(["p"])) for i in range(20)], model_id=MODEL)
    probe = gen.samples(C[:1], 1, seed=2)[0]
    yield a, b, probe
    a.close()
    b.close()
    if url is not None:
        pg_support.drop_database(url)


def _identify(g: Gallery, probe: np.ndarray, purpose: str = "p"):
    return g.identify_vector("c", probe, purpose=purpose, model_id=MODEL, actor="t")


def _identify_events(g: Gallery) -> list[str | None]:
    return [e.decision for e in reversed(g.audit_list(action="identify", limit=100))]


def test_a_liveness_requirement_set_elsewhere_holds_at_the_next_identification(pair):
    a, b, probe = pair
    assert [c.subject for c in _identify(a, probe).candidates][:1] == ["s0"]  # the row is remembered now
    b.set_collection_liveness("c", ["identify"])
    with pytest.raises(LivenessRequiredError):
        _identify(a, probe)
    b.set_collection_liveness("c", None)
    assert _identify(a, probe).candidates[0].subject == "s0"
    # One event per identification: the admission that met a changed row recorded nothing.
    assert _identify_events(a) == ["match", "refused_liveness_required", "match"]
    assert a.audit_verify().ok


def test_a_collection_deleted_and_its_name_reused_elsewhere_is_honoured(pair):
    a, b, probe = pair
    assert _identify(a, probe).candidates
    b.delete_collection("c")
    with pytest.raises(CollectionNotFoundError):
        _identify(a, probe)
    b.create_collection("c", purposes=["q"], threshold=0.3)
    with pytest.raises(PurposeNotAllowedError):
        _identify(a, probe)
    res = _identify(a, probe, "q")
    assert res.candidates == () and res.searched_subjects == 0  # the new, empty collection
    assert _identify_events(a) == ["match", "refused_collection_not_found", "refused_purpose_not_allowed", "no_match"]
    with a.store.read() as tx:
        live = {r.id for r in tx.collections()}
    assert {c.collection_id for c in a.index.loaded()} <= live  # no index kept for the deleted collection
    assert a.audit_verify().ok


def test_a_collection_deleted_while_remembered_is_not_searched_into_a_ghost_index(pair):
    a, b, probe = pair
    assert _identify(a, probe).candidates
    b.delete_collection("c")
    a.index.sync()  # this process's index has dropped the collection before the next identification
    with pytest.raises(CollectionNotFoundError):
        _identify(a, probe)
    with a.store.read() as tx:
        live = {r.id for r in tx.collections()}
    assert {c.collection_id for c in a.index.loaded()} <= live


def test_the_first_identification_after_a_database_restart_just_works(tmp_path, monkeypatch):
    """Pooled connections are not pinged before each transaction (a round trip per call); one the
    server closed while it sat in the pool is replaced at checkout instead of failing the call."""
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)
    url = pg_support.fresh_database()
    g = Gallery.open(tmp_path / "g", store=url)
    try:
        gen = FaceLikeGenerator(DIM, seed=4)
        V = gen.samples(gen.centres(np.arange(5)), 1, seed=1)
        g.create_collection("c", purposes=["p"], threshold=0.3)
        g.import_templates("c", [(f"s{i}", V[i : i + 1], ConsentSpec(["p"])) for i in range(5)], model_id=MODEL)
        assert _identify(g, V[0]).candidates[0].subject == "s0"  # its connections now wait in the pool
        srv = pg_support.server()
        srv.stop()
        srv.start()
        assert _identify(g, V[1]).candidates[0].subject == "s1"
        assert g.audit_verify().ok
    finally:
        g.close()
        pg_support.drop_database(url)


@pytest.mark.parametrize("changes", [1, 3])
def test_a_collection_changed_between_search_and_record_is_admitted_again(pair, monkeypatch, changes):
    """Each change another process commits between this search and its record sends the
    identification back to admission on the current row; after three it gives up (409,
    audited), rather than record a decision taken under settings that no longer hold."""
    a, b, probe = pair
    assert _identify(a, probe).candidates
    idx = a.index.loaded()[0]
    search = type(idx).search
    done = []

    def search_then_change(self, *args, **kw):
        out = search(self, *args, **kw)
        if len(done) < changes:  # a setting identification does not depend on, changed all the same
            b.set_collection_liveness("c", [] if len(done) % 2 else ["enroll"])
            done.append(1)
        return out

    monkeypatch.setattr(type(idx), "search", search_then_change)
    if changes < 3:
        assert _identify(a, probe).candidates[0].subject == "s0"
        assert _identify_events(a) == ["match", "match"]
    else:
        with pytest.raises(ConflictError) as err:
            _identify(a, probe)
        assert err.value.http_status == 409
        assert _identify_events(a) == ["match", "refused_conflict"]
    assert a.audit_verify().ok
