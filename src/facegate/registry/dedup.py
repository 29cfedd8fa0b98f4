"""Whole-collection de-duplication: find every pair of distinct subjects that score at or above
the threshold for a stated FMR, group them into clusters for review, and remember the review.

    >>> d = Dedup(gallery)
    >>> d.plan("citizens", purpose="dedup").summary()      # the arithmetic, nothing searched
    >>> report = d.run("citizens", purpose="dedup", fmr=1e-5, max_expected_false_pairs=500)
    >>> d.review("citizens", report.clusters[0].key, decision="same", note="same passport photo")

Purpose-bound like identification: only subjects whose consent covers the declared purpose take
part, and the report re-checks that consent whenever it is read. Before a run the arithmetic is
stated (``dedup_plan``); a run expected to report more false pairs than the limit is refused.
An incremental run searches only the subjects new or changed since the last completed run of
the same purpose and FMR (the change feed's position is stored with each run) against everyone.
Runs, reports and reviews are audited.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..calibration import calibration_for, supported_fmr
from ..gallery import Gallery
from ..gallery.collections import check_purpose
from ..gallery.context import GalleryContext
from ..gallery.errors import InvalidArgumentError
from ..gallery.ports import CollectionRow
from ..gallery.search import audited_refusal
from . import dedup_store as db
from .dedup_errors import ClusterNotFoundError, DedupRunNotFoundError, NoPreviousRunError
from .dedup_plan import DEFAULT_FMR, DEFAULT_MAX_EXPECTED_FALSE_PAIRS, DedupPlan, make_plan
from .dedup_report import DECISIONS, Cluster, ClusterPair, ClusterReview, DedupReport, DedupRun
from .dedup_search import PairKey, Query, components, find_pairs

Progress = Callable[[int, int], None]  # (subjects searched, subjects to search)
CONSENT_CHUNK = 10_000  # ids per IN (...) list: far below SQLite's and PostgreSQL's parameter limits
MAX_NOTE = 2000


class Dedup:
    """De-duplication over a ``Gallery``'s collections (thread-safe like the gallery)."""

    def __init__(self, gallery: Gallery) -> None:
        self._ctx: GalleryContext = gallery.context

    # --- planning and running -----------------------------------------------------------------

    def plan(self, collection: str, *, purpose: str, fmr: float = DEFAULT_FMR, incremental: bool = False,
             max_expected_false_pairs: float = DEFAULT_MAX_EXPECTED_FALSE_PAIRS) -> DedupPlan:
        """The arithmetic of a run, computed from who takes part now; nothing is searched."""
        return self._prepare(collection, purpose, fmr, incremental, max_expected_false_pairs)[0]

    def run(self, collection: str, *, purpose: str, fmr: float = DEFAULT_FMR, incremental: bool = False,
            max_expected_false_pairs: float = DEFAULT_MAX_EXPECTED_FALSE_PAIRS, actor: str = "library",
            on_progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
            job_id: str | None = None) -> DedupReport:
        """Run a de-duplication and return its report (clusters not yet reviewed).

        ExpectedFalsePairsError (audited as a refusal) when the plan's expected false pairs
        exceed ``max_expected_false_pairs``; NoPreviousRunError for ``incremental`` without a
        completed run of the same purpose and FMR. ``cancelled()`` is checked between batches:
        a cancelled run is recorded as such and keeps no pairs. ``job_id``: the registry job
        running it; a run an earlier attempt of that job left unfinished is marked failed."""
        with audited_refusal(self._ctx, "dedup.run", collection, purpose, actor):
            plan, col, queried, head = self._prepare(collection, purpose, fmr, incremental, max_expected_false_pairs)
        self._admit(plan, actor)
        ctx = self._ctx
        now = ctx.now()
        with ctx.store.write() as tx:
            if job_id is not None:
                db.interrupt_job_runs(tx, job_id, now)
            run_id = db.insert_run(tx, collection_id=col.id, purpose=purpose, mode=plan.mode, status="running",
                                   fmr=plan.fmr, threshold=plan.threshold, model_id=col.model_id, subjects=plan.subjects,
                                   queried=plan.queried, pairs_compared=plan.pairs_compared,
                                   expected_false_pairs=plan.expected_false_pairs,
                                   max_expected_false_pairs=plan.max_expected_false_pairs, feed_seq=head,
                                   after_run_id=plan.after_run, actor=actor, job_id=job_id, started_at=now)
            ctx.audit.append(tx, actor=actor, action="dedup.run", now=now, collection=col.name, purpose=purpose,
                             decision="started", details={"run": run_id, **_plan_details(plan)})
        try:
            pairs, status = self._search(col, plan, queried, now.timestamp(), on_progress, cancelled)
        except BaseException as exc:
            self._finish(col, run_id, plan, {}, "failed", actor, error=f"{type(exc).__name__}: {exc}")
            raise
        self._finish(col, run_id, plan, pairs, status, actor)
        return self._report(col, run_id, include_reviewed=False, plan=plan)

    def admit(self, collection: str, *, purpose: str, fmr: float = DEFAULT_FMR, incremental: bool = False,
              max_expected_false_pairs: float = DEFAULT_MAX_EXPECTED_FALSE_PAIRS, actor: str = "library") -> DedupPlan:
        """The plan of a run about to be queued (the service's jobs): ExpectedFalsePairsError,
        audited as a refusal, when it is over the limit. The run re-plans when it starts."""
        with audited_refusal(self._ctx, "dedup.run", collection, purpose, actor):
            plan = self._prepare(collection, purpose, fmr, incremental, max_expected_false_pairs)[0]
        self._admit(plan, actor)
        return plan

    def _admit(self, plan: DedupPlan, actor: str) -> None:
        if plan.within_limit:
            return
        ctx = self._ctx
        with ctx.store.write() as tx:
            ctx.audit.append(tx, actor=actor, action="dedup.run", now=ctx.now(), collection=plan.collection,
                             purpose=plan.purpose, decision="refused_over_limit", details=_plan_details(plan))
        plan.check()

    def _prepare(self, collection: str, purpose: str, fmr: float, incremental: bool,
                 limit: float) -> tuple[DedupPlan, CollectionRow, list[int], int]:
        ctx = self._ctx
        if not 0 <= limit < math.inf:
            raise InvalidArgumentError("max_expected_false_pairs must be a finite number ≥ 0")
        fmr = supported_fmr(fmr)
        col = ctx.collection_row(collection)
        check_purpose(col, purpose)
        threshold = calibration_for(col.model_id).threshold(fmr)
        with ctx.store.read() as tx:
            head = tx.max_seq()
            prev = db.latest_completed(tx, col.id, purpose=purpose, fmr=fmr) if incremental else None
            if incremental and prev is None:
                raise NoPreviousRunError(
                    f"no completed de-duplication of {collection!r} for purpose {purpose!r} at FMR {fmr:g} to continue; "
                    "run a full one first", collection=collection, purpose=purpose, fmr=fmr)
            changed = _changed_since(tx, col.id, prev, head) if prev is not None else None
        # The index is current with the store up to at least ``head`` once ``get`` returns (it syncs).
        idx = ctx.index.get(col.id, col.embedding_dim, col.model_id)
        allowed = idx.allowed_subject_ids(purpose, ctx.now().timestamp()).tolist()
        queried = [sid for sid in allowed if changed is None or sid in changed]
        plan = make_plan(collection=col.name, purpose=purpose, model_id=col.model_id, fmr=fmr, threshold=threshold,
                         subjects=len(allowed), queried=len(queried), max_expected_false_pairs=limit,
                         after_run=None if prev is None else int(prev.id))
        return plan, col, queried, head

    def _search(self, col: CollectionRow, plan: DedupPlan, queried: list[int], now: float, on_progress: Progress | None,
                cancelled: Callable[[], bool] | None) -> tuple[dict[PairKey, float], str]:
        idx = self._ctx.index.get(col.id, col.embedding_dim, col.model_id)
        done = 0

        def advanced(n: int) -> None:
            nonlocal done
            done += n
            if on_progress is not None:
                on_progress(done, len(queried))

        def queries() -> Iterator[Query]:
            for sid in queried:
                V = idx.subject_vectors(sid)
                if len(V):
                    yield Query(sid, V)

        pairs = find_pairs(idx, queries(), purpose=plan.purpose, now=now, threshold=plan.threshold,
                           on_batch=advanced, cancelled=cancelled)
        if cancelled is not None and cancelled():
            return {}, "cancelled"
        with self._ctx.store.read() as tx:  # the index's consent mask, confirmed in the database
            ok = _allowed(tx, sorted({s for pair in pairs for s in pair}), plan.purpose, self._ctx.now())
        return {k: s for k, s in pairs.items() if k[0] in ok and k[1] in ok}, "completed"

    def _finish(self, col: CollectionRow, run_id: int, plan: DedupPlan, pairs: dict[PairKey, float], status: str,
                actor: str, error: str | None = None) -> None:
        ctx = self._ctx
        now = ctx.now()
        with ctx.store.write() as tx:
            db.insert_pairs(tx, run_id, pairs)
            db.finish_run(tx, run_id, status=status, pairs_found=len(pairs), finished_at=now, error=error)
            ctx.audit.append(tx, actor=actor, action="dedup.run", now=now, collection=col.name, purpose=plan.purpose,
                             decision=status, details={"run": run_id, "pairs_found": len(pairs),
                                                       "clusters": len(components(pairs)), **_plan_details(plan)})

    # --- reading and reviewing -------------------------------------------------------------------

    def runs(self, collection: str, *, limit: int = 20) -> list[DedupRun]:
        col = self._ctx.collection_row(collection)
        with self._ctx.store.read() as tx:
            return [DedupRun.from_row(r, col.name) for r in db.runs(tx, col.id, max(1, min(int(limit), 1000)))]

    def report(self, collection: str, *, run: int | None = None, include_reviewed: bool = False,
               actor: str = "library") -> DedupReport:
        """The clusters of ``run`` (default: the latest completed run) and of the runs it
        continues; subjects erased since, or whose consent no longer covers the run's purpose,
        are left out. Audited (the report names people)."""
        col = self._ctx.collection_row(collection)
        rep = self._report(col, run, include_reviewed=include_reviewed)
        with self._ctx.store.write() as tx:
            self._ctx.audit.append(tx, actor=actor, action="dedup.report", now=self._ctx.now(), collection=col.name,
                                   purpose=rep.run.purpose, decision="disclosed",
                                   details={"run": rep.run.id, "clusters": len(rep.clusters), "pairs": rep.pairs,
                                            "include_reviewed": include_reviewed})
        return rep

    def review(self, collection: str, cluster: str, *, decision: str, note: str, run: int | None = None,
               actor: str = "library") -> ClusterReview:
        """Record an operator's decision on a cluster of the current findings: ``same`` (one
        person registered several times) or ``different`` (different people). Audited with the
        subjects, decision and note; a reviewed cluster is not reported again (a new member
        makes it a new cluster). Deciding again replaces the decision (the audit keeps both)."""
        if decision not in DECISIONS:
            raise InvalidArgumentError(f"decision must be one of {', '.join(DECISIONS)}")
        note = (note or "").strip()
        if not note or len(note) > MAX_NOTE or any(ord(ch) < 32 and ch not in "\n\t" for ch in note):
            raise InvalidArgumentError(f"a review needs a note: 1–{MAX_NOTE} printable characters")
        col = self._ctx.collection_row(collection)
        rep = self._report(col, run, include_reviewed=True)
        found = next((c for c in rep.clusters if c.key == cluster), None)
        if found is None:
            raise ClusterNotFoundError(f"no cluster {cluster!r} in the de-duplication findings of {collection!r} "
                                       f"(run {rep.run.id})", cluster=cluster)
        now = self._ctx.now()
        with self._ctx.store.write() as tx:
            db.put_review(tx, col.id, cluster, decision=decision, note=note, members=len(found.subjects),
                          run_id=rep.run.id, actor=actor, now=now)
            self._ctx.audit.append(tx, actor=actor, action="dedup.review", now=now, collection=col.name,
                                   subjects=list(found.subjects), purpose=rep.run.purpose, decision=decision,
                                   score=found.max_score,
                                   details={"cluster": cluster, "run": rep.run.id, "note": note,
                                            "previous": None if found.review is None else found.review.decision})
        return ClusterReview(cluster, decision, note, actor, now, rep.run.id)

    def _report(self, col: CollectionRow, run: int | None, *, include_reviewed: bool,
                plan: DedupPlan | None = None) -> DedupReport:
        ctx = self._ctx
        with ctx.store.read() as tx:
            row = db.latest_completed(tx, col.id) if run is None else db.run(tx, col.id, int(run))
            if row is None:
                raise DedupRunNotFoundError(f"no {'completed ' if run is None else ''}de-duplication run "
                                            f"{'' if run is None else str(run) + ' '}in collection {col.name!r}",
                                            collection=col.name, run=run)
            pairs = db.pairs_of(tx, db.chain(tx, row))
            ok = _allowed(tx, sorted({s for pair in pairs for s in pair}), row.purpose, ctx.now())
            pairs = {k: s for k, s in pairs.items() if k[0] in ok and k[1] in ok}
            comps = components(pairs)
            reviewed = db.reviews(tx, col.id, [c.key for c in comps])
            names = _external_ids(tx, sorted({s for pair in pairs for s in pair}))
        clusters = []
        for c in comps:
            r = reviewed.get(c.key)
            if r is not None and not include_reviewed:
                continue
            review = None if r is None else ClusterReview(c.key, r.decision, r.note, r.actor, r.decided_at, r.run_id)
            clusters.append(Cluster(c.key, tuple(sorted(names[m] for m in c.members)),
                                    tuple(ClusterPair(names[a], names[b], s) for a, b, s in c.pairs), review))
        hidden = 0 if include_reviewed else sum(1 for c in comps if c.key in reviewed)
        return DedupReport(DedupRun.from_row(row, col.name), tuple(clusters), len(pairs), hidden, plan)


