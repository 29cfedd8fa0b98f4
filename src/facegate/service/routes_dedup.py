"""De-duplication routes under /v1/collections/{collection}/dedup.

Scopes: the arithmetic (``plan``), the runs, the clusters and reviewing them need ``identify``
on the collection — the clusters name people, as identification does; starting or cancelling a
run needs ``admin`` on the collection (it is identification of everyone at once). A run is a
registry job (``registry.jobs``): queued here and run by the service's registry runner (the
same one as bulk enrolment), visible to every process on the same database and cancellable; a
job a stopped process left is taken over by the next process that starts. The plan is refused (422
``expected_false_pairs_over_limit``) before any job exists.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ..calibration import SUPPORTED_FMRS
from ..clock import SYSTEM
from ..registry.dedup import MAX_NOTE, Dedup
from ..registry.dedup_job import KIND, DedupParams
from ..registry.dedup_plan import DEFAULT_FMR, DEFAULT_MAX_EXPECTED_FALSE_PAIRS
from ..registry.jobs import Job, JobRunner
from .backend import gallery_of
from .deps import AdminKey, GrantedCollection, IdentifyKey, ServiceDep
from .schemas import problem_responses

log = logging.getLogger("facegate.service")
router = APIRouter(prefix="/v1/collections/{collection}/dedup", tags=["de-duplication"])

READ = problem_responses(401, 403, 404, 422, 429, 503)
WRITE = problem_responses(400, 401, 403, 404, 409, 422, 429, 503)
MAX_WAIT_S = 30.0
WAIT_POLL_S = 0.2


class DedupIn(BaseModel):
    """A declared run (``DedupParams`` at the HTTP edge). Unknown fields are refused: a misspelt
    ``fmr`` must not silently run at the default."""

    model_config = ConfigDict(extra="forbid")

    purpose: str = Field(..., min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.:-]*$",
                         description="Declared purpose: only subjects whose consent covers it take part.")
    fmr: float = Field(DEFAULT_FMR, gt=0, lt=1, description="False-match rate whose calibrated threshold decides a pair: "
                       + ", ".join(f"{f:g}" for f in SUPPORTED_FMRS) + f" (default {DEFAULT_FMR:g}).")
    incremental: bool = Field(False, description="Only subjects new or changed since the last completed run of the same "
                                                 "purpose and FMR, against everyone.")
    max_expected_false_pairs: float = Field(DEFAULT_MAX_EXPECTED_FALSE_PAIRS, ge=0, le=1e12,
                                            description="Refuse a run expected to report more false pairs than this.")

    def params(self) -> DedupParams:
        return DedupParams(**self.model_dump())


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: str = Field(..., pattern="^(same|different)$", description="same: one person; different: several people.")
    note: str = Field(..., min_length=1, max_length=MAX_NOTE, description="What was checked; recorded in the audit log.")


JobId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")]
ClusterKey = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]


# --- jobs ------------------------------------------------------------------------------------------


def _dedup_job(runner: JobRunner, collection: str, job_id: str) -> Job:
    return runner.jobs.get(job_id, kind=KIND, collection=collection)  # another collection's job reads as missing


# --- routes ----------------------------------------------------------------------------------------


@router.post("/plan", summary="The arithmetic of a run: pairs compared and false pairs to expect (identify)",
             responses=READ)
async def plan(service: ServiceDep, collection: GrantedCollection, principal: IdentifyKey, body: DedupIn) -> dict[str, Any]:
    d = Dedup(gallery_of(service))
    p = body.params()
    out = await service.run(d.plan, collection, purpose=p.purpose, fmr=p.fmr, incremental=p.incremental,
                            max_expected_false_pairs=p.max_expected_false_pairs, kind="store")
    return out.to_dict()


@router.post("/jobs", status_code=202, responses=WRITE,
             summary="Start a de-duplication run as a background job (admin)",
             description="Answers 202 with the job and the run's arithmetic; 422 `expected_false_pairs_over_limit` "
                         "(nothing started) when pairs compared × FMR exceeds `max_expected_false_pairs`; 409 "
                         "`job_active` while the collection has another registry job.")
async def start(service: ServiceDep, collection: GrantedCollection, principal: AdminKey, body: DedupIn) -> dict[str, Any]:
    d = Dedup(gallery_of(service))
    p = body.params()
    runner = service.jobs()

    def admit_and_queue() -> tuple[Any, Job]:
        plan = d.admit(collection, purpose=p.purpose, fmr=p.fmr, incremental=p.incremental,
                       max_expected_false_pairs=p.max_expected_false_pairs, actor=principal.audit_actor())
        return plan, runner.create(KIND, collection, params=p.to_dict(), actor=principal.audit_actor(), total=plan.queried)

    plan_, job = await service.run(admit_and_queue, kind="store", side_effects=True)  # the runner wakes for it
    return {"job": job.to_dict(), "plan": plan_.to_dict()}


@router.get("/jobs/{job_id}", responses=READ, summary="A de-duplication job: status and progress (identify)")
async def job_status(
    service: ServiceDep, collection: GrantedCollection, principal: IdentifyKey, job_id: JobId,
    wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="Wait up to this long for the job to end "
                                                                     "(any process may run it).")] = 0,
) -> dict[str, Any]:
    runner = service.jobs()
    job = await service.run(_dedup_job, runner, collection, job_id, kind="store")
    deadline = SYSTEM.monotonic() + wait_s  # the request's own duration: real time, whatever the service's clock
    while job.active and SYSTEM.monotonic() < deadline:
        await asyncio.sleep(WAIT_POLL_S)
        job = await service.run(_dedup_job, runner, collection, job_id, kind="store")
    return job.to_dict()


@router.delete("/jobs/{job_id}", responses=WRITE, summary="Cancel a de-duplication job (admin)")
async def cancel(service: ServiceDep, collection: GrantedCollection, principal: AdminKey, job_id: JobId) -> dict[str, Any]:
    runner = service.jobs()
    await service.run(_dedup_job, runner, collection, job_id, kind="store")
    return (await service.run(runner.cancel, job_id, kind="store", side_effects=True)).to_dict()


@router.get("/runs", responses=READ, summary="Past de-duplication runs, newest first (identify)")
async def runs(service: ServiceDep, collection: GrantedCollection, principal: IdentifyKey,
               limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict[str, Any]:
    out = await service.run(Dedup(gallery_of(service)).runs, collection, limit=limit, kind="store")
    return {"runs": [r.to_dict() for r in out]}


@router.get("/clusters", responses=READ, response_model=None,
            summary="Clusters found and not yet reviewed, as JSON or CSV (identify; audited)",
            description="Of `run` (default: the latest completed run) and the runs it continues. Subjects erased "
                        "since, or whose consent no longer covers the run's purpose, are left out.")
async def clusters(
    service: ServiceDep, collection: GrantedCollection, principal: IdentifyKey,
    run: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    include_reviewed: Annotated[bool, Query(description="Also reviewed clusters, with the decision.")] = False,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Response | dict[str, Any]:
    rep = await service.run(Dedup(gallery_of(service)).report, collection, run=run, include_reviewed=include_reviewed,
                            actor=principal.audit_actor(), kind="store", side_effects=True)
    if format == "csv":
        return PlainTextResponse(rep.to_csv(), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="dedup-{rep.run.id}.csv"'})
    return rep.to_dict()


@router.post("/clusters/{cluster}/review", responses=WRITE,
             summary="Mark a cluster as one person (same) or different people (identify; audited)")
async def review(service: ServiceDep, collection: GrantedCollection, principal: IdentifyKey, cluster: ClusterKey,
                 body: ReviewIn) -> dict[str, Any]:
    out = await service.run(Dedup(gallery_of(service)).review, collection, cluster, decision=body.decision,
                            note=body.note, actor=principal.audit_actor(), kind="store", side_effects=True)
    return out.to_dict()
