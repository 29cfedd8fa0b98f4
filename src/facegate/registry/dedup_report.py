"""What de-duplication returns: runs, clusters with their pairs and review decisions, and the
report as JSON or CSV. Frozen dataclasses with ``to_dict()``; subjects by external id only."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from typing import Any

from ..gallery.policies import iso_utc
from .dedup_plan import DedupPlan

DECISIONS = ("same", "different")  # one person registered twice / different people who look alike


@dataclass(frozen=True)
class ClusterReview:
    key: str
    decision: str
    note: str
    actor: str
    decided_at: dt.datetime
    run_id: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "decision": self.decision, "note": self.note, "actor": self.actor,
                "decided_at": iso_utc(self.decided_at), "run_id": self.run_id}


@dataclass(frozen=True)
class ClusterPair:
    a: str
    b: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "score": round(self.score, 6)}


@dataclass(frozen=True)
class Cluster:
    """Subjects joined by pairs at or above the threshold: possibly one person registered
    several times. ``key`` is stable across runs for the same set of subjects."""

    key: str
    subjects: tuple[str, ...]
    pairs: tuple[ClusterPair, ...]
    review: ClusterReview | None = None

    @property
    def max_score(self) -> float:
        return max(p.score for p in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "size": len(self.subjects), "subjects": list(self.subjects),
                "max_score": round(self.max_score, 6), "pairs": [p.to_dict() for p in self.pairs],
                "review": None if self.review is None else self.review.to_dict()}


@dataclass(frozen=True)
class DedupRun:
    id: int
    collection: str
    purpose: str
    mode: str
    status: str  # "running" | "completed" | "failed" | "cancelled"
    fmr: float
    threshold: float
    model_id: str
    subjects: int
    queried: int
    pairs_compared: int
    expected_false_pairs: float
    max_expected_false_pairs: float
    pairs_found: int | None
    after_run: int | None
    actor: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    error: str | None
    job_id: str | None = None

    @classmethod
    def from_row(cls, row: Any, collection: str) -> DedupRun:
        return cls(int(row.id), collection, row.purpose, row.mode, row.status, row.fmr, row.threshold, row.model_id,
                   row.subjects, row.queried, int(row.pairs_compared), row.expected_false_pairs,
                   row.max_expected_false_pairs, row.pairs_found, row.after_run_id, row.actor, row.started_at,
                   row.finished_at, row.error, row.job_id)

    @property
    def seconds(self) -> float | None:
        return None if self.finished_at is None else (self.finished_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.__dict__.items() if not isinstance(v, dt.datetime)},
                "threshold": round(self.threshold, 6), "started_at": iso_utc(self.started_at),
                "finished_at": iso_utc(self.finished_at), "seconds": self.seconds}


@dataclass(frozen=True)
class DedupReport:
    """The clusters of a run (with the runs it continues), each subject's consent for the run's
    purpose re-checked now. Reviewed clusters are left out (``reviewed_hidden`` counts them)
    unless asked for."""

    run: DedupRun
    clusters: tuple[Cluster, ...]
    pairs: int
    reviewed_hidden: int
    plan: DedupPlan | None = None  # set when the report comes straight from a run

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run.to_dict(), "plan": None if self.plan is None else self.plan.to_dict(),
                "pairs": self.pairs, "reviewed_hidden": self.reviewed_hidden,
                "clusters": [c.to_dict() for c in self.clusters]}

    def to_csv(self) -> str:
        """One row per pair: cluster key and size, the two subjects, score, review decision."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["cluster", "cluster_size", "subject_a", "subject_b", "score", "review"])
        for c in self.clusters:
            for p in c.pairs:
                w.writerow([c.key, len(c.subjects), _cell(p.a), _cell(p.b), f"{p.score:.6f}",
                            "" if c.review is None else c.review.decision])
        return out.getvalue()


def _cell(text: str) -> str:
    """A subject id a spreadsheet would run as a formula, quoted to stay text (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
