"""Mount the liveness endpoints (issue 5, ``facegate.liveness.api``) on the service, with the
service's engine, API-key auth, audit log and worker bound in place of their placeholders."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any

from fastapi import Depends, FastAPI

from .auth import Principal
from .deps import current_principal

log = logging.getLogger("facegate.service")


class BoundedEngine:
    """The service's engine, with at most ``limit`` calls at once (shared by every liveness
    request), so frame checks cannot take more CPU than the worker pool allows."""

    def __init__(self, service: Any, limit: int) -> None:
        self._service = service
        self._sem = threading.BoundedSemaphore(limit)

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._service.engine, name)
        if not callable(target) or name.startswith("_"):
            return target

        def bounded(*args: Any, **kwargs: Any) -> Any:
            with self._sem:
                return target(*args, **kwargs)

        return bounded


STORE_ENV = "FACEGATE_LIVENESS_STORE"  # "database" (default) or "memory"


def make_store(service: Any, kind: str | None = None) -> Any:
    """The liveness session store for the service: ``database`` (default) keeps sessions and
    replay digests in the gallery's database, shared by every process on it; ``memory`` keeps
    them in this process only (lost on restart; one worker process only)."""
    from ..liveness import api as lapi

    kind = (kind or os.environ.get(STORE_ENV) or "database").strip().lower()
    if kind == "memory":
        return lapi.InMemorySessionStore()
    if kind != "database":
        raise ValueError(f"{STORE_ENV} must be 'database' or 'memory', not {kind!r}")
    return GalleryDatabaseSessionStore(service)


RESULT_SWEEP_S = 5.0  # how often expired (unused) liveness results are deleted from the database


class GalleryDatabaseSessionStore:
    """``DatabaseSessionStore`` on whatever database the service's gallery has open (the gallery
    opens at startup, after the routes are mounted, and reopens on restart), with the gallery's
    master key (``gallery.crypto``) for the passed sessions' encrypted results. Without a gallery
    with a SQL store and a master key (a library build, a test double) it falls back to one
    in-memory store.

    While bound, a daemon thread deletes expired results every ``RESULT_SWEEP_S`` seconds, so a
    result nobody uses is gone within seconds of its 120 s lifetime even when no other request
    arrives (every process sharing the database runs one; the DELETE is idempotent)."""

    def __init__(self, service: Any) -> None:
        self._service = service
        self._lock = threading.Lock()
        self._bound: Any = None
        self._fallback: Any = None
        self._sweeper: threading.Thread | None = None

    def _current_store(self) -> tuple[Any, Any]:
        gallery = self._service.gallery
        st = getattr(gallery, "store", None) if gallery is not None else None
        crypto = getattr(gallery, "crypto", None) if gallery is not None else None
        return st, crypto

    @property
    def target(self) -> Any:
        st, crypto = self._current_store()
        with self._lock:
            if st is None or not hasattr(st, "engine") or not hasattr(crypto, "derive_key"):
                if self._fallback is None:
                    from ..liveness.challenge import InMemorySessionStore

                    log.warning("no gallery database: liveness sessions are kept in this process's memory")
                    self._fallback = InMemorySessionStore()
                return self._fallback
            if self._bound is None or self._bound.store is not st:
                from ..liveness.db_store import DatabaseSessionStore

                self._bound = DatabaseSessionStore(st, crypto)
                self._start_sweeper()
            return self._bound

    def _start_sweeper(self) -> None:
        if self._sweeper is not None and self._sweeper.is_alive():
            return
        ref = weakref.ref(self)
        self._sweeper = threading.Thread(target=_sweep, args=(ref,), name="facegate-liveness-sweep", daemon=True)
        self._sweeper.start()

    def sweep_once(self) -> int:
        """Delete expired results now, through the store bound to the gallery that is open
        (nothing when the gallery is closed or was reopened and not used since)."""
        st, _crypto = self._current_store()
        bound = self._bound
        if bound is None or st is None or bound.store is not st:
            return 0
        return bound.purge_results()

    def __getattr__(self, name: str) -> Any:  # add, get, claim, finish, consume, remember_frames, purge
        return getattr(self.target, name)


def _sweep(ref: "weakref.ref[GalleryDatabaseSessionStore]") -> None:
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


def _register_virtual_subclass() -> None:
    try:
        from ..liveness.challenge import SessionStore
    except ImportError:
        return
    SessionStore.register(GalleryDatabaseSessionStore)


_register_virtual_subclass()


def include(app: FastAPI, service: Any) -> None:
    try:
        from ..liveness import api as lapi
        from ..liveness.flow import liveness_frame_hook
    except ImportError:
        return

    store = make_store(service)
    engine = BoundedEngine(service, service.settings.workers)

    async def liveness_caller(principal: Principal = Depends(current_principal)) -> Principal:
        # Liveness proves presence before a verification or an enrolment.
        principal.require("verify", "enroll", "identify")
        return principal

    def audit_writer(principal: Principal = Depends(liveness_caller)):  # noqa: ANN202
        def write(record: dict[str, Any]) -> None:
            gallery = service.gallery
            event = str(record.get("event") or "liveness.decision")
            action = event if event.startswith("liveness") else f"liveness.{event}"
            decision = record.get("decision")
            if decision is None and "live" in record:
                decision = "live" if record["live"] else "not_live"
            details = {k: v for k, v in record.items() if k not in ("event", "actor", "decision", "live")}
            if service.metrics and decision:
                service.metrics.decision("liveness", str(decision))
            if gallery is None:
                log.info("liveness %s", action, extra={"decision": decision})
                return
            try:
                gallery.audit_record(actor=principal.audit_actor(), action=action[:64].lower(),
                                     subjects=(), decision=None if decision is None else str(decision),
                                     details=_small(details))
            except Exception:  # noqa: BLE001 - never fail a liveness answer for bookkeeping
                log.exception("could not write the liveness audit record")

        return write

    take = liveness_frame_hook(store)

    def use_session(session_id: str, principal: Any, purpose: str | None = None) -> Any:
        """verify/enrol/identify with a passed session: consume it (once, from any process on
        the database) and audit the use or the refusal — session id, caller, purpose, code;
        never the image."""
        from ..liveness.errors import LivenessError

        try:
            image = take(session_id, principal, purpose)
        except LivenessError as exc:
            _audit_use(service, principal, session_id, purpose, "refused", exc.code)
            raise
        _audit_use(service, principal, session_id, purpose, "used", None)
        return image

    app.include_router(lapi.router)
    app.dependency_overrides[lapi.get_liveness_engine] = lambda: engine
    app.dependency_overrides[lapi.get_liveness_store] = lambda: store
    app.dependency_overrides[lapi.liveness_principal] = liveness_caller
    app.dependency_overrides[lapi.get_liveness_audit] = audit_writer
    service.extensions["liveness_frame"] = use_session
    service.extensions["liveness_store"] = store


def _audit_use(service: Any, principal: Any, session_id: str, purpose: str | None, decision: str, code: str | None) -> None:
    gallery = service.gallery
    if gallery is None:
        return
    details: dict[str, Any] = {"session_id": str(session_id)[:64]}
    if code:
        details["code"] = code
    try:
        gallery.audit_record(actor=principal.audit_actor(), action="liveness.used" if decision == "used" else "liveness.use_refused",
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
