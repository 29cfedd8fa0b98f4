"""De-duplication through the library, on synthetic face-like templates with planted duplicates
(the pair set checked against brute-force exact scoring) and on real photos: the arithmetic and
its limit, purpose and consent binding, clusters, reviews, erasure, incremental runs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from facegate.calibration import calibration_for
from facegate.clock import ManualClock
from facegate.errors import CalibrationError
from facegate.gallery import ConsentSpec, Gallery, InvalidArgumentError, PurposeNotAllowedError
from facegate.gallery.synth import FaceLikeGenerator
from facegate.registry.dedup import Dedup
from facegate.registry.dedup_errors import (
    ClusterNotFoundError,
    DedupRunNotFoundError,
    ExpectedFalsePairsError,
    NoPreviousRunError,
)
from facegate.registry.dedup_plan import max_subjects, pairs_compared, required_fmr
from facegate.registry.dedup_search import components

MODEL = "sface-2021dec-int8bq"
N = 240
PLANTED = [(3, 200), (17, 201), (42, 202), (99, 203)]  # identity of subject i enrolled again as subject j
NO_DEDUP = {150, 151}  # consent for "access" only: never take part
FMR = 1e-3
THR = calibration_for(MODEL).threshold(FMR)


def sid(i: int) -> str:
    return f"P{i:04d}"


def templates(n: int = N, planted=PLANTED) -> np.ndarray:
    gen = FaceLikeGenerator(128, seed=5)
    ident = np.arange(n)
    for i, j in planted:
        ident[j] = i
    # Identity i's first enrolment is sample 1; a planted duplicate is sample 2 of the same centre.
    X = gen.samples(gen.centres(ident), 1, seed=1)
    X2 = gen.samples(gen.centres(ident), 1, seed=2)
    for _i, j in planted:
        X[j] = X2[j]
    return X


def consent(i: int) -> ConsentSpec:
    return ConsentSpec(("access",) if i in NO_DEDUP else ("dedup", "access"), evidence_ref=f"form-{i}")


def exact_pairs(X: np.ndarray, allowed: list[int], thr: float) -> set[tuple[str, str]]:
    S = X[allowed] @ X[allowed].T
    a, b = np.nonzero(np.triu(thr <= S, 1))
    return {(sid(allowed[i]), sid(allowed[j])) for i, j in zip(a.tolist(), b.tolist())}


def pair_set(report) -> set[tuple[str, str]]:
    return {tuple(sorted((p.a, p.b))) for c in report.clusters for p in c.pairs}


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def g(tmp_path, clock):
    gallery = Gallery.open(tmp_path / "data", clock=clock)
    gallery.create_collection("reg", purposes=["dedup", "access"])
    X = templates()
    gallery.import_templates("reg", [(sid(i), X[i:i + 1], consent(i)) for i in range(N)], model_id=MODEL)
    yield gallery
    gallery.close()


def test_arithmetic_and_the_table_it_makes():
    assert pairs_compared(1_000_000, 1_000_000) == 499_999_500_000
    assert pairs_compared(1000, 10) == 10 * 990 + 45  # new ones against old ones, and among themselves
    assert pairs_compared(1_000_000, 1_000_000) * 1e-5 == pytest.approx(5e6, rel=1e-5)
    assert max_subjects(1e-5) == 4472 and pairs_compared(4472, 4472) * 1e-5 <= 100 < pairs_compared(4473, 4473) * 1e-5
    assert required_fmr(1_000_000) == pytest.approx(2e-10, rel=1e-5)


def test_plan_counts_only_consenting_subjects_and_refuses_over_the_limit(g):
    d = Dedup(g)
    plan = d.plan("reg", purpose="dedup", fmr=FMR)
    n = N - len(NO_DEDUP)
    assert (plan.subjects, plan.queried, plan.mode) == (n, n, "full")
    assert plan.pairs_compared == n * (n - 1) // 2
    assert plan.expected_false_pairs == pytest.approx(plan.pairs_compared * FMR)
    assert plan.threshold == pytest.approx(THR) and plan.within_limit
    assert d.plan("reg", purpose="access", fmr=FMR).subjects == N
    with pytest.raises(ExpectedFalsePairsError) as err:
        d.run("reg", purpose="dedup", fmr=FMR, max_expected_false_pairs=1, actor="op")
    assert err.value.details["plan"]["within_limit"] is False
    assert d.runs("reg") == []  # nothing was started
    refused = g.audit_list(action="dedup.run")
    assert refused[0].decision == "refused_over_limit" and refused[0].actor == "op"
    with pytest.raises(CalibrationError):
        d.plan("reg", purpose="dedup", fmr=2e-5)
    with pytest.raises(PurposeNotAllowedError):
        d.plan("reg", purpose="marketing")
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(InvalidArgumentError):
            d.plan("reg", purpose="dedup", max_expected_false_pairs=bad)


def test_a_refused_run_is_audited_with_its_reason(g):
    d = Dedup(g)
    with pytest.raises(PurposeNotAllowedError):
        d.run("reg", purpose="marketing", fmr=FMR, actor="op")
    with pytest.raises(NoPreviousRunError):
        d.admit("reg", purpose="dedup", fmr=FMR, incremental=True, actor="op")
    events = g.audit_list(action="dedup.run")
    assert [(e.decision, e.purpose, e.actor) for e in events] == [
        ("refused_no_previous_dedup_run", "dedup", "op"), ("refused_purpose_not_allowed", "marketing", "op")]
    assert d.runs("reg") == [] and g.audit_verify().ok


def test_full_run_finds_exactly_the_pairs_exact_scoring_finds(g):
    X = templates()
    allowed = [i for i in range(N) if i not in NO_DEDUP]
    expected = exact_pairs(X, allowed, THR)
    planted = {(sid(i), sid(j)) for i, j in PLANTED}
    assert planted & expected  # the planted duplicates are what the run is for
    rep = Dedup(g).run("reg", purpose="dedup", fmr=FMR, actor="op")
    assert rep.run.status == "completed" and rep.run.pairs_found == len(expected)
    assert pair_set(rep) == expected
    assert rep.plan is not None and rep.plan.pairs_compared == len(allowed) * (len(allowed) - 1) // 2
    for c in rep.clusters:
        assert all(p.score >= THR for p in c.pairs)
        assert len(c.subjects) == len({s for p in c.pairs for s in (p.a, p.b)})
    events = g.audit_list(action="dedup.run")
    assert [e.decision for e in events[:2]] == ["completed", "started"]
    assert events[0].details["pairs_found"] == len(expected)


def test_a_subject_without_consent_for_the_purpose_never_appears(tmp_path, clock):
    g = Gallery.open(tmp_path / "d", clock=clock)
    g.create_collection("reg", purposes=["dedup", "access"])
    X = templates(20, [(1, 10), (2, 11)])
    g.import_templates("reg", [(sid(i), X[i:i + 1], ConsentSpec(("access",) if i == 11 else ("dedup",)))
                               for i in range(20)], model_id=MODEL)
    d = Dedup(g)
    rep = d.run("reg", purpose="dedup", fmr=FMR)
    assert sid(11) not in {s for c in rep.clusters for s in c.subjects}
    assert (sid(1), sid(10)) in pair_set(rep)
    # Consent withdrawn after the run: the stored finding is no longer shown.
    g.withdraw_consent("reg", sid(10), ["dedup"])
    assert (sid(1), sid(10)) not in pair_set(d.report("reg"))
    g.close()


def test_review_hides_the_cluster_is_audited_and_survives_reruns(g):
    d = Dedup(g)
    rep = d.run("reg", purpose="dedup", fmr=FMR)
    first = rep.clusters[0]
    with pytest.raises(InvalidArgumentError):
        d.review("reg", first.key, decision="same", note="   ")
    with pytest.raises(InvalidArgumentError):
        d.review("reg", first.key, decision="maybe", note="x")
    with pytest.raises(ClusterNotFoundError):
        d.review("reg", "0" * 32, decision="same", note="x")
    r = d.review("reg", first.key, decision="same", note="same document number", actor="reviewer")
    assert (r.decision, r.actor) == ("same", "reviewer")
    after = d.report("reg", actor="reviewer")
    assert first.key not in {c.key for c in after.clusters} and after.reviewed_hidden == 1
    shown = d.report("reg", include_reviewed=True)
    assert next(c for c in shown.clusters if c.key == first.key).review.note == "same document number"
    ev = g.audit_list(action="dedup.review")[0]
    assert ev.subjects == first.subjects and ev.decision == "same" and ev.details["note"] == "same document number"
    assert [e.actor for e in g.audit_list(action="dedup.report")][:2] == ["library", "reviewer"]
    # A later full run finds the same people again: the decision still holds.
    again = d.run("reg", purpose="dedup", fmr=FMR)
    assert first.key not in {c.key for c in again.clusters} and again.reviewed_hidden == 1
    # Deciding again replaces the decision; the audit log keeps both.
    d.review("reg", first.key, decision="different", note="twins, checked in person")
    assert g.audit_list(action="dedup.review")[0].details["previous"] == "same"


def test_erasure_removes_the_subject_from_every_stored_finding(g):
    d = Dedup(g)
    rep = d.run("reg", purpose="dedup", fmr=FMR)
    victim = rep.clusters[0].subjects[0]
    g.delete_subject("reg", victim)
    assert victim not in {s for c in d.report("reg").clusters for s in c.subjects}
    raw = g.store.engine.connect()
    try:
        n = raw.exec_driver_sql("SELECT count(*) FROM dedup_pairs WHERE subject_a NOT IN (SELECT id FROM subjects) "
                                "OR subject_b NOT IN (SELECT id FROM subjects)").scalar()
    finally:
        raw.close()
    assert n == 0


def test_incremental_run_searches_only_new_subjects_against_everyone(g, clock):
    d = Dedup(g)
    with pytest.raises(NoPreviousRunError):
        d.run("reg", purpose="dedup", fmr=FMR, incremental=True)
    full = d.run("reg", purpose="dedup", fmr=FMR)
    clock.advance(3600)
    gen = FaceLikeGenerator(128, seed=5)
    # Two newcomers: one is subject 5 again (sample 3), one is nobody enrolled before.
    new = gen.samples(gen.centres(np.array([5, 9999])), 1, seed=3)
    g.import_templates("reg", [("NEW-A", new[:1], consent(0)), ("NEW-B", new[1:], consent(0))], model_id=MODEL)
    plan = d.plan("reg", purpose="dedup", fmr=FMR, incremental=True)
    n = N - len(NO_DEDUP) + 2
    assert (plan.mode, plan.queried, plan.subjects, plan.after_run) == ("incremental", 2, n, full.run.id)
    assert plan.pairs_compared == 2 * (n - 2) + 1
    inc = d.run("reg", purpose="dedup", fmr=FMR, incremental=True)
    X = np.vstack([templates(), new])
    ids = [sid(i) for i in range(N)] + ["NEW-A", "NEW-B"]
    S = X[-2:] @ X.T
    want = {tuple(sorted((ids[N + r], ids[c]))) for r, c in zip(*np.nonzero(S >= THR))
            if ids[c] != ids[N + r] and (c >= N or c not in NO_DEDUP)}
    assert inc.run.pairs_found == len(want)
    assert want <= pair_set(inc)
    assert pair_set(full) <= pair_set(inc)  # the report carries the findings of the run it continues
    assert inc.run.after_run == full.run.id


def test_report_before_any_run_and_unknown_run(g):
    d = Dedup(g)
    with pytest.raises(DedupRunNotFoundError):
        d.report("reg")
    with pytest.raises(DedupRunNotFoundError):
        d.report("reg", run=12345)


def test_csv_report_keeps_ids_as_text(tmp_path, clock):
    g = Gallery.open(tmp_path / "d", clock=clock)
    g.create_collection("reg", purposes=["dedup"])
    X = templates(6, [(0, 1)])
    g.import_templates("reg", [("=cmd" if i == 0 else sid(i), X[i:i + 1], ConsentSpec(("dedup",))) for i in range(6)],
                       model_id=MODEL)
    rep = Dedup(g).run("reg", purpose="dedup", fmr=FMR)
    lines = rep.to_csv().splitlines()
    assert lines[0] == "cluster,cluster_size,subject_a,subject_b,score,review"
    assert any("'=cmd" in line for line in lines[1:]) and not any(",=cmd" in line for line in lines)
    g.close()


def test_components_group_transitively():
    comps = components({(1, 2): 0.6, (2, 3): 0.5, (7, 9): 0.9})
    assert [c.members for c in comps] == [(7, 9), (1, 2, 3)]
    assert comps[1].key == components({(2, 3): 0.1, (1, 3): 0.2})[0].key  # same people, same key


def test_real_photos_two_enrolments_of_one_person_are_found(tmp_path, engine, photos, clock):
    g = Gallery.open(tmp_path / "d", engine=engine, clock=clock)
    g.create_collection("reg", purposes=["dedup"])
    c = ConsentSpec(("dedup",), evidence_ref="form")
    for ext, photo in (("A-1", "obama_1"), ("A-2", "obama_2"), ("B", "biden_1"), ("C", "collins_1")):
        assert g.enroll("reg", ext, [photos[photo]], consent=c).accepted == 1
    rep = Dedup(g).run("reg", purpose="dedup")  # the default, strictest calibrated FMR
    assert rep.run.fmr == 1e-5
    assert [c.subjects for c in rep.clusters] == [("A-1", "A-2")]
    g.close()


def test_a_cancelled_run_keeps_no_pairs_and_a_resumed_job_closes_its_interrupted_run(g):
    d = Dedup(g)
    rep = d.run("reg", purpose="dedup", fmr=FMR, cancelled=lambda: True)
    assert rep.run.status == "cancelled" and rep.run.pairs_found == 0 and rep.clusters == ()
    with pytest.raises(DedupRunNotFoundError):  # a cancelled run is nobody's findings
        d.report("reg")
    # A job attempt that died mid-run left its run "running"; the next attempt closes it.
    with g.store.write() as tx:
        tx.conn.exec_driver_sql("UPDATE dedup_runs SET status='running', job_id='job1', finished_at=NULL")
    d.run("reg", purpose="dedup", fmr=FMR, job_id="job1")
    statuses = [(r.status, r.error) for r in d.runs("reg")]
    assert statuses[0] == ("completed", None) and statuses[1][0] == "failed" and "interrupted" in statuses[1][1]


def test_incremental_run_after_the_change_feed_was_pruned_takes_the_subjects_created_since(g, clock):
    d = Dedup(g)
    clock.advance(60)  # subjects created at the very instant a run starts are taken again (the safe side)
    d.run("reg", purpose="dedup", fmr=FMR)
    clock.advance(86400)
    gen = FaceLikeGenerator(128, seed=5)
    g.import_templates("reg", [("LATE", gen.samples(gen.centres(np.array([7])), 1, seed=4), consent(0))], model_id=MODEL)
    with g.store.write() as tx:
        tx.prune_changes(clock.now() + dt.timedelta(seconds=1))
    plan = d.plan("reg", purpose="dedup", fmr=FMR, incremental=True)
    assert (plan.mode, plan.queried) == ("incremental", 1)
    assert ("LATE", sid(7)) in pair_set(d.run("reg", purpose="dedup", fmr=FMR, incremental=True))
