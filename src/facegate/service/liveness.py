"""Liveness in the service: the session store on the gallery's database, the engine bounded for
frame checks, where decisions are audited, and the one typed call verify/enrol/identify make to
use a passed session (``ServiceLiveness.take_frame``). The routes are ``routes_liveness``."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..clock import SYSTEM, Clock
from ..engine import FaceEngine
from ..gallery import Gallery
from ..gallery.crypto import Crypto
from ..gallery.store import Store
from ..liveness.challenge import InMemorySessionStore, LivenessSession, SessionOutcome, SessionStore
from ..liveness.db_store import DatabaseSessionStore
from ..liveness.errors import LivenessError
from ..liveness.flow import LivenessSettings, owner_of, take_best_frame
from ..results import Embedding, Face
from .auth import Principal
from .backend import engine_of

if TYPE_CHECKING:
    from .core import Service

log = logging.getLogger("facegate.service")

# Where one liveness audit record goes: (the caller, the record of codes and counts).
LivenessAudit = Callable[[Principal, dict[str, Any]], None]


class GalleryHolder(Protocol):
    """Whatever holds the gallery that is open now (the service; it opens at startup and reopens
    on restart, after the routes are built)."""

    @property
    def gallery(self) -> Gallery | None: ...


class BoundedFrameEngine:
    """The service's engine as the liveness checker uses it (``detect``, ``embed_faces``,
    ``threshold``, ``model_id``), with at most ``limit`` calls at once across every liveness
    request, so frame checks cannot take more CPU than the worker pool allows. The engine is
    looked up on each call: the service loads it at startup, after the routes are built."""

    def __init__(self, service: Service, limit: int) -> None:
        self._service = service
        self._sem = threading.BoundedSemaphore(limit)

    def _engine(self) -> FaceEngine:
        return engine_of(self._service)

    @property
    def model_id(self) -> str:
        return self._engine().model_id

    def detect(self, image: np.ndarray) -> list[Face]:
        with self._sem:
            return self._engine().detect(image)

    def embed_faces(self, faces: Sequence[Face]) -> list[Embedding]:
        with self._sem:
            return self._engine().embed_faces(faces)

    def threshold(self, fmr: float) -> float:
        with self._sem:
            return self._engine().threshold(fmr)


STORE_ENV = "FACEGATE_LIVENESS_STORE"  # "database" (default) or "memory"


def make_store(service: GalleryHolder, kind: str | None = None, clock: Clock = SYSTEM) -> SessionStore:
    """The liveness session store for the service: ``database`` (default) keeps sessions and
    replay digests in the gallery's database, shared by every process on it; ``memory`` keeps
    them in this process only (lost on restart; one worker process only). ``clock`` is when
    sessions and results expire."""
    kind = (kind or os.environ.get(STORE_ENV) or "database").strip().lower()
    if kind == "memory":
        return InMemorySessionStore(clock=clock)
    if kind != "database":
        raise ValueError(f"{STORE_ENV} must be 'database' or 'memory', not {kind!r}")
    return GalleryDatabaseSessionStore(service, clock=clock)


RESULT_SWEEP_S = 5.0  # how often expired (unused) liveness results are deleted from the database


class GalleryDatabaseSessionStore:
    """A ``SessionStore``: ``DatabaseSessionStore`` on whatever database the service's gallery has
    open (the gallery opens at startup, after the routes are built, and reopens on restart), with
    the gallery's master key (``gallery.crypto``) for the passed sessions' encrypted results.
    Without a gallery with a SQL store and a master key (a library build, a test double) it falls
    back to one in-memory store.

    While bound, a daemon thread deletes expired results every ``RESULT_SWEEP_S`` seconds, so a
    result nobody uses is gone within seconds of its 120 s lifetime even when no other request
    arrives (every process sharing the database runs one; the DELETE is idempotent);
    ``sweep_once`` runs one sweep now. ``clock`` is the time of every store it makes."""

    def __init__(self, service: GalleryHolder, clock: Clock = SYSTEM) -> None:
        self._service = service
        self._clock = clock
        self._lock = threading.Lock()
        self._bound: DatabaseSessionStore | None = None
        self._fallback: InMemorySessionStore | None = None
        self._sweeper: threading.Thread | None = None

    def _current_store(self) -> tuple[Store, Crypto] | None:
        gallery = self._service.gallery
        return None if gallery is None else (gallery.store, gallery.crypto)

    @property
    def target(self) -> SessionStore:
        """The store sessions go to now: the open gallery's database, or the in-memory fallback."""
        current = self._current_store()
        with self._lock:
            if current is None:
                if self._fallback is None:
                    log.warning("no gallery database: liveness sessions are kept in this process's memory")
                    self._fallback = InMemorySessionStore(clock=self._clock)
                return self._fallback
            st, crypto = current
            if self._bound is None or self._bound.store is not st:
                self._bound = DatabaseSessionStore(st, crypto, clock=self._clock)
                self._start_sweeper()
            return self._bound

    def add(self, session: LivenessSession) -> None:
        self.target.add(session)

    def get(self, session_id: str, owner: str | None = None, now: float | None = None) -> LivenessSession:
        return self.target.get(session_id, owner, now)

    def claim(self, session_id: str, owner: str | None = None, now: float | None = None) -> LivenessSession:
        return self.target.claim(session_id, owner, now)

    def finish(self, session_id: str, outcome: SessionOutcome) -> None:
        self.target.finish(session_id, outcome)

    def consume(self, session_id: str, owner: str | None = None, now: float | None = None) -> SessionOutcome:
        return self.target.consume(session_id, owner, now)

    def remember_frames(self, session_id: str, digests: Iterable[str], now: float | None = None) -> set[str]:
        return self.target.remember_frames(session_id, digests, now)

    def purge(self, now: float | None = None) -> int:
        return self.target.purge(now)

    def _start_sweeper(self) -> None:
        if self._sweeper is not None and self._sweeper.is_alive():
            return
        ref = weakref.ref(self)
        self._sweeper = threading.Thread(target=_sweep, args=(ref,), name="facegate-liveness-sweep", daemon=True)
        self._sweeper.start()

    def sweep_once(self) -> int:
        """Delete the results expired by the store's clock now, through the store bound to the
        gallery that is open (nothing when the gallery is closed or was reopened and not used
        since); returns how many."""
        current = self._current_store()
        bound = self._bound
        if bound is None or current is None or bound.store is not current[0]:
            return 0
        return bound.purge_results()


