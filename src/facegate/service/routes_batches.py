"""Bulk enrolment as an asynchronous job: ``/v1/collections/{c}/batches``.

POST a manifest and a zip of the images it names (multipart: ``manifest``, ``images``, optional
``dedup_purpose``); the whole manifest is validated against the zip first (422 listing every bad
row), then the job is queued and runs in the background (one registry job per collection, 409
otherwise). Poll it, fetch its per-row report (CSV or JSON), or cancel it. Every route needs the
enroll scope and the collection granted; who a flagged face matched is shown only to a key with
the identify scope, as for single enrolment.

The uploaded images are kept only while the job needs them, encrypted under a key derived from
the master key, in the database (so whichever ``facegate serve`` process resumes the job can
read them), and deleted in the transaction that ends the job, whatever its outcome.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import PlainTextResponse
from starlette.datastructures import UploadFile

from ..gallery.transaction import StoreTx
from ..registry.batch import KIND, BatchSettings, report, report_csv, report_json, upload_params, validate
from ..registry.batch_sources import (
    UploadCipher,
    UploadTooLargeError,
    ZipUpload,
    store_uploads,
)
from ..registry.jobs import Job
from ..registry.manifest import ManifestError
from .auth import Principal
from .backend import gallery_of
from .core import Service
from .deps import EnrollKey, GrantedCollection, ServiceDep
from .errors import InvalidRequestError, UnsupportedMediaTypeError
from .schemas import problem_responses

router = APIRouter(prefix="/v1", tags=["batches"])
JobId = Annotated[str, Path(min_length=32, max_length=32, pattern=r"^[0-9a-f]{32}$", description="The batch job's id.")]
CREATE = problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
READ = problem_responses(401, 403, 404, 429, 503)


def _out(job: Job) -> dict[str, Any]:
    out = job.to_dict()
    out["params"] = {k: job.params.get(k) for k in ("manifest_name", "manifest_sha256", "rows", "dedup_purpose")}
    return out


def _batch_of(service: Service, collection: str, job_id: str) -> Job:
    return service.jobs().jobs.get(job_id, kind=KIND, collection=collection)


async def _form(request: Request, limits: BatchSettings) -> tuple[str, bytes, bytes, str | None]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        raise UnsupportedMediaTypeError("send the manifest and the zip of images as multipart/form-data",
                                        content_type=ctype or None)
    try:
        form = await request.form(max_files=2, max_fields=4, max_part_size=limits.max_manifest_bytes)
    except Exception as exc:  # noqa: BLE001 - malformed multipart of any kind is the client's fault
        raise InvalidRequestError(f"malformed multipart body: {exc}") from None
    try:
        manifest, images, dedup = form.get("manifest"), form.get("images"), form.get("dedup_purpose")
        if not isinstance(manifest, UploadFile) or not isinstance(images, UploadFile):
            raise InvalidRequestError("send two files: manifest (CSV or JSON Lines) and images (a zip)")
        data = await manifest.read(limits.max_manifest_bytes + 1)
        if len(data) > limits.max_manifest_bytes:
            raise UploadTooLargeError(f"the manifest is larger than {limits.max_manifest_bytes} bytes",
                                      limit=limits.max_manifest_bytes)
        archive = await images.read(limits.max_zip_bytes + 1)
        name = manifest.filename or "manifest"
    finally:
        await form.close()
    if dedup is not None and not isinstance(dedup, str):
        raise InvalidRequestError("dedup_purpose is a form value")
    return name, data, archive, (dedup or None)


def _create(service: Service, principal: Principal, collection: str, name: str, data: bytes, archive: bytes,
            dedup_purpose: str | None, limits: BatchSettings) -> Job:
    upload = ZipUpload(archive, limits.zip_limits())
    gallery = gallery_of(service)
    parsed = validate(gallery, collection, data, name=name, source=upload, settings=limits, now=service.clock.now())
    if dedup_purpose is not None and dedup_purpose not in gallery.get_collection(collection).purposes:
        raise ManifestError(f"dedup_purpose {dedup_purpose!r} is not one of the collection's purposes", errors=[])
    wanted = sorted({r.image for r in parsed.rows})  # entries the manifest does not name are never stored
    cipher = UploadCipher(gallery.crypto)

    def keep(tx: StoreTx, job: Job) -> None:  # same transaction as the job: a refused job leaves no upload
        store_uploads(tx, cipher, job.id, data, upload, wanted)

    params = upload_params(name, parsed, dedup_purpose=dedup_purpose, disclose=principal.has("identify"))
    return service.jobs().create(KIND, collection, params=params, actor=principal.audit_actor(),
                                   total=len(parsed.rows), prepare=keep)


@router.post("/collections/{collection}/batches", status_code=202, responses=CREATE,
             summary="Start a bulk enrolment from a manifest and a zip of images (enroll)")
async def create_batch(request: Request, service: ServiceDep, collection: GrantedCollection,
                       principal: EnrollKey) -> dict[str, Any]:
    limits = service.batch_settings
    name, data, archive, dedup = await _form(request, limits)
    job = await service.run(_create, service, principal, collection, name, data, archive, dedup, limits,
                            kind="batch_create", side_effects=True)
    return _out(job)


@router.get("/collections/{collection}/batches", responses=READ, summary="This collection's batches, newest first (enroll)")
async def list_batches(service: ServiceDep, collection: GrantedCollection, principal: EnrollKey,
                       limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    # partial: ``service.run`` takes ``kind`` (its worker-pool class) for itself.
    jobs = await service.run(functools.partial(service.jobs().jobs.list, collection=collection, kind=KIND, limit=limit))
    return {"batches": [_out(j) for j in jobs]}


@router.get("/collections/{collection}/batches/{job_id}", responses=READ, summary="A batch's status and progress (enroll)")
async def get_batch(service: ServiceDep, collection: GrantedCollection, principal: EnrollKey, job_id: JobId) -> dict[str, Any]:
    return _out(await service.run(_batch_of, service, collection, job_id))


@router.get("/collections/{collection}/batches/{job_id}/report", responses=READ,
            summary="A batch's per-row outcomes as JSON or CSV (enroll)")
async def get_report(service: ServiceDep, collection: GrantedCollection, principal: EnrollKey, job_id: JobId,
                     format: Annotated[str, Query(pattern="^(json|csv)$")] = "json") -> Any:
    def build() -> str:
        _batch_of(service, collection, job_id)
        rows = report(gallery_of(service), job_id, disclose=principal.has("identify"))
        return report_csv(rows) if format == "csv" else report_json(rows)

    text = await service.run(build)
    media = "text/csv" if format == "csv" else "application/json"
    return PlainTextResponse(text, media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="batch-{job_id}.{format}"'})


@router.delete("/collections/{collection}/batches/{job_id}", status_code=202, responses=READ,
               summary="Cancel a batch: a queued one ends now, a running one at its next row (enroll)")
async def cancel_batch(service: ServiceDep, collection: GrantedCollection, principal: EnrollKey,
                       job_id: JobId) -> dict[str, Any]:
    def cancel() -> Job:
        _batch_of(service, collection, job_id)
        return service.jobs().cancel(job_id)

    return _out(await service.run(cancel, side_effects=True))
