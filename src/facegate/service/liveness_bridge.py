"""Mount the liveness endpoints (issue 5, ``facegate.liveness.api``) on the service, with the
service's engine, API-key auth, audit log and worker bound in place of their placeholders."""

from __future__ import annotations

import logging
import os
import threading
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


class GalleryDatabaseSessionStore:
    """``DatabaseSessionStore`` on whatever database the service's gallery has open (the gallery
    opens at startup, after the routes are mounted, and reopens on restart). Without a gallery
    with a SQL store (a library build, a test double) it falls back to one in-memory store."""

    def __init__(self, service: Any) -> None:
        from ..liveness.db_store import LocalResults

        self._service = service
        self._results = LocalResults()  # passed sessions' best frames: this process's memory only
        self._lock = threading.Lock()
        self._bound: Any = None
        self._fallback: Any = None

    @property
    def target(self) -> Any:
        gallery = self._service.gallery
        st = getattr(gallery, "store", None) if gallery is not None else None
        with self._lock:
            if st is None or not hasattr(st, "engine"):
                if self._fallback is None:
                    from ..liveness.challenge import InMemorySessionStore

                    log.warning("no gallery database: liveness sessions are kept in this process's memory")
                    self._fallback = InMemorySessionStore()
                return self._fallback
            if self._bound is None or self._bound.store is not st:
                from ..liveness.db_store import DatabaseSessionStore

                self._bound = DatabaseSessionStore(st, results=self._results)
            return self._bound

    def __getattr__(self, name: str) -> Any:  # add, get, claim, finish, consume, remember_frames, purge
        return getattr(self.target, name)


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

    app.include_router(lapi.router)
    app.dependency_overrides[lapi.get_liveness_engine] = lambda: engine
    app.dependency_overrides[lapi.get_liveness_store] = lambda: store
    app.dependency_overrides[lapi.liveness_principal] = liveness_caller
    app.dependency_overrides[lapi.get_liveness_audit] = audit_writer
    service.extensions["liveness_frame"] = liveness_frame_hook(store)
    service.extensions["liveness_store"] = store


def _small(details: dict[str, Any]) -> dict[str, Any]:
    """Audit details are capped (counts and codes only): drop anything bulky."""
    out: dict[str, Any] = {}
    for k, v in details.items():
        if len(repr(v)) <= 600:
            out[k] = v
    while out and len(repr(out)) > 3500:
        out.pop(next(reversed(out)))
    return out
