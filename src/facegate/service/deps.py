"""FastAPI dependencies: the service, the calling key (authenticated and rate limited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from .auth import Principal, extract_key, unauthenticated
from .errors import AuthError, NotReadyError, RateLimitedError

bearer_scheme = HTTPBearer(auto_error=False, description="API key as a bearer token.", scheme_name="bearer")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key in a header.", scheme_name="apiKey")


def get_service(request: Request):  # -> Service
    return request.app.state.service


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def current_principal(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
    _header: Annotated[str | None, Security(header_scheme)] = None,
) -> Principal:
    """Who is calling. 401 without a valid key; 429 when over the key's rate (or, for failed
    sign-ins, the client address's).

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


async def _authenticate(service, secret: str) -> Principal:  # noqa: ANN001
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

    async def dependency(principal: PrincipalDep) -> Principal:
        principal.require(*scopes)
        return principal

    return Depends(dependency)


async def global_admin(principal: PrincipalDep) -> Principal:
    """An admin key granted every collection (keys, purge, whole-log checks)."""
    from .errors import InsufficientAccessError

    principal.require("admin")
    if principal.collections is not None:
        raise InsufficientAccessError("this needs an admin key granted every collection")
    return principal


EnrollKey = Annotated[Principal, needs("enroll")]
IdentifyKey = Annotated[Principal, needs("identify")]
VerifyKey = Annotated[Principal, needs("verify")]
AdminKey = Annotated[Principal, needs("admin")]
GlobalAdminKey = Annotated[Principal, Depends(global_admin)]
