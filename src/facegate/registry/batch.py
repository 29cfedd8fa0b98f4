"""Bulk enrolment: a validated manifest enrolled as one resumable registry job (``jobs.py``).

Each subject's rows go through the gallery's single enrolment (``Gallery.enroll``: quality
gate, face choice, same-person check, consent, optional duplicate search, one ``enroll`` audit
event per subject), so a row is accepted or rejected with exactly the reason codes of single
enrolment. Subjects run on one worker per core.

Idempotent and resumable. Every row handled is recorded in ``registry_batch_items`` under the
key (collection, subject, image sha256) — the sha256 of the very bytes enrolled:

* before a subject's enrolment its rows are written ``pending``; after it, their outcomes;
* a re-run (the job resumed after a crash, or a new job over the same manifest) skips rows that
  have an outcome in this job, and reports as ``skipped`` (``already_enrolled``) a subject's
  image already enrolled from an earlier batch;
* a row still ``pending`` was interrupted between those two writes: it is enrolled again, and
  if the earlier attempt had committed, single enrolment refuses the same photo
  (``duplicate_image``) — reported as accepted then, since the template is there. Either way no
  template is stored twice.

The job ends with one ``enroll.batch`` audit event (job id, manifest sha256, counts).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, and_, delete, func, insert, select, update

from ..errors import FacegateError
from ..gallery.context import collection_in, find_subject
from ..gallery.transaction import StoreTx
from .batch_schema import BatchItemRow
from .batch_sources import (
    MANIFEST_NAME,
    DirectorySource,
    ImageSource,
    StoredSource,
    UploadCipher,
    ZipLimits,
    delete_uploads,
)
from .jobs import Job, JobContext, JobKind
from .manifest import Manifest, ManifestError, ManifestRow, parse

if TYPE_CHECKING:
    from ..gallery import Gallery

KIND = "enroll_batch"
I = cast(Table, BatchItemRow.__table__)  # noqa: E741 - the items table, as transaction.py names its tables
REPORT_FIELDS = ("line", "subject", "image", "image_sha256", "outcome", "reason", "message", "template_id", "flagged",
                 "duplicates")
INTERRUPTED = "enrolled by an earlier attempt of this batch that was interrupted"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BatchSettings:
    """Bounds of a batch (and of an upload to the service); each can be set as
    ``FACEGATE_BATCH_<NAME>`` in the environment (``from_env``)."""

    max_rows: int = 100_000
    max_image_bytes: int = 20 * 2**20
    max_manifest_bytes: int = 32 * 2**20
    max_zip_bytes: int = 2**30
    max_total_bytes: int = 2 * 2**30  # an upload's images, uncompressed
    max_ratio: float = 50.0  # uncompressed / compressed, per zip entry (photos barely compress)
    max_members: int = 200_000
    workers: int = max(1, os.cpu_count() or 1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BatchSettings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"FACEGATE_BATCH_{f.name.upper()}")
            if raw:
                values[f.name] = float(raw) if f.type == "float" else int(raw)
        return cls(**values)

    def zip_limits(self) -> ZipLimits:
        return ZipLimits(self.max_zip_bytes, self.max_image_bytes, self.max_total_bytes, self.max_ratio, self.max_members)


def directory_params(manifest: Path, parsed: Manifest, *, dedup_purpose: str | None, disclose: bool = True) -> dict[str, Any]:
    """The job parameters of a manifest on disk (the CLI): its images are read in place."""
    return {"origin": "directory", "manifest": str(manifest.resolve()), "manifest_sha256": parsed.sha256,
            "rows": len(parsed.rows), "dedup_purpose": dedup_purpose, "disclose": disclose}


def upload_params(manifest_name: str, parsed: Manifest, *, dedup_purpose: str | None, disclose: bool) -> dict[str, Any]:
    """The job parameters of an upload (the service): manifest and images stored with the job."""
    return {"origin": "upload", "manifest_name": manifest_name, "manifest_sha256": parsed.sha256, "rows": len(parsed.rows),
            "dedup_purpose": dedup_purpose, "disclose": disclose}


def validate(gallery: Gallery, collection: str, data: bytes, *, name: str, source: ImageSource,
             settings: BatchSettings, now: dt.datetime) -> Manifest:
    """The whole manifest checked against the collection and the images ``source`` holds
    (ManifestError lists every bad row)."""
    with gallery.store.read() as tx:
        col = collection_in(tx, collection)
    return parse(data, col, now=now, name=name, max_rows=settings.max_rows, file_problem=source.problem)


def _load(gallery: Gallery, job: Job, settings: BatchSettings) -> tuple[Manifest, ImageSource]:
    """The job's manifest (re-read and checked against the sha256 it started with) and images."""
    p = job.params
    with gallery.store.read() as tx:
        row = collection_in(tx, job.collection)
    source: ImageSource
    if p["origin"] == "directory":
        path = Path(p["manifest"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ManifestError(f"the manifest {path.name!r} cannot be read any more: {exc.strerror}", errors=[]) from None
        source = DirectorySource(path.parent, settings.max_image_bytes)
        name = path.name
    else:
        source = StoredSource(gallery.store, UploadCipher(gallery.crypto), job.id)
        data = source.read(MANIFEST_NAME)
        name = p["manifest_name"]
    if hashlib.sha256(data).hexdigest() != p["manifest_sha256"]:
        raise ManifestError("the manifest changed since this batch started; start a new batch", errors=[])
    # Files are checked again row by row as they are read; consent times against the job's start.
    manifest = parse(data, row, now=job.created_at, name=name, max_rows=settings.max_rows)
    return manifest, source


def _finished_lines(gallery: Gallery, job_id: str) -> tuple[set[int], set[int]]:
    with gallery.store.read() as tx:
        rows = tx.execute(select(I.c.line, I.c.outcome).where(I.c.job_id == job_id)).all()
    return {r.line for r in rows if r.outcome != "pending"}, {r.line for r in rows if r.outcome == "pending"}


def _item(job: Job, cid: int, row: ManifestRow, sha: str, outcome: str, now: Any, **extra: Any) -> dict[str, Any]:
    return {"job_id": job.id, "collection_id": cid, "line": row.line, "subject": row.subject, "image": row.image,
            "image_sha256": sha, "outcome": outcome, "reason": extra.get("reason"), "message": extra.get("message"),
            "template_id": extra.get("template_id"), "duplicates": extra.get("duplicates"), "created_at": now}


def _enrol_subject(gallery: Gallery, ctx: JobContext, cid: int, rows: list[ManifestRow], interrupted: set[int],
                   source: ImageSource) -> int:
    """One subject's remaining rows: read and hash, skip what is enrolled, enrol the rest."""
    job = ctx.job
    p = job.params
    clock_now = ctx.jobs.clock.now()
    finals: list[dict[str, Any]] = []
    todo: list[tuple[ManifestRow, str, bytes]] = []
    for r in rows:
        try:
            data = source.read(r.image)
        except FacegateError as exc:
            finals.append(_item(job, cid, r, "", "rejected", clock_now, reason=exc.code, message=exc.message))
            continue
        todo.append((r, hashlib.sha256(data).hexdigest(), data))
    with gallery.store.write() as tx:
        known = dict(tx.execute(select(I.c.image_sha256, I.c.template_id).where(
            I.c.collection_id == cid, I.c.subject == rows[0].subject, I.c.template_id.is_not(None),
            I.c.image_sha256.in_([sha for _r, sha, _d in todo]))).all()) if todo else {}
        fresh = []
        for r, sha, data in todo:
            if sha in known:
                finals.append(_item(job, cid, r, sha, "skipped", clock_now, reason="already_enrolled",
                                    message="this subject's image was enrolled by an earlier batch",
                                    template_id=known[sha]))
            else:
                fresh.append((r, sha, data))
        lines = [r.line for r in rows]
        tx.execute(delete(I).where(I.c.job_id == job.id, I.c.line.in_(lines)))
        items = finals + [_item(job, cid, r, sha, "pending", clock_now) for r, sha, _d in fresh]
        if items:
            tx.execute(insert(I), items)
        _link_subject(tx, job.id, cid, rows)
    if not fresh:
        return len(rows)
    first = fresh[0][0]
    try:
        res = gallery.enroll(job.collection, first.subject, [d for _r, _s, d in fresh], consent=first.consent(),
                             label=first.label, dedup_purpose=p.get("dedup_purpose"),
                             disclose_duplicates=bool(p.get("disclose", True)), actor=job.actor)
    except FacegateError as exc:
        if exc.http_status >= 500:
            raise  # the store or the key, not the row: the job fails (and can be resumed)
        outcomes: list[dict[str, Any]] = [{"outcome": "rejected", "reason": exc.code, "message": exc.message} for _ in fresh]
    else:
        outcomes = []
        for (r, _sha, _d), o in zip(fresh, res.images):
            if not o.accepted and o.reason == "duplicate_image" and r.line in interrupted:
                outcomes.append({"outcome": "accepted", "reason": None, "message": INTERRUPTED})
                continue
            flagged = o.accepted and res.flagged_for_review
            outcomes.append({"outcome": "accepted" if o.accepted else "rejected", "reason": o.reason,
                             "message": o.message, "template_id": o.template_id,
                             "duplicates": [d.to_dict() for d in o.duplicates] if flagged else None})
    with gallery.store.write() as tx:
        for (r, _sha, _d), out in zip(fresh, outcomes):
            tx.execute(update(I).where(I.c.job_id == job.id, I.c.line == r.line).values(
                outcome=out["outcome"], reason=out.get("reason"), message=out.get("message"),
                template_id=out.get("template_id"), duplicates=out.get("duplicates")))
        _link_subject(tx, job.id, cid, rows)
    return len(rows)


def _link_subject(tx: StoreTx, job_id: str, cid: int, rows: list[ManifestRow]) -> None:
    """Point the rows at their subject, if it exists: they are then erased with it."""
    subject = find_subject(tx, cid, rows[0].subject)
    if subject is not None:
        tx.execute(update(I).where(I.c.job_id == job_id, I.c.line.in_([r.line for r in rows])).values(subject_id=subject.id))


def counts(gallery: Gallery, job_id: str) -> dict[str, int]:
    with gallery.store.read() as tx:
        by = dict(tx.execute(select(I.c.outcome, func.count()).where(I.c.job_id == job_id).group_by(I.c.outcome)).all())
        flagged = tx.execute(select(func.count()).where(I.c.job_id == job_id, I.c.duplicates.is_not(None))).scalar()
    return {k: int(by.get(k, 0)) for k in ("accepted", "rejected", "skipped", "pending")} | {"flagged": int(flagged or 0)}


def run_batch(gallery: Gallery, ctx: JobContext, settings: BatchSettings, on_progress: Progress | None = None) -> dict[str, Any]:
    job = ctx.job
    manifest, source = _load(gallery, job, settings)
    with gallery.store.read() as tx:
        cid = collection_in(tx, job.collection).id
    finished, interrupted = _finished_lines(gallery, job.id)
    total = len(manifest.rows)
    done = len(finished)
    ctx.progress(done, total, force=True)
    if on_progress is not None:
        on_progress(done, total)
    groups = [(s, [r for r in rows if r.line not in finished]) for s, rows in manifest.by_subject().items()]
    groups = [(s, rows) for s, rows in groups if rows]
    with ThreadPoolExecutor(settings.workers, thread_name_prefix="facegate-batch") as pool:
        running: set[Future[int]] = set()
        pending = iter(groups)
        try:
            while True:
                while len(running) < 2 * settings.workers and not ctx.cancelled():
                    nxt = next(pending, None)
                    if nxt is None:
                        break
                    running.add(pool.submit(_enrol_subject, gallery, ctx, cid, nxt[1], interrupted, source))
                if not running:
                    break
                finished_now, running = wait(running, return_when=FIRST_COMPLETED)
                for f in finished_now:
                    done += f.result()
                ctx.progress(done, total)
                if on_progress is not None:
                    on_progress(done, total)
        finally:
            for f in running:
                f.cancel()
    summary = {"rows": total, "subjects": len(manifest.by_subject()), "manifest_sha256": manifest.sha256,
               **counts(gallery, job.id)}
    with gallery.store.write() as tx:
        gallery.audit.append(tx, actor=job.actor, action="enroll.batch", now=ctx.jobs.clock.now(),
                             collection=job.collection, decision="cancelled" if ctx.cancelled() else "completed",
                             details={"job": job.id, **summary, "dedup_purpose": job.params.get("dedup_purpose")})
    return summary


def batch_kind(gallery: Gallery, settings: BatchSettings | None = None, on_progress: Progress | None = None) -> JobKind:
    """The ``enroll_batch`` job kind over ``gallery``; uploads are deleted when the job ends."""
    s = settings or BatchSettings()
    return JobKind(lambda ctx: run_batch(gallery, ctx, s, on_progress), cleanup=_drop_uploads)


def _drop_uploads(tx: StoreTx, job: Job) -> None:
    delete_uploads(tx, job.id)


# --- the per-row report -----------------------------------------------------------------------------


def report(gallery: Gallery, job_id: str, *, disclose: bool = True) -> Iterator[dict[str, Any]]:
    """The job's rows in manifest order. ``disclose=False`` (a reader not allowed to identify)
    keeps the duplicate flag and leaves out who was matched."""
    with gallery.store.read() as tx:
        rows = tx.execute(select(I).where(and_(I.c.job_id == job_id)).order_by(I.c.line)).all()
    for r in rows:
        yield {"line": r.line, "subject": r.subject, "image": r.image, "image_sha256": r.image_sha256,
               "outcome": r.outcome, "reason": r.reason, "message": r.message, "template_id": r.template_id,
               "flagged": r.duplicates is not None, "duplicates": list(r.duplicates or []) if disclose else []}


def report_csv(rows: Iterator[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=REPORT_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "duplicates": ";".join(f"{d['subject']}:{d['score']:.4f}" for d in r["duplicates"])})
    return buf.getvalue()


def report_json(rows: Iterator[dict[str, Any]]) -> str:
    return json.dumps(list(rows), ensure_ascii=False)
