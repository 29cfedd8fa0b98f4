"""De-duplication as a registry job (``registry.jobs``): what the REST service runs in the
background, with progress, cancel and resume after a restart (a resumed job starts its run
again; the run the dead attempt left is marked failed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..gallery import Gallery
from .dedup import Dedup
from .jobs import JobContext, JobKind

KIND = "dedup"


@dataclass(frozen=True)
class DedupParams:
    """A job's declared run, stored with the job."""

    purpose: str
    fmr: float
    incremental: bool
    max_expected_false_pairs: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dedup_kind(gallery: Gallery) -> JobKind:
    """The job kind for a ``JobRunner`` over ``gallery``'s store."""
    dedup = Dedup(gallery)

    def run(ctx: JobContext) -> dict[str, Any]:
        p = DedupParams(**ctx.job.params)
        rep = dedup.run(ctx.job.collection, purpose=p.purpose, fmr=p.fmr, incremental=p.incremental,
                        max_expected_false_pairs=p.max_expected_false_pairs, actor=ctx.job.actor,
                        on_progress=ctx.progress, cancelled=ctx.cancelled, job_id=ctx.job.id)
        return {"run": rep.run.id, "status": rep.run.status, "pairs": rep.pairs, "clusters": len(rep.clusters)}

    return JobKind(run)
