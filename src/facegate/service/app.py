"""The FastAPI application: ``create_app(settings)``.

Layers, outermost first: request context (request id, JSON access log, metrics, security headers,
last-resort problem for unexpected errors) -> API-key gate (authentication and rate limit from the
headers, before any body is read) -> body size limit -> FastAPI (scopes and collections as
dependencies, CPU work on the worker pool) -> routes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message

from .. import __version__
from ..clock import SYSTEM, Clock
from ..engine import FaceEngine
from ..errors import FacegateError
from ..gallery import Gallery
from .auth import Authenticator
from .core import Service
from .deps import AuthGateMiddleware
from .errors import (
    InvalidRequestError,
    MethodNotAllowedError,
    ResourceNotFoundError,
    ServiceError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
)
from .limits import BodySizeLimitMiddleware
from .observability import new_request_id, request_id_var
from .problems import InternalError, problem_response
from .schemas import Problem
from .settings import Settings

log = logging.getLogger("facegate.service")


# On every response unless a route set its own (the console page and /docs send a CSP that lets
# their scripts run). The default CSP allows nothing: API responses are data, never a document.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = tuple((k.encode(), v.encode()) for k, v in (
    ("content-security-policy", API_CSP),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("permissions-policy", "camera=(self), microphone=(), geolocation=(), display-capture=(), payment=(), usb=()"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cache-control", "no-store"),  # biometric results must not sit in any cache
))


def _route_label(scope: dict) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    return path or "/"


class RequestContextMiddleware:
    """Request id, access log, metrics, and a problem+json for anything unexpected."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        rid = new_request_id(headers.get("x-request-id"))
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        metrics = self.service.metrics
        metrics.in_flight.inc()
        t0 = time.perf_counter()
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                hdrs = list(message.get("headers", []))
                hdrs.append((b"x-request-id", rid.encode()))
                present = {k.lower() for k, _ in hdrs}
                hdrs.extend((k, v) for k, v in SECURITY_HEADERS if k not in present)
                message = {**message, "headers": hdrs}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:  # noqa: BLE001 - last resort: log with traceback, answer problem+json
            log.exception("unhandled error", extra={"path": scope.get("path"), "error": type(exc).__name__})
            if not started:
                response = problem_response(InternalError("internal error; the request id locates it in the logs"),
                                            instance=scope.get("path"), request_id=rid)
                await response(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - t0
            route = _route_label(scope)
            method = scope.get("method", "")
            metrics.in_flight.dec()
            metrics.requests.labels(method, route, str(status)).inc()
            metrics.latency.labels(method, route).observe(elapsed)
            state = scope.get("state", {})
            principal = state.get("principal")
            fields = {
                "method": method, "route": route, "status": status, "duration_ms": round(elapsed * 1000, 2),
                "client": (scope.get("client") or ("", 0))[0],
            }
            if principal is not None:
                fields["key_id"] = principal.key_id
            if state.get("problem_code"):
                fields["problem"] = state["problem_code"]
            if route not in ("/healthz", "/readyz", "/metrics") or status >= 400:
                log.info("%s %s %s", method, route, status, extra=fields)
            request_id_var.reset(token)


def _problem_for(request: Request, exc: FacegateError) -> JSONResponse:
    service: Service = request.app.state.service
    service.metrics.problems.labels(exc.code).inc()
    request.scope.setdefault("state", {})["problem_code"] = exc.code
    if exc.http_status >= 500:
        log.warning("problem %s: %s", exc.code, exc.message, extra={"code": exc.code})
    return problem_response(exc, instance=request.url.path, request_id=request.scope.get("state", {}).get("request_id"))


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FacegateError)
    async def facegate_error(request: Request, exc: FacegateError):  # noqa: ANN202
        return _problem_for(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):  # noqa: ANN202
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        if any(e["type"] in ("json_invalid",) for e in errors):
            return _problem_for(request, InvalidRequestError("the body is not valid JSON", errors=errors))
        return _problem_for(request, ValidationFailedError(f"{'.'.join(first['loc'])}: {first['msg']}", errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):  # noqa: ANN202
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        mapped: FacegateError
        if exc.status_code == 404:
            mapped = ResourceNotFoundError(detail if detail != "Not Found" else f"no route {request.url.path}")
        elif exc.status_code == 405:
            mapped = MethodNotAllowedError(f"{request.method} is not allowed on {request.url.path}")
        elif exc.status_code == 415:
            mapped = UnsupportedMediaTypeError(detail)
        elif exc.status_code == 400:
            mapped = InvalidRequestError(detail)
        else:
            mapped = ServiceError(detail)
            mapped.http_status = exc.status_code
            mapped.code = {401: "unauthenticated", 403: "forbidden", 413: "body_too_large", 429: "rate_limited"}.get(
                exc.status_code, "http_error"
            )
        response = _problem_for(request, mapped)
        for k, v in (exc.headers or {}).items():
            response.headers[k] = v
        return response


def _lifespan(service: Service) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Start the service (engine, store) on a thread before the first request; stop it after the last."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await asyncio.get_running_loop().run_in_executor(None, service.start)
            service.ready = True
            service.metrics.ready.set(1)
            log.info("facegate service ready", extra={"model": service.engine.model_id if service.engine else None,
                                                      "workers": service.settings.workers})
        except Exception as exc:
            service.startup_error = f"{type(exc).__name__}: {exc}"
            log.exception("startup failed")
            raise
        try:
            yield
        finally:
            log.info("facegate service shutting down")
            service.metrics.ready.set(0)
            await asyncio.get_running_loop().run_in_executor(None, service.stop)

    return lifespan


def _install_openapi(app: FastAPI) -> None:
    """The schema, built once, with the Problem model and problem+json on every error response."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, description=app.description,
                             routes=app.routes)
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        comps["Problem"] = Problem.model_json_schema()
        _problems_everywhere(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, *, engine: FaceEngine | None = None, gallery: Gallery | None = None,
               authenticator: Authenticator | None = None, clock: Clock = SYSTEM) -> FastAPI:
    """Build the app. ``engine``/``gallery``/``authenticator``/``clock`` may be injected (tests); by
    default the engine is loaded and the embedded store under ``settings.data_dir`` opened at startup."""
    settings = settings or Settings.from_env()
    service = Service(settings, engine=engine, gallery=gallery, authenticator=authenticator, clock=clock)

    app = FastAPI(
        title="facegate",
        version=__version__,
        summary="Consent-first face verification and identification.",
        description=(
            "Self-hosted 1:1 verification and consented, purpose-bound 1:N identification.\n\n"
            "Authenticate with an API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`. "
            "Errors are RFC 9457 `application/problem+json` with a stable `type` (`/problems/<code>`)."
        ),
        lifespan=_lifespan(service),
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        swagger_ui_parameters={"persistAuthorization": True},
    )
    app.state.service = service
    _install_error_handlers(app)

    from . import routes_batches, routes_dedup, routes_engine, routes_gallery, routes_liveness, routes_ops

    app.include_router(routes_ops.router)
    app.include_router(routes_engine.router)
    app.include_router(routes_gallery.router)
    app.include_router(routes_batches.router)
    app.include_router(routes_dedup.router)
    _mount_docs(app)
    app.include_router(routes_liveness.router)
    if settings.console:
        from .console import mount_console

        mount_console(app)

    def refuse(scope: dict, exc: FacegateError) -> JSONResponse:
        service.metrics.problems.labels(exc.code).inc()
        scope.setdefault("state", {})["problem_code"] = exc.code
        return problem_response(exc, instance=scope.get("path"), request_id=scope.get("state", {}).get("request_id"),
                                headers={"Connection": "close"})

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, on_refuse=refuse)
    app.add_middleware(AuthGateMiddleware, prefix="/v1/", on_refuse=refuse)  # the key before the body
    app.add_middleware(RequestContextMiddleware, service=service)
    if settings.trusted_proxies:  # outermost: every layer, the access log included, sees the real client
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxy_list)

    _install_openapi(app)
    return app


_PROBLEM_REF = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _problems_everywhere(schema: dict[str, Any]) -> None:
    """Every error of every operation is RFC 9457 problem+json: replace FastAPI's default 422
    (application/json HTTPValidationError) and add a ``default`` problem response for the
    codes any route can return (400, 401, 403, 404, 413, 415, 429, 503, 504)."""
    for path_item in schema.get("paths", {}).values():
        for op in path_item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            for code, resp in list(responses.items()):
                if code == "422" or (code.isdigit() and int(code) >= 400):
                    resp["content"] = dict(_PROBLEM_REF)
                    if code == "422":
                        resp["description"] = "Invalid input or no usable face"
            responses.setdefault("default", {"description": "Error (RFC 9457 problem details)", "content": dict(_PROBLEM_REF)})
    comps = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        comps.pop(name, None)


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the files vendored in ``docs_assets/``: nothing from a CDN."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs-assets", StaticFiles(directory=Path(__file__).parent / "docs_assets"), name="docs-assets")
    page = get_swagger_ui_html(
        openapi_url="/openapi.json", title="facegate API",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js", swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon-32x32.png",
        swagger_ui_parameters={"persistAuthorization": True, "tryItOutEnabled": True},
    )
    headers = {"Content-Security-Policy": docs_csp(bytes(page.body).decode())}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page.body, headers=headers)


def docs_csp(html: str) -> str:
    """The CSP for the Swagger UI page: its one inline script allowed by hash, nothing external.
    Swagger UI sets inline styles and shows data: icons, hence those two allowances."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    )
    return (f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def static_dir() -> Path:
    return Path(__file__).parent / "static"
