"""Limits that keep one client from hurting the others: body size, per-key rate, bounded workers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .errors import BodyTooLargeError, RateLimitedError, RequestTimeoutError, ServiceBusyError, ShuttingDownError
from .observability import Metrics

T = TypeVar("T")


# --- request body size ---------------------------------------------------------------------------


class BodyLimitExceeded(Exception):
    pass


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_bytes``: at once from Content-Length, or while streaming.

    Pure ASGI so the body is never buffered before the check.
    """

    def __init__(self, app: Any, max_bytes: int, on_refuse: Callable[[Any, BodyTooLargeError], Any]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refuse = on_refuse

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self.on_refuse(scope, self._error(declared))(scope, receive, send)
                    return
        seen = 0
        started = exceeded = False

        async def limited_receive() -> dict:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise BodyLimitExceeded()
            return message

        async def refuse() -> None:
            nonlocal started
            started = True
            await self.on_refuse(scope, self._error(seen))(scope, receive, send)

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if exceeded:  # the app caught the exception and answers itself (FastAPI's body parser: 400)
                if not started:
                    await refuse()
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyLimitExceeded:
            if not started:
                await refuse()

    def _error(self, size: int) -> BodyTooLargeError:
        return BodyTooLargeError(
            f"request body is larger than the limit of {self.max_bytes} bytes", limit_bytes=self.max_bytes
        )


# --- per-key rate limit ---------------------------------------------------------------------------


class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, float(burst), float(burst), now

    def take(self, now: float, cost: float = 1.0) -> float:
        """0 when allowed (and a token is spent), else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class RateLimiter:
    """Buckets by key (API key id, or client address for failed sign-ins); LRU-bounded."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.max_keys, self.clock = rate, burst, max_keys, clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, key: str, cost: float = 1.0) -> float:
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
                if len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            return bucket.take(now, cost)

    def hit(self, key: str, what: str = "requests") -> None:
        wait = self.check(key)
        if wait > 0:
            raise RateLimitedError(f"too many {what}; retry in {wait:.1f} s", retry_after=wait)

    def peek(self, key: str) -> float:
        """Seconds until ``key`` has a token, without spending one."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0.0
            tokens = min(bucket.burst, bucket.tokens + (now - bucket.stamp) * bucket.rate)
            return 0.0 if tokens >= 1 else (1 - tokens) / bucket.rate


# --- CPU-bound work off the event loop --------------------------------------------------------------


class WorkerPool:
    """A fixed pool of threads for detection, embedding and store calls, with a bounded queue.

    * The event loop never runs CPU work, so health checks and other clients stay responsive.
    * At most ``workers`` jobs run at once; at most ``max_queue`` wait; more gets 503 at once.
    * ``timeout`` bounds waiting plus running. A job that has not started when it expires is
      dropped (504). A job that has started is either abandoned (``side_effects=False``: its
      result is discarded, its thread finishes in the background and still counts against the
      pool) or awaited to completion (``side_effects=True``: a write is never half-reported).
    """

    def __init__(self, workers: int, max_queue: int, timeout: float, metrics: Metrics | None = None) -> None:
        self.workers, self.max_queue, self.timeout = workers, max_queue, timeout
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facegate-worker")
        self._lock = threading.Lock()
        self._queued = 0
        self._running = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def running(self) -> int:
        return self._running

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.work_queue.set(self._queued)
            self.metrics.work_running.set(self._running)

    async def run(self, fn: Callable[..., T], *args: Any, kind: str = "work", side_effects: bool = False,
                  timeout: float | None = None, **kwargs: Any) -> T:
        if self._closed:
            raise ShuttingDownError("the service is shutting down")
        with self._lock:
            if self._queued >= self.max_queue:
                raise ServiceBusyError(
                    f"all {self.workers} workers are busy and {self._queued} requests are waiting; retry shortly",
                    retry_after_s=1,
                )
            self._queued += 1
        self._gauge()
        started = threading.Event()

        def job() -> T:
            with self._lock:
                self._queued -= 1
                self._running += 1
            started.set()
            self._gauge()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self._running -= 1
                self._gauge()
                if self.metrics:
                    self.metrics.work_seconds.labels(kind).observe(time.perf_counter() - t0)

        try:
            future = self._executor.submit(job)
        except RuntimeError as exc:  # executor shut down
            with self._lock:
                self._queued -= 1
            raise ShuttingDownError(f"the service is shutting down ({exc})") from exc
        wrapped = asyncio.wrap_future(future)
        limit = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.shield(wrapped), limit)
        except TimeoutError:
            if future.cancel():  # never started
                with self._lock:
                    self._queued -= 1
                self._gauge()
                raise RequestTimeoutError(f"the request waited more than {limit:g} s for a worker", timeout_s=limit) from None
            if side_effects or started.is_set() and future.done():
                return await wrapped
            raise RequestTimeoutError(f"the request took more than {limit:g} s", timeout_s=limit) from None

    def shutdown(self, wait: bool = True) -> None:
        self._closed = True
        self._executor.shutdown(wait=wait, cancel_futures=True)
