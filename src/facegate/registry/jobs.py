"""Background registry jobs (bulk enrolment, de-duplication): one typed job store and runner.

A job is a row in ``registry_jobs`` in the gallery database, so the CLI and every
``facegate serve`` process (SQLite or PostgreSQL) see the same jobs:

    queued ──claim──► running ──► succeeded | failed | cancelled
       └──cancel────────────────────────────────────► cancelled

* At most one *active* (queued or running) job per collection, whatever its kind: the
  ``active_collection`` column is set only while a job is active and is unique, so the
  database refuses a second one (``JobActiveError``, HTTP 409) even between processes.
* A running job is held under a lease (``owner``, ``lease_expires_at``) that the runner renews
  whenever the job reports progress. A job whose lease expired, or whose owner is a process on
  this host that no longer exists, is claimed again by the next runner: a restarted
  ``facegate serve`` (or a re-run CLI) resumes it. Job functions must therefore be resumable
  (skip what an earlier attempt committed).
* Cancelling a queued job ends it at once; a running one is asked to stop (``cancelled()``
  turns true) and ends as ``cancelled`` when its function returns.

How a new kind plugs in::

    def run_thing(ctx: JobContext) -> dict:           # the job's result (JSON), e.g. counts
        todo = ...                                    # from ctx.job.params
        for i, item in enumerate(todo):
            if ctx.cancelled():
                break                                 # ends as "cancelled"
            ...                                       # commit item i (idempotently)
            ctx.progress(i + 1, len(todo))            # also renews the lease
        return {"done": ...}

    runner = JobRunner(store, {"thing": JobKind(run_thing, cleanup=drop_uploads)})
    job = runner.jobs.create("thing", "staff", params={...}, actor="alice")
    runner.run(job.id)                                # here and now (the CLI), or
    runner.start()                                    # a background thread claiming queued jobs (the service)

``cleanup(tx, job)`` runs in the transaction that ends the job, whatever the outcome (also for
a job cancelled before it ran): the place to delete what only the job needed (uploads).
A function that raises ``FacegateError`` ends the job ``failed`` with that error's code and
message; any other exception ends it ``failed`` with ``internal_error`` (logged).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import JSON, BigInteger, Boolean, String, Table, Text, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from ..clock import SYSTEM, Clock
from ..errors import FacegateError
from ..gallery.errors import ConflictError, GalleryError, NotFoundError
from ..gallery.ports import TemplateStore
from ..gallery.schema import Base, UTCDateTime
from ..gallery.transaction import StoreTx

log = logging.getLogger("facegate.registry")

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE: tuple[Status, ...] = ("queued", "running")
FINISHED: tuple[Status, ...] = ("succeeded", "failed", "cancelled")
DEFAULT_LEASE = dt.timedelta(seconds=60)


class JobRow(Base):
    """One registry job. ``active_collection`` equals ``collection`` while the job is queued or
    running and is NULL afterwards; its unique constraint is the one-active-job-per-collection rule."""

    __tablename__ = "registry_jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    collection: Mapped[str] = mapped_column(String(128), index=True)
    active_collection: Mapped[str | None] = mapped_column(String(128), nullable=True, unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    done: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[dict] = mapped_column(JSON)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # {"code", "message"}
    actor: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean)
    owner: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(BigInteger)


J = cast(Table, JobRow.__table__)


class JobActiveError(ConflictError):
    """The collection already has a queued or running registry job (one at a time)."""

    code = "job_active"


class JobNotFoundError(NotFoundError):
    code = "job_not_found"


class JobFailedError(GalleryError):
    """A job ended ``failed``; ``error`` holds its code and message."""

    code = "job_failed"
    http_status = 500


class JobLeaseLostError(ConflictError):
    """This runner's lease on the job expired and another runner took the job over."""

    code = "job_lease_lost"


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    collection: str
    status: Status
    done: int
    total: int
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    actor: str
    created_at: dt.datetime
    updated_at: dt.datetime
    cancel_requested: bool
    attempts: int

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "collection": self.collection, "status": self.status,
                "done": self.done, "total": self.total, "result": self.result, "error": self.error,
                "actor": self.actor, "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
                "cancel_requested": self.cancel_requested, "attempts": self.attempts}


def _job(row: Any) -> Job:
    return Job(row.id, row.kind, row.collection, row.status, int(row.done), int(row.total), dict(row.params or {}),
               None if row.result is None else dict(row.result), None if row.error is None else dict(row.error),
               row.actor, row.created_at, row.updated_at, bool(row.cancel_requested), int(row.attempts))


