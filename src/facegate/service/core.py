"""``Service``: the one object the routes share (``app.state.service``, injected as ``ServiceDep``):
engine, gallery, authenticator, settings, metrics, worker pool, rate limits and liveness."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..clock import SYSTEM, Clock
from ..engine import FaceEngine
from ..gallery import Gallery
from ..registry.batch import KIND as BATCH_KIND
from ..registry.batch import BatchSettings, batch_kind
from ..registry.dedup_job import KIND as DEDUP_KIND
from ..registry.dedup_job import dedup_kind
from ..registry.jobs import JobRunner
from ..vision.decode import budget
from .auth import Authenticator
from .backend import gallery_authenticator
from .errors import NotReadyError
from .limits import RateLimiter, WorkerPool
from .liveness import ServiceLiveness
from .observability import Metrics
from .settings import Settings

T = TypeVar("T")


class Service:
    """Everything the routes share; one per app. ``engine``/``gallery``/``authenticator`` may be
    injected (tests, an embedding application); what is not injected is made at ``start()``.
    ``clock`` is the time source of the rate limits and liveness sessions (tests pass a ``ManualClock``)."""

    def __init__(self, settings: Settings, *, engine: FaceEngine | None = None, gallery: Gallery | None = None,
                 authenticator: Authenticator | None = None, clock: Clock = SYSTEM) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics()
        self.pool = self._new_pool()
        self.rate = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst, clock=clock.monotonic)
        self.auth_failures = RateLimiter(settings.auth_failures_per_min / 60.0, settings.auth_failures_per_min,
                                         clock=clock.monotonic)
        self.engine = engine
        self.gallery = gallery
        self.authenticator = authenticator
        # What start() opened, stop() closes; what was injected stays the caller's.
        self._own_gallery = gallery is None
        self._own_authenticator = authenticator is None
        self.ready = False
        self.shutting_down = False
        self.startup_error: str | None = None
        self.liveness = ServiceLiveness(self)
        # Registry jobs (bulk enrolment, de-duplication) run on one background thread per process;
        # a job whose process died is resumed by the next one that starts.
        self.batch_settings = BatchSettings.from_env()
        self.registry: JobRunner | None = None

    def _new_pool(self) -> WorkerPool:
        s = self.settings
        return WorkerPool(s.workers, s.max_queue, s.request_timeout_s, self.metrics)

    async def run(self, fn: Callable[..., T], *args: Any, kind: str = "work", side_effects: bool = False,
                  **kwargs: Any) -> T:
        """Run blocking work (engine, store) on the bounded worker pool."""
        return await self.pool.run(fn, *args, kind=kind, side_effects=side_effects, **kwargs)

    def start(self) -> None:
        """Load the engine and open the store and key store (blocking; called on a thread at
        startup). Restartable: a stopped service starts again with a fresh worker pool and store."""
        if self.pool.closed:
            self.pool = self._new_pool()
        self.shutting_down = False
        budget.configure(self.settings.decode_memory_mb * 2**20)  # process-wide: decodes run on every worker
        if self.engine is None:
            s = self.settings
            self.engine = FaceEngine(s.model, max_pixels=s.max_pixels, max_faces=s.max_faces)
        if self.gallery is None:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.gallery = Gallery.open(self.settings.data_dir, engine=self.engine)
        if self.authenticator is None:
            self.authenticator = gallery_authenticator(self.gallery)
        if self.registry is None:
            kinds = {BATCH_KIND: batch_kind(self.gallery, self.batch_settings), DEDUP_KIND: dedup_kind(self.gallery)}
            self.registry = JobRunner(self.gallery.store, kinds, clock=self.clock)
            self.registry.start()

    def jobs(self) -> JobRunner:
        """This process's registry job runner (the routes queue jobs on it)."""
        if self.registry is None:
            raise NotReadyError("the registry job runner is not started yet")
        return self.registry

    def stop(self) -> None:
        """Stop taking work, let running jobs finish, close what start() opened."""
        self.shutting_down = True
        self.ready = False
        self.pool.shutdown(wait=True)
        if self.registry is not None:  # a running job is given back, to be resumed at the next start
            self.registry.stop()
            self.registry = None
        if self._own_gallery and self.gallery is not None:
            self.gallery.close()
            self.gallery = None
            if self._own_authenticator:
                self.authenticator = None
