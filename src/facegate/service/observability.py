"""Structured JSON logs with request ids, and Prometheus metrics.

Nothing biometric is ever logged or exported: no pixels, no templates, no scores per person.
Logs carry method, route template, status, duration, key id and request id; metrics carry
counts and latencies by route template and decisions by outcome.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("facegate_request_id", default=None)

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_request_id(incoming: str | None = None) -> str:
    """Accept a caller's X-Request-ID when it is short and plain, else make one."""
    if incoming and _VALID_REQUEST_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id and any ``extra`` fields."""

    _skip = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            out["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in self._skip and key not in out and not key.startswith("_") and value is not None:
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get()
        return True


def configure_logging(level: str = "info", json_logs: bool = True) -> None:
    """Route facegate's and uvicorn's loggers to one stderr handler (JSON unless disabled)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    handler.setFormatter(JsonFormatter() if json_logs else text)
    for name in ("facegate", "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level.upper())
        lg.propagate = False
    # Our own access log replaces uvicorn's (which has no request id, route template or key).
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Per-app registry (so several apps in one process, as in tests, do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "facegate_http_requests", "HTTP requests by method, route template and status.",
            ["method", "route", "status"], registry=r,
        )
        self.latency = Histogram(
            "facegate_http_request_duration_seconds", "HTTP request latency by method and route template.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.in_flight = Gauge("facegate_http_requests_in_flight", "Requests being handled now.", registry=r)
        self.decisions = Counter(
            "facegate_decisions", "Biometric decisions by operation and outcome (no per-person data).",
            ["operation", "outcome"], registry=r,
        )
        self.problems = Counter("facegate_problems", "Problem responses by problem code.", ["code"], registry=r)
        self.rate_limited = Counter("facegate_rate_limited", "Requests refused by the per-key rate limit.", registry=r)
        self.work_queue = Gauge("facegate_work_queue_depth", "CPU-bound jobs waiting for a worker.", registry=r)
        self.work_running = Gauge("facegate_work_running", "CPU-bound jobs running on workers.", registry=r)
        self.work_seconds = Histogram(
            "facegate_work_duration_seconds", "Time CPU-bound jobs ran on a worker, by kind.", ["kind"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ready = Gauge("facegate_ready", "1 when the service is ready to take traffic.", registry=r)

    def decision(self, operation: str, outcome: str, n: int = 1) -> None:
        self.decisions.labels(operation, outcome).inc(n)