def this_process() -> str:
    """A runner owner id: host, pid and a random part (``host:pid:hex``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_gone(owner: str | None) -> bool:
    """True when ``owner`` names a process on this host that no longer runs (it was killed):
    its job can be taken over without waiting for the lease to expire."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, another user's
        return False
    return False


class JobStore:
    """Jobs in the gallery database. Thread- and process-safe (every change is one write
    transaction, serialised by the store)."""

    def __init__(self, store: TemplateStore, *, clock: Clock = SYSTEM) -> None:
        self.store = store
        self.clock = clock

    def create(self, kind: str, collection: str, *, params: Mapping[str, Any], actor: str, total: int = 0,
               prepare: Callable[[StoreTx, Job], None] | None = None) -> Job:
        """A new queued job; JobActiveError if the collection has an active one. ``prepare(tx,
        job)`` runs in the same transaction (e.g. storing the job's uploads), so a refused
        job leaves nothing behind."""
        now = self.clock.now()
        values = dict(id=uuid.uuid4().hex, kind=kind, collection=collection, active_collection=collection, status="queued",
                      done=0, total=total, params=dict(params), result=None, error=None, actor=actor, created_at=now,
                      updated_at=now, cancel_requested=False, owner=None, lease_expires_at=None, attempts=0)
        try:
            with self.store.write() as tx:
                busy = tx.execute(select(J.c.id, J.c.kind).where(J.c.active_collection == collection)).first()
                if busy is not None:
                    raise self._active_error(collection, busy.id, busy.kind)
                tx.execute(insert(J).values(**values))
                job = _job(tx.execute(select(J).where(J.c.id == values["id"])).one())
                if prepare is not None:
                    prepare(tx, job)
        except IntegrityError:  # another process inserted one between our check and insert
            raise self._active_error(collection, None, None) from None
        return job

    @staticmethod
    def _active_error(collection: str, job_id: str | None, kind: str | None) -> JobActiveError:
        return JobActiveError(f"collection {collection!r} already has a registry job running or queued"
                              + (f" ({kind} {job_id}); wait for it or cancel it" if job_id else ""),
                              collection=collection, job=job_id)

    def get(self, job_id: str, *, kind: str | None = None, collection: str | None = None) -> Job:
        """The job; JobNotFoundError also when it is of another ``kind`` or ``collection`` than
        asked, so that a caller scoped to one collection cannot tell another's jobs exist."""
        with self.store.read() as tx:
            row = tx.execute(select(J).where(J.c.id == job_id)).first()
        job = None if row is None else _job(row)
        if job is None or kind not in (None, job.kind) or collection not in (None, job.collection):
            where = f" in collection {collection!r}" if collection is not None else ""
            raise JobNotFoundError(f"no {kind or 'registry'} job {job_id!r}{where}", job=job_id)
        return job

    def active(self, collection: str) -> Job | None:
        with self.store.read() as tx:
            row = tx.execute(select(J).where(J.c.active_collection == collection)).first()
        return None if row is None else _job(row)

    def list(self, *, collection: str | None = None, kind: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first."""
        q = select(J).order_by(J.c.created_at.desc(), J.c.id).limit(limit)
        if collection is not None:
            q = q.where(J.c.collection == collection)
        if kind is not None:
            q = q.where(J.c.kind == kind)
        with self.store.read() as tx:
            return [_job(r) for r in tx.execute(q)]

    def cancel(self, job_id: str, cleanup: Callable[[StoreTx, Job], None] | None = None) -> Job:
        """Cancel: a queued job ends now (``cleanup`` runs with it), a running one is asked to
        stop. A finished job is returned unchanged."""
        now = self.clock.now()
        with self.store.write() as tx:
            row = tx.execute(select(J).where(J.c.id == job_id)).first()
            if row is None:
                raise JobNotFoundError(f"no registry job {job_id!r}", job=job_id)
            if row.status == "queued":
                tx.execute(update(J).where(J.c.id == job_id).values(status="cancelled", active_collection=None,
                                                                     cancel_requested=True, updated_at=now))
            elif row.status == "running":
                tx.execute(update(J).where(J.c.id == job_id).values(cancel_requested=True, updated_at=now))
            job = _job(tx.execute(select(J).where(J.c.id == job_id)).one())
            if row.status == "queued" and cleanup is not None:
                cleanup(tx, job)
        return job

    # --- used by the runner -----------------------------------------------------------------------

    def claim(self, owner: str, kinds: Sequence[str], lease: dt.timedelta, job_id: str | None = None) -> Job | None:
        """Take the oldest claimable job of ``kinds`` (or ``job_id``): queued, or running under
        an expired lease or a dead owner. Returns it running under ``owner``, or None."""
        now = self.clock.now()
        q = select(J).where(J.c.kind.in_(list(kinds)), J.c.status.in_(ACTIVE)).order_by(J.c.created_at, J.c.id)
        if job_id is not None:
            q = q.where(J.c.id == job_id)

        def free(row: Any) -> bool:
            return row.status == "queued" or row.lease_expires_at is None or row.lease_expires_at <= now \
                or owner_gone(row.owner)

        with self.store.read() as tx:  # the idle poll reads only: no write lock taken every second
            if not any(free(row) for row in tx.execute(q)):
                return None
        with self.store.write() as tx:
            for row in tx.execute(q).all():
                if not free(row):
                    continue
                if row.status == "running":
                    log.warning("resuming registry job %s (%s): its owner %s stopped", row.id, row.kind, row.owner)
                tx.execute(update(J).where(J.c.id == row.id).values(
                    status="running", owner=owner, lease_expires_at=now + lease, updated_at=now, attempts=row.attempts + 1))
                return _job(tx.execute(select(J).where(J.c.id == row.id)).one())
        return None

    def heartbeat(self, job_id: str, owner: str, lease: dt.timedelta, done: int | None, total: int | None) -> bool:
        """Renew the lease (and record progress); returns whether a cancel was requested.
        JobLeaseLostError if another runner holds the job now."""
        now = self.clock.now()
        values: dict[str, Any] = {"lease_expires_at": now + lease, "updated_at": now}
        if done is not None:
            values["done"] = done
        if total is not None:
            values["total"] = total
        with self.store.write() as tx:
            n = tx.execute(update(J).where(J.c.id == job_id, J.c.owner == owner, J.c.status == "running")
                           .values(**values)).rowcount
            if n != 1:
                raise JobLeaseLostError(f"registry job {job_id} was taken over by another runner", job=job_id)
            return bool(tx.execute(select(J.c.cancel_requested).where(J.c.id == job_id)).scalar())

    def finish(self, job_id: str, owner: str, status: Status, *, result: dict[str, Any] | None = None,
               error: dict[str, Any] | None = None, cleanup: Callable[[StoreTx, Job], None] | None = None) -> Job:
        now = self.clock.now()
        with self.store.write() as tx:
            n = tx.execute(update(J).where(J.c.id == job_id, J.c.owner == owner, J.c.status == "running").values(
                status=status, result=result, error=error, active_collection=None, owner=None, lease_expires_at=None,
                updated_at=now)).rowcount
            if n != 1:
                raise JobLeaseLostError(f"registry job {job_id} was taken over by another runner", job=job_id)
            job = _job(tx.execute(select(J).where(J.c.id == job_id)).one())
            if cleanup is not None:
                cleanup(tx, job)
        return job

    def release(self, job_id: str, owner: str) -> None:
        """Give a running job back (the process is stopping): it is claimable at once."""
        with self.store.write() as tx:
            tx.execute(update(J).where(J.c.id == job_id, J.c.owner == owner, J.c.status == "running")
                       .values(status="queued", owner=None, lease_expires_at=None, updated_at=self.clock.now()))


# --- the runner -------------------------------------------------------------------------------------


class JobStopping(Exception):  # noqa: N818 - a signal, not an error: the runner is stopping
    """Raised from ``progress`` when the runner is stopping: the job is released, not ended."""


@dataclass(frozen=True)
class JobKind:
    """A kind of job: ``run(ctx) -> result`` and an optional ``cleanup(tx, job)`` run in the
    transaction that ends the job (any outcome)."""

    run: Callable[[JobContext], dict[str, Any]]
    cleanup: Callable[[StoreTx, Job], None] | None = None


class JobContext:
    """What a running job function gets: the job, ``progress(done, total)`` (records progress
    and renews the lease, at most every ``interval_s`` unless forced) and ``cancelled()``."""

    def __init__(self, jobs: JobStore, job: Job, owner: str, lease: dt.timedelta, stopping: threading.Event,
                 interval_s: float = 0.5) -> None:
        self.jobs = jobs
        self.job = job
        self._owner = owner
        self._lease = lease
        self._stopping = stopping
        self._interval = interval_s
        self._last = -1e18
        self._cancel = job.cancel_requested

    def progress(self, done: int, total: int | None = None, *, force: bool = False) -> None:
        if self._stopping.is_set():
            raise JobStopping()
        t = self.jobs.clock.monotonic()
        if force or t - self._last >= self._interval or (total is not None and done >= total):
            self._cancel = self.jobs.heartbeat(self.job.id, self._owner, self._lease, done, total) or self._cancel
            self._last = t

    def cancelled(self) -> bool:
        """Whether the job was asked to stop (read with the last progress report)."""
        return self._cancel


class JobRunner:
    """Runs jobs of the given kinds: ``run(job_id)`` here and now, or ``start()`` a thread that
    claims queued (and orphaned) jobs until ``stop()``, which gives a running job back."""

    def __init__(self, store: TemplateStore, kinds: Mapping[str, JobKind], *, clock: Clock = SYSTEM,
                 lease: dt.timedelta = DEFAULT_LEASE, poll_s: float = 1.0, owner: str | None = None) -> None:
        self.jobs = JobStore(store, clock=clock)
        self.kinds = dict(kinds)
        self.lease = lease
        self.poll_s = poll_s
        self.owner = owner or this_process()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def create(self, kind: str, collection: str, *, params: Mapping[str, Any], actor: str, total: int = 0,
               prepare: Callable[[StoreTx, Job], None] | None = None) -> Job:
        job = self.jobs.create(kind, collection, params=params, actor=actor, total=total, prepare=prepare)
        self._wake.set()
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        kind = self.kinds.get(job.kind)
        return self.jobs.cancel(job_id, kind.cleanup if kind is not None else None)

    def run(self, job_id: str) -> Job:
        """Claim ``job_id`` and run it to its end in this thread; the job as it ended.
        JobActiveError if a live runner holds it."""
        job = self.jobs.claim(self.owner, list(self.kinds), self.lease, job_id=job_id)
        if job is None:
            current = self.jobs.get(job_id)
            if current.active:
                raise JobActiveError(f"registry job {job_id} is being run by another process", job=job_id,
                                     collection=current.collection)
            return current
        return self._execute(job)

    def run_once(self) -> Job | None:
        """Claim and run one claimable job, if any."""
        job = self.jobs.claim(self.owner, list(self.kinds), self.lease)
        return None if job is None else self._execute(job)

    def _execute(self, job: Job) -> Job:
        kind = self.kinds[job.kind]
        ctx = JobContext(self.jobs, job, self.owner, self.lease, self._stopping)
        try:
            result = kind.run(ctx)
        except KeyboardInterrupt:  # Ctrl-C: claimable again at once, by this command re-run or a service
            self.jobs.release(job.id, self.owner)
            raise
        except JobLeaseLostError:
            log.warning("registry job %s was taken over by another runner; this one stops", job.id)
            return self.jobs.get(job.id)
        except Exception as exc:  # noqa: BLE001 - a job's failure ends the job, not the runner
            if isinstance(exc, JobStopping) or self._stopping.is_set():
                # The process is stopping (what broke may be the store closing under the job):
                # give the job back to be resumed rather than fail it.
                self.jobs.release(job.id, self.owner)
                return self.jobs.get(job.id)
            if isinstance(exc, FacegateError):
                error = {"code": exc.code, "message": exc.message}
            else:
                log.exception("registry job %s failed", job.id)
                error = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
            return self.jobs.finish(job.id, self.owner, "failed", error=error, cleanup=kind.cleanup)
        status: Status = "cancelled" if ctx.cancelled() or self.jobs.get(job.id).cancel_requested else "succeeded"
        return self.jobs.finish(job.id, self.owner, status, result=result, cleanup=kind.cleanup)

    # --- background thread (the service) -----------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="facegate-registry-jobs", daemon=True)
        self._thread.start()

    @property
    def stopping(self) -> threading.Event:
        """Set once ``stop()`` was called (read-only use)."""
        return self._stopping

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop claiming; a running job is given back at its next progress report."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                ran = self.run_once()
            except FacegateError:  # e.g. the store briefly unavailable: try again at the next poll
                log.warning("registry job runner: claiming failed", exc_info=True)
                ran = None
            if ran is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()
