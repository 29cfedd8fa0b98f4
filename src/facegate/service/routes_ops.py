"""Operations: health, readiness, metrics, problem type documentation, who-am-I."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from .deps import PrincipalDep, ServiceDep
from .errors import MetricsTokenError, ResourceNotFoundError
from .problems import registry
from .schemas import Health, Me, Ready, problem_responses

router = APIRouter()


@router.get("/healthz", response_model=Health, tags=["operations"], summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok", version=__version__)


@router.get(
    "/readyz", response_model=Ready, tags=["operations"], summary="Readiness: engine loaded, store open, not draining",
    responses={503: {"description": "Not ready", "model": Ready}},
)
async def readyz(service: ServiceDep) -> JSONResponse:
    engine = service.engine
    checks = {
        "engine": engine.model_id if engine is not None else None,
        "store": service.gallery is not None,
        "keys": service.authenticator is not None,
        "shutting_down": service.shutting_down,
        "workers": service.settings.workers,
        "queued": service.pool.queued,
        "running": service.pool.running,
    }
    if service.startup_error:
        checks["error"] = service.startup_error
    ok = service.ready and not service.shutting_down and engine is not None and service.authenticator is not None
    body = Ready(status="ready" if ok else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get(
    "/metrics", tags=["operations"], summary="Prometheus metrics (no biometric data)",
    response_class=Response, responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request, service: ServiceDep) -> Response:
    token = service.settings.metrics_token
    if token:
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise MetricsTokenError("/metrics needs 'Authorization: Bearer <metrics token>' (FACEGATE_METRICS_TOKEN)")
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/problems", tags=["operations"], summary="Every problem type this service can return")
async def problem_types() -> list[dict]:
    return [{k: v for k, v in p.items() if k != "exception"} for p in sorted(registry().values(), key=lambda p: p["code"])]


@router.get("/problems/{code}", tags=["operations"], summary="One problem type", responses=problem_responses(404))
async def problem_type(code: str) -> dict:
    entry = registry().get(code)
    if entry is None:
        raise ResourceNotFoundError(f"no problem type {code!r}")
    return {k: v for k, v in entry.items() if k != "exception"}


@router.get("/v1/me", response_model=Me, tags=["auth"], summary="The calling API key: scopes and collections",
            responses=problem_responses(401, 429))
async def me(principal: PrincipalDep) -> Me:
    return Me(**principal.to_dict())
