"""Every statement de-duplication runs against its tables (``dedup_schema``), inside the
gallery store's transactions, so SQLite and PostgreSQL run the same SQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.engine import Row

from ..gallery.schema import SubjectRow
from .dedup_schema import DedupPairRow, DedupReviewRow, DedupRunRow

RUNS = cast(Table, DedupRunRow.__table__)
PAIRS = cast(Table, DedupPairRow.__table__)
REVIEWS = cast(Table, DedupReviewRow.__table__)
SUBJECTS = cast(Table, SubjectRow.__table__)
INSERT_CHUNK = 5000


def insert_run(tx: Any, **values: Any) -> int:
    key = tx.conn.execute(insert(RUNS).values(**values)).inserted_primary_key
    return int(key[0])


def finish_run(tx: Any, run_id: int, **values: Any) -> None:
    tx.conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(**values))


def insert_pairs(tx: Any, run_id: int, pairs: Mapping[tuple[int, int], float]) -> None:
    rows = [{"run_id": run_id, "subject_a": a, "subject_b": b, "score": float(s)} for (a, b), s in pairs.items()]
    for start in range(0, len(rows), INSERT_CHUNK):
        tx.conn.execute(insert(PAIRS), rows[start : start + INSERT_CHUNK])


def interrupt_job_runs(tx: Any, job_id: str, now: dt.datetime) -> int:
    """Runs an earlier attempt of registry job ``job_id`` left running (its process died)."""
    q = (update(RUNS).where(RUNS.c.job_id == job_id, RUNS.c.status == "running")
         .values(status="failed", finished_at=now, error="interrupted: the process running it stopped"))
    return int(tx.conn.execute(q).rowcount or 0)


def subjects_created_since(tx: Any, collection_id: int, since: dt.datetime) -> set[int]:
    """Subjects of the collection created at or after ``since`` (when the change feed no longer
    reaches back to a run's start)."""
    q = select(SUBJECTS.c.id).where(SUBJECTS.c.collection_id == collection_id, SUBJECTS.c.created_at >= since)
    return {int(sid) for sid in tx.conn.execute(q).scalars()}


def run(tx: Any, collection_id: int, run_id: int) -> Row | None:
    return tx.conn.execute(select(RUNS).where(RUNS.c.collection_id == collection_id, RUNS.c.id == run_id)).first()


def latest_completed(tx: Any, collection_id: int, *, purpose: str | None = None, fmr: float | None = None) -> Row | None:
    q = select(RUNS).where(RUNS.c.collection_id == collection_id, RUNS.c.status == "completed")
    if purpose is not None:
        q = q.where(RUNS.c.purpose == purpose)
    if fmr is not None:
        q = q.where(func.abs(RUNS.c.fmr - fmr) <= fmr * 1e-6)
    return tx.conn.execute(q.order_by(RUNS.c.id.desc()).limit(1)).first()


def runs(tx: Any, collection_id: int, limit: int) -> list[Row]:
    q = select(RUNS).where(RUNS.c.collection_id == collection_id).order_by(RUNS.c.id.desc()).limit(limit)
    return list(tx.conn.execute(q))


def chain(tx: Any, row: Row) -> list[int]:
    """The run and the runs it continues, back to the full run they all extend."""
    ids = [int(row.id)]
    while row.after_run_id is not None:
        prev = tx.conn.execute(select(RUNS).where(RUNS.c.id == row.after_run_id)).first()
        if prev is None:  # the base run was deleted with its collection: nothing older to add
            break
        row = prev
        ids.append(int(row.id))
    return ids


def pairs_of(tx: Any, run_ids: Sequence[int]) -> dict[tuple[int, int], float]:
    """Pairs of these runs whose subjects both still exist (erasure cascades), best score each."""
    q = (select(PAIRS.c.subject_a, PAIRS.c.subject_b, func.max(PAIRS.c.score))
         .where(PAIRS.c.run_id.in_(list(run_ids))).group_by(PAIRS.c.subject_a, PAIRS.c.subject_b))
    return {(int(a), int(b)): float(s) for a, b, s in tx.conn.execute(q)}


def reviews(tx: Any, collection_id: int, keys: Iterable[str]) -> dict[str, Row]:
    keys = list(keys)
    out: dict[str, Row] = {}
    for start in range(0, len(keys), INSERT_CHUNK):
        q = select(REVIEWS).where(REVIEWS.c.collection_id == collection_id,
                                  REVIEWS.c.cluster_key.in_(keys[start : start + INSERT_CHUNK]))
        out.update({r.cluster_key: r for r in tx.conn.execute(q)})
    return out


def put_review(tx: Any, collection_id: int, key: str, *, decision: str, note: str, members: int, run_id: int,
               actor: str, now: dt.datetime) -> None:
    tx.conn.execute(delete(REVIEWS).where(REVIEWS.c.collection_id == collection_id, REVIEWS.c.cluster_key == key))
    tx.conn.execute(insert(REVIEWS).values(collection_id=collection_id, cluster_key=key, decision=decision, note=note,
                                           members=members, run_id=run_id, actor=actor, decided_at=now))
