"""RFC 9457 problem details: every FacegateError becomes ``application/problem+json``.

The ``type`` of a problem is ``/problems/<code>`` (a URI reference relative to the service,
served by it, so it resolves offline); ``code`` is the same stable identifier the library and the
CLI use. Clients should branch on ``type`` (or ``code``), never on ``title`` or ``detail``.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
from typing import Any

from fastapi.responses import JSONResponse

from ..errors import FacegateError
from .errors import RateLimitedError

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "/problems/"

# Modules whose FacegateError subclasses are part of the service's contract; optional ones are
# imported when present so their errors are registered too.
_ERROR_MODULES = (
    "facegate.errors",
    "facegate.service.errors",
    "facegate.gallery.errors",
    "facegate.gallery",
    "facegate.liveness.errors",
    "facegate.liveness",
)


def type_uri(code: str) -> str:
    return TYPE_PREFIX + code


def _all_subclasses(cls: type[FacegateError]) -> list[type[FacegateError]]:
    out: list[type[FacegateError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


_TITLES = {"api_key_required": "API key required", "invalid_api_key": "Invalid API key", "api_key_revoked": "API key revoked",
           "api_key_expired": "API key expired", "fmr": "FMR"}


def _title(cls: type[FacegateError]) -> str:
    """Short and stable: the code in words ("no_face" -> "No face")."""
    code = cls.__dict__.get("code", None) or cls.code
    return _TITLES.get(code) or code.replace("_", " ").capitalize()


def _description(cls: type[FacegateError]) -> str:
    own = cls.__dict__.get("__doc__")
    return inspect.cleandoc(own).split("\n\n")[0].replace("\n", " ") if own else ""


def registry() -> dict[str, dict[str, Any]]:
    """Every known problem code -> {type, title, status, exception}. First definition of a code wins."""
    for name in _ERROR_MODULES:
        # An optional part that is absent or broken must not break errors.
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    out: dict[str, dict[str, Any]] = {}
    classes: list[type[FacegateError]] = [FacegateError, *_all_subclasses(FacegateError)]
    for cls in classes:
        code = cls.__dict__.get("code", None) or cls.code
        if code in out:
            continue
        out[code] = {
            "type": type_uri(code),
            "code": code,
            "title": _title(cls),
            "description": _description(cls),
            "status": int(cls.http_status),
            "exception": f"{cls.__module__}.{cls.__qualname__}",
        }
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return str(value)


_RESERVED = {"type", "title", "status", "detail", "instance", "code", "request_id"}


def problem_body(exc: FacegateError, *, instance: str | None = None, request_id: str | None = None) -> dict[str, Any]:
    status = int(exc.http_status or 500)
    body: dict[str, Any] = {
        "type": type_uri(exc.code),
        "title": _title(type(exc)),
        "status": status,
        "detail": exc.message if status < 500 or exc.code != "internal_error" else "internal error",
        "code": exc.code,
    }
    if instance:
        body["instance"] = instance
    if request_id:
        body["request_id"] = request_id
    for key, value in exc.details.items():
        if key not in _RESERVED:
            body[key] = _jsonable(value)
    return body


def problem_response(
    exc: FacegateError, *, instance: str | None = None, request_id: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = problem_body(exc, instance=instance, request_id=request_id)
    hdrs = dict(headers or {})
    if isinstance(exc, RateLimitedError):
        hdrs["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if body["status"] == 401:
        hdrs.setdefault("WWW-Authenticate", 'Bearer realm="facegate"')
    return JSONResponse(body, status_code=body["status"], headers=hdrs, media_type=PROBLEM_MEDIA_TYPE)


class InternalError(FacegateError):
    """Unexpected server error (the request id locates it in the logs)."""

    code = "internal_error"
    http_status = 500
