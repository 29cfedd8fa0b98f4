"""Who is calling: the API-key gate in front of the routes, and the FastAPI dependencies for the
service, the calling key (authenticated and rate limited), its scopes and collections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Path, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from ..errors import FacegateError
from ..gallery import ADMIN
from .auth import SCOPES, Principal, extract_key, unauthenticated
from .core import Service
from .errors import AuthError, InsufficientAccessError, NotReadyError, RateLimitedError

bearer_scheme = HTTPBearer(auto_error=False, description="API key as a bearer token.", scheme_name="bearer")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key in a header.", scheme_name="apiKey")


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def authenticate(request: Request) -> Principal:
    """Who is calling. 401 without a valid key; 429 when over the key's rate (or, for failed
    sign-ins, the client address's). Needs only the headers: it runs before the body is read.

    A throttled address is refused before its key is even looked at, a correct key included:
    answering a right guess differently from a wrong one would turn the throttle into an oracle.
    """
    service = get_service(request)
    client = "ip:" + _client(request)
    wait = service.auth_failures.peek(client)
    if wait > 0:
        service.metrics.rate_limited.inc()
        raise RateLimitedError(f"too many failed sign-ins from this address; retry in {wait:.0f} s", retry_after=wait)
    secret = extract_key(request)
    if secret is None:
        raise unauthenticated()  # no guess made: nothing to count
    try:
        principal = await _authenticate(service, secret)
    except AuthError:  # every failed sign-in counts, whichever layer refused it
        service.auth_failures.check(client)
        raise
    request.scope.setdefault("state", {})["principal"] = principal
    wait = service.rate.check("key:" + principal.key_id)
    if wait > 0:
        service.metrics.rate_limited.inc()
        raise RateLimitedError(f"rate limit of this API key exceeded; retry in {wait:.1f} s", retry_after=wait)
    return principal


async def current_principal(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
    _header: Annotated[str | None, Security(header_scheme)] = None,
) -> Principal:
    """The caller the gate authenticated (the two header parameters document the schemes in
    OpenAPI); a route outside the gate's prefix authenticates here."""
    principal = request.scope.get("state", {}).get("principal")
    return principal if principal is not None else await authenticate(request)


class AuthGateMiddleware:
    """Authenticate every request under ``prefix`` from its headers before anything reads its
    body, so an unauthenticated client cannot make the server take in megabytes first. A refusal
    closes the connection (the server then never drains the unread body)."""

    def __init__(self, app: Any, prefix: str, on_refuse: Callable[[dict, FacegateError], Any]) -> None:
        self.app = app
        self.prefix = prefix
        self.on_refuse = on_refuse

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            try:
                await authenticate(Request(scope))
            except FacegateError as exc:
                await self.on_refuse(scope, exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _authenticate(service: Service, secret: str) -> Principal:
    """The key's principal, or an AuthError (unknown, revoked, expired, absurdly long)."""
    if len(secret) > 512:
        raise unauthenticated("invalid API key")
    if service.authenticator is None:
        raise NotReadyError("the key store is not open yet")
    principal = await run_in_threadpool(service.authenticator, secret)
    if principal is None:
        raise unauthenticated("invalid, revoked or expired API key")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def granted_collection(
    principal: PrincipalDep,
    collection: Annotated[str, Path(min_length=1, max_length=128, description="Collection name.")],
) -> str:
    """The path's collection, if this key is granted it; else 404 exactly like a missing one.
    A dependency, so it is decided before the body is even read."""
    principal.require_collection(collection)
    return collection


GrantedCollection = Annotated[str, Depends(granted_collection)]


def needs(*scopes: str):  # noqa: ANN201
    """Dependency: the calling key, if it holds any one of ``scopes`` (checked before the body)."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:  # a misspelt scope would refuse every caller, silently
        raise ValueError(f"unknown scopes {sorted(unknown)}; the scopes are {', '.join(SCOPES)}")

    async def dependency(principal: PrincipalDep) -> Principal:
        principal.require(*scopes)
        return principal

    return Depends(dependency)


async def global_admin(principal: PrincipalDep) -> Principal:
    """An admin key granted every collection (keys, purge, whole-log checks)."""
    principal.require(ADMIN)
    if principal.collections is not None:
        raise InsufficientAccessError("this needs an admin key granted every collection")
    return principal


EnrollKey = Annotated[Principal, needs("enroll")]
IdentifyKey = Annotated[Principal, needs("identify")]
VerifyKey = Annotated[Principal, needs("verify")]
AdminKey = Annotated[Principal, needs(ADMIN)]
GlobalAdminKey = Annotated[Principal, Depends(global_admin)]
