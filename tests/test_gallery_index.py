"""The in-memory index: exact vs approximate search, exact consent filtering, deletes visible to
the next search, background rebuilds, and sync with writes by another Gallery on the same file."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pytest

from facegate.gallery import ConsentSpec, Gallery, IndexConfig
from facegate.gallery.index import CollectionIndex, SubjectState
from facegate.gallery.synth import FaceLikeGenerator

MODEL = "sface-2021dec-int8bq"
DIM = 128
UTC = dt.UTC


def build(n_subjects: int, per: int, config: IndexConfig, *, allowed_every: int = 1, seed: int = 0):
    """A CollectionIndex over synthetic templates; subject i allowed for 'p' iff i % allowed_every == 0."""
    gen = FaceLikeGenerator(DIM, seed=seed)
    centres = gen.centres(np.arange(n_subjects))
    X = gen.samples(centres, per)
    idx = CollectionIndex(1, DIM, MODEL, config)
    subjects = {i: (f"s{i}", None) for i in range(n_subjects)}
    consents = {i: [("p", 0.0, np.inf, None)] for i in range(0, n_subjects, allowed_every)}
    for i in range(n_subjects):
        consents.setdefault(i, []).append(("any", 0.0, np.inf, None))
    tids = np.arange(1, n_subjects * per + 1, dtype=np.int64)
    sids = np.repeat(np.arange(n_subjects), per)
    idx.bulk_load(subjects, tids, sids, X.copy(), consents)
    if idx.needs_ann():
        idx.build_ann(locked=True)
    return idx, gen, centres, X


def exact_top(X, sids, allowed, q):
    s = X @ q
    s[~allowed[sids]] = -np.inf
    return int(sids[int(np.argmax(s))]), float(s.max())


def test_exact_search_matches_brute_force_with_filter():
    idx, gen, centres, X = build(500, 2, IndexConfig(), allowed_every=3)
    sids = np.repeat(np.arange(500), 2)
    allowed = np.arange(500) % 3 == 0
    Q = gen.samples(centres, 1, seed=9)
    for i in range(0, 500, 7):
        hits, n_allowed = idx.search(Q[i], 5, "p", 1e9)
        assert n_allowed == allowed.sum()
        assert all(h.subject_id % 3 == 0 for h in hits)
        assert len({h.subject_id for h in hits}) == 5
        top, score = exact_top(X, sids, allowed, Q[i])
        assert hits[0].subject_id == top and hits[0].score == pytest.approx(score, abs=1e-5)
    assert idx.search(Q[0], 5, "unknown-purpose", 1e9) == ([], 0)


def test_approximate_index_recall_and_filtering():
    cfg = IndexConfig(exact_max_rows=2_000, small_subset_rows=500)
    n = 10_000
    idx, gen, centres, X = build(n, 2, cfg, allowed_every=4)
    assert idx.ann is not None and idx.ann.recall >= cfg.target_recall
    stats = idx.stats()
    assert stats["mode"] == "ivf-pq4fs" and stats["templates"] == 2 * n
    sids = np.repeat(np.arange(n), 2)
    Q = gen.samples(centres[:400], 1, seed=11)  # fresh photos of enrolled people
    agree = rank1 = 0
    for i in range(400):
        hits, _ = idx.search(Q[i], 1, "any", 1e9)
        agree += hits[0].subject_id == exact_top(X, sids, np.ones(n, bool), Q[i])[0]
        hits, _ = idx.search(Q[i], 3, "p", 1e9)  # 25 % allowed: faiss searches with an ID bitmap
        assert all(h.subject_id % 4 == 0 for h in hits) and len(hits) == 3
        if i % 4 == 0:  # this person is allowed: the filter must not cost the true match
            rank1 += hits[0].subject_id == i
    assert agree / 400 >= 0.99 and rank1 == 100


def test_tiny_allowed_set_never_loses_a_true_match():
    """1 % of subjects consented: the filtered search runs exact on that subset."""
    cfg = IndexConfig(exact_max_rows=2_000, small_subset_rows=1_000)
    idx, gen, centres, X = build(20_000, 1, cfg, allowed_every=100)
    Q = gen.samples(centres[::100], 1, seed=3)
    for j, q in enumerate(Q):
        hits, n_allowed = idx.search(q, 1, "p", 1e9)
        assert n_allowed == 200 and hits[0].subject_id == 100 * j


def test_delete_is_invisible_to_the_very_next_search_in_both_modes():
    for cfg in (IndexConfig(), IndexConfig(exact_max_rows=1_000, small_subset_rows=100)):
        idx, gen, centres, X = build(5_000, 2, cfg)
        q = X[2 * 1234]
        assert idx.search(q, 1, "any", 1e9)[0][0].subject_id == 1234
        with idx.lock.write():
            idx.apply(SubjectState(1234, None))
        hits, n_allowed = idx.search(q, 10, "any", 1e9)
        assert 1234 not in [h.subject_id for h in hits] and n_allowed == 4_999


def test_consent_expiry_inside_the_index():
    idx, gen, centres, X = build(50, 1, IndexConfig())
    with idx.lock.write():
        idx.apply(SubjectState(7, ("s7", None), {8}, {}, [("p", 0.0, 1000.0, None)]))
    assert idx.search(X[7], 1, "p", 999.0)[0][0].subject_id == 7
    assert 7 not in [h.subject_id for h in idx.search(X[7], 50, "p", 1000.5)[0]]
    with idx.lock.write():  # withdrawn
        idx.apply(SubjectState(7, ("s7", None), {8}, {}, [("p", 0.0, np.inf, 5.0)]))
    assert 7 not in [h.subject_id for h in idx.search(X[7], 50, "p", 10.0)[0]]


def test_background_rebuild_while_searching_and_writing():
    cfg = IndexConfig(exact_max_rows=1_500, small_subset_rows=100, rebuild_growth=1.5)
    idx, gen, centres, X = build(1_000, 1, cfg)  # exact for now
    assert idx.ann is None
    more = gen.centres(np.arange(1_000, 4_000))
    V = gen.samples(more, 1)
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher():
        try:
            while not stop.is_set():
                h, _ = idx.search(X[5], 1, "any", 1e9)
                assert h[0].subject_id == 5
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(3_000):
        with idx.lock.write():
            tid = 5_000 + i
            idx.apply(SubjectState(1_000 + i, (f"s{1000 + i}", None), {tid}, {tid: V[i]}, [("any", 0.0, np.inf, None)]))
        if i % 500 == 0:
            idx.maybe_rebuild_ann()
    idx.maybe_rebuild_ann()
    idx.wait_for_build(60)
    with idx.lock.write():
        idx.apply(SubjectState(3_999, None))
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert idx.ann is not None and idx.ann.ntotal == idx.n == 3_999
    assert idx.search(V[2_000], 1, "any", 1e9)[0][0].subject_id == 3_000
    assert 3_999 not in [h.subject_id for h in idx.search(V[2_999], 5, "any", 1e9)[0]]


def test_other_gallery_on_the_same_file_sees_enrolments_and_erasures(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    a = Gallery.open(tmp_path / "d")
    a.create_collection("c", purposes=["p"])
    gen = FaceLikeGenerator(DIM, seed=4)
    V = gen.samples(gen.centres(np.arange(20)), 1)
    a.import_templates("c", [(f"s{i}", V[i : i + 1], ConsentSpec(("p",))) for i in range(10)], model_id=MODEL)
    b = Gallery.open(tmp_path / "d")
    assert b.identify_vector("c", V[3], purpose="p", model_id=MODEL).candidates[0].subject == "s3"  # b's index built
    a.import_templates("c", [("s15", V[15:16], ConsentSpec(("p",)))], model_id=MODEL)
    assert b.identify_vector("c", V[15], purpose="p", model_id=MODEL).candidates[0].subject == "s15"
    a.delete_subject("c", "s3")
    assert b.identify_vector("c", V[3], purpose="p", model_id=MODEL).candidates == ()
    a.withdraw_consent("c", "s4", ["p"])
    assert b.identify_vector("c", V[4], purpose="p", model_id=MODEL).candidates == ()
    assert b.index_stats("c")["templates"] == 10
    a.close()
    b.close()
