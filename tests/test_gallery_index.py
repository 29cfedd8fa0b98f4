"""The in-memory index: exact vs approximate search, exact consent filtering, deletes visible to
the next search, background rebuilds, and sync with writes by another Gallery on the same file."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pytest

from facegate.gallery import ConsentSpec, Gallery, IndexConfig
from facegate.gallery.index import CollectionIndex, IvfIndex, SubjectState
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


def test_the_self_test_reports_recall_on_probes_it_did_not_tune_on(monkeypatch):
    """The chosen (nprobe, candidates) passed on the first half of the probes and is reported
    with its recall on the second, disjoint half."""
    calls = []
    real = CollectionIndex._self_test_hits

    def spy(self, ann, Q, exclude, best_s, nprobe, ks, ctx):
        hits = real(self, ann, Q, exclude, best_s, nprobe, ks, ctx)
        calls.append((Q.copy(), nprobe, list(ks), hits / len(Q)))
        return hits

    monkeypatch.setattr(CollectionIndex, "_self_test_hits", spy)
    cfg = IndexConfig(exact_max_rows=2_000, self_test_queries=300)
    idx, *_ = build(3_000, 2, cfg)
    ann = idx.ann
    assert ann is not None and ann.recall >= cfg.target_recall
    first = calls[0][0]
    chosen = [(Q, r[ks.index(ann.rescore)]) for Q, nprobe, ks, r in calls
              if nprobe == ann.nprobe and ann.rescore in ks and not np.array_equal(Q, first)]
    assert chosen and chosen[-1][1] == ann.recall  # the reported recall is the second half's
    second = chosen[-1][0]
    assert len(first) == len(second) == 300
    assert not (first[:, None, :] == second[None, :, :]).all(-1).any()  # no probe in both halves
    tuned = [r[ks.index(ann.rescore)] for Q, nprobe, ks, r in calls if nprobe == ann.nprobe and np.array_equal(Q, first)]
    assert tuned and tuned[0] >= cfg.target_recall


def test_a_lone_search_on_several_threads_answers_as_on_one(monkeypatch):
    """Splitting one query's lists over threads (faiss's kernel 14) finds the same best match,
    filtered or not, from the same 4-bit estimates; a search with another in flight keeps to one
    thread."""
    import dataclasses

    from facegate.gallery import index as index_mod

    cfg = IndexConfig(exact_max_rows=2_000, small_subset_rows=500, search_threads=1)
    idx, gen, centres, _X = build(5_000, 2, cfg, allowed_every=4)
    assert idx.ann is not None
    Q = gen.samples(centres[:120], 1, seed=5)
    used: list[int] = []
    real = idx.ann.search

    def spy(*a, **kw):
        used.append(a[5] if len(a) > 5 else kw.get("threads", 1))
        return real(*a, **kw)

    monkeypatch.setattr(idx.ann, "search", spy)
    one = [idx.search(q, 5, purpose, 1e9) for q in Q for purpose in ("any", "p")]
    assert set(used) == {1}
    idx.config = dataclasses.replace(cfg, search_threads=2, parallel_min_codes=0)
    used.clear()
    two = [idx.search(q, 5, purpose, 1e9) for q in Q for purpose in ("any", "p")]
    assert set(used) == {2}
    assert [(hits[0].subject_id, round(hits[0].score, 5)) for hits, _n in one] == \
           [(hits[0].subject_id, round(hits[0].score, 5)) for hits, _n in two]
    # The far tail may differ: the kernels break ties among equal estimates at the candidate cut
    # differently. The estimates themselves may not.
    import faiss

    params = faiss.SearchParametersIVF()
    params.nprobe = idx.ann.nprobe
    estimates = {}
    for implem in (0, 14):
        idx.ann.index.implem = implem
        faiss.omp_set_num_threads(2 if implem else 1)
        estimates[implem] = idx.ann.index.search(Q, idx.ann.rescore, params=params)[0]
    assert np.array_equal(estimates[0], estimates[14])
    used.clear()
    with index_mod._IN_FLIGHT.threads(1):  # another search of this process is running
        idx.search(Q[0], 5, "any", 1e9)
    assert used == [1]
    idx.config = dataclasses.replace(cfg, search_threads=2, parallel_min_codes=10**9)  # too small to split
    used.clear()
    idx.search(Q[0], 5, "any", 1e9)
    assert used == [1]


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


def test_templates_are_filed_in_two_lists_and_found_through_either():
    """Each template is in its nearest centroid's list and a spill list; scanning the spill list
    alone finds it; templates added later (packed in place after a list's entries) and removed
    keep both copies in step."""
    idx, gen, _centres, X = build(3_000, 2, IndexConfig(exact_max_rows=2_000, small_subset_rows=500))
    ann = idx.ann
    assert ann is not None
    ids, lists = ann.list_numbers()
    assert np.array_equal(ids, np.arange(1, 6_001)) and ann.entries == 2 * ann.ntotal == 12_000
    _d, nearest = ann.index.quantizer.search(X, 1)
    assert (lists == nearest).any(1).mean() > 0.999 and (lists[:, 0] != lists[:, 1]).all()
    centroids = ann.index.quantizer.reconstruct_n(0, ann.nlist)
    for t in (0, 1_234, 5_999):
        spill = int(lists[t, 1] if lists[t, 0] == nearest[t, 0] else lists[t, 0])  # the other one
        found = ann.search(centroids[spill], int(ann.index.invlists.list_size(spill)), None, 0, nprobe=1)
        assert ids[t] in found and len(found) == ann.index.invlists.list_size(spill)
    V = gen.samples(gen.centres(np.arange(3_000, 3_040)), 1)
    with idx.lock.write():
        for i in range(40):
            idx.apply(SubjectState(3_000 + i, (f"s{3_000 + i}", None), {7_000 + i}, {7_000 + i: V[i]},
                                   [("any", 0.0, np.inf, None)]))
        for sid in range(10):
            idx.apply(SubjectState(sid, None))
    ids, lists = ann.list_numbers()
    assert ann.entries == 2 * ann.ntotal == 2 * (6_000 + 40 - 20)
    assert np.isin(np.arange(7_000, 7_040), ids).all() and not np.isin(np.arange(1, 21), ids).any()
    assert (lists[:, 0] != lists[:, 1]).all()
    for i in range(40):  # every list probed: the codes packed in place rank each at the top
        hits, _ = idx.search(V[i], 1, "any", 1e9, nprobe=ann.nlist)
        assert hits[0].subject_id == 3_000 + i and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_codes_filed_after_a_list_of_512_are_packed_in_place():
    """faiss's ``add_entries`` copies whole blocks wrongly into a list of 512 codes: appends to
    a list with entries are packed by the index itself."""
    gen = FaceLikeGenerator(DIM, seed=5)
    X = gen.samples(gen.centres(np.arange(600)), 1)
    ann = IvfIndex.create(DIM, 1_024)  # 32 lists
    ann.train(X)
    ids, lists = np.arange(600, dtype=np.int64), np.tile(np.array([[3, 7]]), (600, 1))
    for part in (slice(0, 512), slice(512, 600)):
        ann.file(ids[part], lists[part], ann.encode(X[part], lists[part, 0]))
    assert ann.index.invlists.list_size(3) == ann.index.invlists.list_size(7) == 600
    for i in (0, 300, 511, 512, 599):
        assert i in ann.search(X[i], 4, None, 0, nprobe=ann.nlist)


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


def brute_force_top(X, sids, allowed, q, k, exclude=None):
    """The best k allowed subjects (best template each) by exact cosine, and their scores."""
    s = X @ q
    ok = allowed[sids] & (sids != (-1 if exclude is None else exclude))
    best: dict[int, float] = {}
    for r in np.argsort(-s):
        if ok[r] and int(sids[r]) not in best:
            best[int(sids[r])] = float(s[r])
            if len(best) == k:
                break
    return list(best), list(best.values())


@pytest.mark.parametrize("approximate", [False, True])
def test_search_many_matches_brute_force_with_consent_and_exclusion(approximate):
    cfg = IndexConfig(exact_max_rows=2_000, small_subset_rows=500) if approximate else IndexConfig()
    n = 6_000 if approximate else 800
    idx, gen, centres, X = build(n, 2, cfg, allowed_every=3)
    assert (idx.ann is not None) is approximate
    sids = np.repeat(np.arange(n), 2)
    allowed = np.arange(n) % 3 == 0
    probes = np.arange(0, n, 9)[:200]
    Q = gen.samples(centres[probes], 1, seed=21)
    exclude = [int(p) if j % 2 else None for j, p in enumerate(probes)]  # every other query excludes its own subject
    results = idx.search_many(Q, 5, "p", 1e9, exclude_subjects=exclude)
    assert len(results) == len(Q)
    agree = 0
    for j, hits in enumerate(results):
        want, want_scores = brute_force_top(X, sids, allowed, Q[j], 5, exclude[j])
        got = [h.subject_id for h in hits]
        assert len(got) == 5 and len(set(got)) == 5
        assert all(s % 3 == 0 for s in got)  # the consent mask is honoured
        assert exclude[j] not in got  # the exclusion is honoured
        for h in hits:  # scores are exact cosines of the template returned
            assert h.score == pytest.approx(float(X[h.template_id - 1] @ Q[j]), abs=1e-5)
            assert sids[h.template_id - 1] == h.subject_id
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        if approximate:
            if exclude[j] is None:  # a fresh photo of an enrolled, allowed person: rank-1 must be right
                agree += got[0] == want[0] == probes[j]
        else:
            assert got == want and [h.score for h in hits] == pytest.approx(want_scores, abs=1e-5)
    if approximate:
        assert agree / exclude.count(None) >= 0.99
    # the batch answers what one search at a time answers
    for j in range(0, len(Q), 17):
        single, _ = idx.search(Q[j], 5, "p", 1e9, exclude_subject=exclude[j])
        assert [h.subject_id for h in single] == [h.subject_id for h in results[j]]


def test_search_many_edge_cases():
    idx, gen, centres, X = build(30, 1, IndexConfig(), allowed_every=10)
    assert idx.search_many(np.zeros((0, DIM), np.float32), 3, "p", 1e9) == []
    assert idx.search_many(X[:2], 3, "unknown-purpose", 1e9) == [[], []]
    # fewer allowed subjects than k: all of them, and the excluded one left out
    hits = idx.search_many(X[:1], 5, "p", 1e9, exclude_subjects=[0])[0]
    assert sorted(h.subject_id for h in hits) == [10, 20]
    with pytest.raises(ValueError):
        idx.search_many(X[:2], 3, "p", 1e9, exclude_subjects=[None])


def test_allowed_subject_ids_follow_consent_changes():
    idx, gen, centres, X = build(40, 1, IndexConfig(), allowed_every=4)
    assert idx.allowed_subject_ids("p", 1e9).tolist() == list(range(0, 40, 4))
    assert idx.allowed_subject_ids(None, 1e9).tolist() == list(range(40))
    assert idx.allowed_subject_ids("unknown-purpose", 1e9).dtype == np.int64
    with idx.lock.write():
        idx.apply(SubjectState(8, None))  # erased
        idx.apply(SubjectState(5, ("s5", None), {6}, {}, [("p", 0.0, 2e9, None)]))  # granted until 2e9
        idx.apply(SubjectState(12, ("s12", None), {13}, {}, [("p", 0.0, np.inf, 5.0)]))  # withdrawn
    assert idx.allowed_subject_ids("p", 1e9).tolist() == [0, 4, 5, 16, 20, 24, 28, 32, 36]
    assert 5 not in idx.allowed_subject_ids("p", 2e9 + 1).tolist()  # expired
    hits = idx.search_many(X[[5, 8, 12]], 1, "p", 1e9)
    assert hits[0][0].subject_id == 5 and hits[1][0].subject_id != 8 and hits[2][0].subject_id != 12


def test_bulk_loaded_subjects_change_erase_and_their_slots_are_reused():
    idx, gen, centres, X = build(100, 2, IndexConfig())  # subject i has templates 2i+1, 2i+2
    V = gen.samples(gen.centres(np.arange(100, 102)), 1, seed=8)  # two people not enrolled yet
    np.testing.assert_array_equal(idx.subject_vectors(10), X[20:22])
    with idx.lock.write():  # one of subject 10's templates deleted, a new one added
        idx.apply(SubjectState(10, ("s10", "Ten"), {21, 500}, {500: V[0]}, [("p", 0.0, np.inf, None)]))
    np.testing.assert_array_equal(idx.subject_vectors(10), np.stack([X[20], V[0]]))
    hit = idx.search(V[0], 1, "p", 1e9)[0][0]
    assert (hit.subject_id, hit.external_id, hit.label, hit.template_id) == (10, "s10", "Ten", 500)
    with idx.lock.write():
        idx.apply(SubjectState(10, None))  # erased: its slot is free
        idx.apply(SubjectState(7, None))
        idx.apply(SubjectState(1000, ("new", None), {600}, {600: V[1]}, [("p", 0.0, np.inf, None)]))
    assert idx.subject_vectors(10).shape == (0, DIM) and idx.stats()["subjects"] == 99
    np.testing.assert_array_equal(idx.subject_vectors(1000), V[1:2])  # not the erased subject's templates
    hits, n_allowed = idx.search(V[1], 3, "p", 1e9)
    assert hits[0].external_id == "new" and 10 not in [h.subject_id for h in hits] and n_allowed == 99
    assert idx.n == 197 and idx.allowed_subject_ids("p", 1e9).tolist() == sorted(set(range(100)) - {7, 10} | {1000})


@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_faiss_threads_wait_passively_unless_the_caller_says_otherwise(given):
    """Set before faiss loads its OpenMP runtime: spinning threads would burn a core after every
    search split over two threads."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, facegate.gallery.index, faiss; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == (given or "PASSIVE")