def _allowed(tx: Any, sids: Sequence[int], purpose: str, now: Any) -> set[int]:
    """Of ``sids``, those whose active consent covers ``purpose`` at ``now`` (the database's word)."""
    out: set[int] = set()
    for start in range(0, len(sids), CONSENT_CHUNK):
        out |= tx.active_consent_subjects(list(sids[start : start + CONSENT_CHUNK]), purpose, now)
    return out


def _external_ids(tx: Any, sids: Sequence[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for start in range(0, len(sids), CONSENT_CHUNK):
        out.update((r.id, r.external_id) for r in tx.subjects_by_ids(list(sids[start : start + CONSENT_CHUNK])))
    return out


def _changed_since(tx: Any, cid: int, prev: Any, head: int) -> set[int]:
    """Subjects enrolled, re-enrolled or re-consented since the run ``prev`` started: from the
    change feed, or — where the feed has been pruned past that point — those created since."""
    if tx.pruned_through() <= prev.feed_seq:
        return {c.subject_id for c in tx.changes_since(prev.feed_seq, head)
                if c.collection_id == cid and c.subject_id is not None}
    return db.subjects_created_since(tx, cid, prev.started_at)


def _plan_details(plan: DedupPlan) -> dict[str, Any]:
    return {"mode": plan.mode, "fmr": plan.fmr, "threshold": round(plan.threshold, 6), "subjects": plan.subjects,
            "queried": plan.queried, "pairs_compared": plan.pairs_compared,
            "expected_false_pairs": round(plan.expected_false_pairs, 3),
            "max_expected_false_pairs": plan.max_expected_false_pairs}