def _sweep(ref: weakref.ref[GalleryDatabaseSessionStore]) -> None:
    """The sweeper thread: runs while its store object exists (weak reference: no leak)."""
    stop = threading.Event()
    while not stop.wait(RESULT_SWEEP_S):
        owner = ref()
        if owner is None:
            return
        try:
            owner.sweep_once()
        except Exception:  # noqa: BLE001 - a closed or unreachable database: try again later
            log.debug("liveness result sweep failed", exc_info=True)
        del owner


class ServiceLiveness:
    """What the liveness routes and verify/enrol/identify share, one per service
    (``service.liveness``). ``store``, ``settings`` and ``audit`` may be replaced before the first
    request (an embedding application, tests). Sessions and results expire by the service's
    clock (``clock``)."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self.clock: Clock = service.clock
        self.store: SessionStore = make_store(service, clock=self.clock)
        self.engine = BoundedFrameEngine(service, service.settings.workers)
        self.settings = LivenessSettings()
        self.audit: LivenessAudit = self._audit_decision

    def take_frame(self, session_id: str, principal: Principal, purpose: str | None = None) -> np.ndarray:
        """verify/enrol/identify with a passed session: consume it (once, from any process on the
        database) and audit the use or the refusal — session id, caller, purpose, code; never the
        image. Blocking: run it on the worker pool."""
        try:
            image = take_best_frame(self.store, session_id, owner=owner_of(principal))
        except LivenessError as exc:
            self._audit_use(principal, session_id, purpose, "refused", exc.code)
            raise
        self._audit_use(principal, session_id, purpose, "used", None)
        return image

    def _audit_decision(self, principal: Principal, record: dict[str, Any]) -> None:
        service = self._service
        event = str(record.get("event") or "liveness.decision")
        action = event if event.startswith("liveness") else f"liveness.{event}"
        decision = record.get("decision")
        if decision is None and "live" in record:
            decision = "live" if record["live"] else "not_live"
        details = {k: v for k, v in record.items() if k not in ("event", "actor", "decision", "live")}
        if decision:
            service.metrics.decision("liveness", str(decision))
        if service.gallery is None:
            log.info("liveness %s", action, extra={"decision": decision})
            return
        try:
            service.gallery.audit_record(actor=principal.audit_actor(), action=action[:64].lower(), subjects=(),
                                         decision=None if decision is None else str(decision), details=_small(details))
        except Exception:  # noqa: BLE001 - never fail a liveness answer for bookkeeping
            log.exception("could not write the liveness audit record")

    def _audit_use(self, principal: Principal, session_id: str, purpose: str | None, decision: str, code: str | None) -> None:
        gallery = self._service.gallery
        if gallery is None:
            return
        details: dict[str, Any] = {"session_id": str(session_id)[:64]}
        if code:
            details["code"] = code
        try:
            gallery.audit_record(actor=principal.audit_actor(),
                                 action="liveness.used" if decision == "used" else "liveness.use_refused",
                                 subjects=(), purpose=str(purpose)[:64] if purpose else None, decision=decision, details=details)
        except Exception:  # noqa: BLE001 - never fail the request for bookkeeping
            log.exception("could not write the liveness use audit record")


def _small(details: dict[str, Any]) -> dict[str, Any]:
    """Audit details are capped (counts and codes only): drop anything bulky."""
    out: dict[str, Any] = {}
    for k, v in details.items():
        if len(repr(v)) <= 600:
            out[k] = v
    while out and len(repr(out)) > 3500:
        out.pop(next(reversed(out)))
    return out
