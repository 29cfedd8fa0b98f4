"""What every route module shares on its way to the library: the gallery's key store as the
service's authenticator, the gallery itself (or 501), request times, face choices and liveness
frames. Calls run on the bounded worker pool, with the calling key as the audit ``actor``; the
operations are in ``verify_ops`` (biometric decisions) and ``gallery_ops`` (records)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine import Chosen, FaceEngine
from ..gallery import ConsentSpec, Gallery
from ..gallery.errors import AuthError
from ..timefmt import TimeFormatError, parse_time
from .auth import Authenticator, Principal, principal_from_key
from .errors import FeatureUnavailableError, InvalidApiKeyError, NotReadyError, ValidationFailedError

if TYPE_CHECKING:
    from .core import Service


def gallery_authenticator(gallery: Gallery) -> Authenticator:
    """The gallery's key store as the service's authenticator."""

    def authenticate(secret: str) -> Principal | None:
        try:
            record = gallery.keys.authenticate(secret)
        except AuthError as exc:
            # Unknown, revoked and expired keys all read "invalid" to the caller (the code says which).
            if exc.code == "invalid_api_key":
                raise InvalidApiKeyError("invalid, revoked or expired API key") from None
            raise
        return principal_from_key(record)

    return authenticate


def ensure_admin_key(gallery: Gallery, name: str = "admin") -> str | None:
    """On first start, when the store has no API key at all, create an admin key and return its
    secret (to be shown once). Returns None when keys already exist."""
    if gallery.keys.list(include_revoked=True):
        return None
    _, secret = gallery.keys.create(name, scopes=("admin",), collections=None, actor="serve:first-start")
    return secret


def engine_of(service: Service) -> FaceEngine:
    if service.engine is None:
        raise NotReadyError("the engine is not loaded yet")
    return service.engine


def gallery_of(service: Service) -> Gallery:
    if service.gallery is None:
        raise FeatureUnavailableError("the gallery is not available in this build")
    return service.gallery


def request_time(value: str | None, field: str) -> dt.datetime | None:
    """An ISO 8601 time from a request (UTC when it names no zone); 422 when it is not one."""
    try:
        return parse_time(value, field)
    except TimeFormatError:
        raise ValidationFailedError(f"{field} is not an ISO 8601 time", field=field) from None


def consent_spec(purposes: list[str], expires_at: str | None, evidence_ref: str | None,
                 granted_at: str | None = None) -> ConsentSpec:
    return ConsentSpec(purposes=tuple(purposes), expires_at=request_time(expires_at, "expires_at"),
                       evidence_ref=evidence_ref or None, granted_at=request_time(granted_at, "granted_at"))


def chosen(image: bytes, face: int | None, box: list[float] | None) -> bytes | Chosen:
    """``image`` with the face the request chose in it (by index or by box); as is without a choice."""
    if face is not None and box is not None:
        raise ValidationFailedError("choose the face by its index or by a box, not both")
    ref = face if face is not None else box
    return image if ref is None else Chosen(image, ref)


async def liveness_frame(service: Service, principal: Principal, session_id: str, purpose: str | None) -> np.ndarray:
    return await service.run(service.liveness.take_frame, session_id, principal, purpose, kind="liveness")


async def audit(service: Service, principal: Principal, **event: Any) -> None:
    """Record a decision made outside the gallery (image-vs-image verify) in its audit log when a
    gallery is open (never pixels or templates)."""
    if service.gallery is None:
        return
    await service.run(service.gallery.audit_record, actor=principal.audit_actor(), kind="audit", side_effects=True,
                      **event)
