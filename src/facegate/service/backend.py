"""The service's bridge to the engine and the gallery (issue 3).

Every call into them lives here, runs on the bounded worker pool (never on the event loop), is
made with the calling key as the audit ``actor``, and is turned into a response dictionary.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from ..engine import Chosen
from ..errors import FacegateError
from .auth import Principal, principal_from_record
from .errors import FeatureUnavailableError, InvalidApiKeyError, ValidationFailedError
from .faces import face_out, quality_verdict

log = logging.getLogger("facegate.service")


# --- lifecycle -----------------------------------------------------------------------------------


def open_backend(service: Any) -> None:
    """Open the embedded store and key store (called once at startup, on a thread)."""
    if service.gallery is None:
        try:
            from ..gallery import Gallery  # type: ignore[attr-defined]
        except ImportError:
            log.warning("facegate.gallery is not available: gallery routes answer 501")
            return
        service.settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        service.gallery = Gallery.open(service.settings.data_dir, engine=service.engine)
        service._own_gallery = True
    if service.authenticator is None and service.gallery is not None and hasattr(service.gallery, "keys"):
        service.authenticator = _gallery_authenticator(service.gallery)
        service._own_authenticator = True


def close_backend(service: Any) -> None:
    gallery = service.gallery
    if gallery is not None and service._own_gallery and hasattr(gallery, "close"):
        gallery.close()
        service.gallery = None
        if getattr(service, "_own_authenticator", False):
            service.authenticator = None
            service._own_authenticator = False


def _gallery_authenticator(gallery: Any):
    from ..gallery.errors import AuthError

    def authenticate(secret: str) -> Principal | None:
        try:
            record = gallery.keys.authenticate(secret)
        except AuthError as exc:
            # Unknown, revoked and expired keys all read "invalid" to the caller (the code says which).
            raise InvalidApiKeyError("invalid, revoked or expired API key") if exc.code == "invalid_api_key" else exc
        return principal_from_record(record)

    return authenticate


def ensure_admin_key(gallery: Any, name: str = "admin") -> str | None:
    """On first start, when the store has no API key at all, create an admin key and return its
    secret (to be shown once). Returns None when keys already exist."""
    if gallery.keys.list(include_revoked=True):
        return None
    _, secret = gallery.keys.create(name, scopes=("admin",), collections=None, actor="serve:first-start")
    return secret


def gallery_of(service: Any) -> Any:
    if service.gallery is None:
        raise FeatureUnavailableError("the gallery is not available in this build")
    return service.gallery


# --- helpers ---------------------------------------------------------------------------------------


def parse_time(value: str | None, field: str) -> dt.datetime | None:
    if value is None or value == "":
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailedError(f"{field} is not an ISO 8601 time", field=field) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t


def chosen(image: bytes, face: int | None, box: list[float] | None) -> bytes | Chosen:
    """``image`` with the face the request chose in it (by index or by box); as is without a choice."""
    if face is not None and box is not None:
        raise ValidationFailedError("choose the face by its index or by a box, not both")
    ref = face if face is not None else box
    return image if ref is None else Chosen(image, ref)


async def liveness_frame(service: Any, principal: Principal, session_id: str, purpose: str | None) -> Any:
    return await service.run(service.liveness.take_frame, session_id, principal, purpose, kind="liveness")


# --- verification ----------------------------------------------------------------------------------


def _quality_warnings(service: Any, faces: dict[str, Any], policy: Any = None) -> list[str]:
    out = []
    for name, face in faces.items():
        ok, reasons = quality_verdict(face, policy)
        out.extend(f"{name}:{r}" for r in reasons)
    return out


def _decision(result: Any) -> dict[str, Any]:
    """The fields every 1:1 decision reports (pair or subject)."""
    return {
        "decision": "match" if result.match else "no_match",
        "match": result.match,
        "score": round(float(result.score), 6),
        "threshold": round(float(result.threshold), 6),
        "fmr": result.fmr,
        "model": result.model,
    }


async def verify_pair(service: Any, principal: Principal, a: bytes | Chosen, b: bytes | Chosen, purpose: str,
                      fmr: float) -> dict[str, Any]:
    engine = service.engine
    result = await service.run(engine.verify, a, b, fmr, kind="verify")
    outcome = "match" if result.match else "no_match"
    service.metrics.decision("verify", outcome)
    faces = {"image_a": result.face_a, "image_b": result.face_b}
    await audit(service, principal, action="verify.images", purpose=purpose, decision=outcome, score=result.score)
    return {
        **_decision(result),
        "purpose": purpose,
        "reasons": ["score_at_or_above_threshold" if result.match else "score_below_threshold",
                    *_quality_warnings(service, faces)],
        "faces": {k: face_out(f) for k, f in faces.items()},
    }


async def verify_subject(service: Any, principal: Principal, collection: str, subject: str, image: bytes | Chosen | None,
                         purpose: str, fmr: float | None, *, liveness_session: str | None = None) -> dict[str, Any]:
    g = gallery_of(service)

    def check_fmr() -> None:
        if fmr is not None:
            col = g.get_collection(collection)
            if abs(fmr - col.fmr) > col.fmr * 1e-6:
                raise ValidationFailedError(f"collection {collection!r} decides at FMR {col.fmr:g}; omit fmr or send that value",
                                            fmr=fmr, collection_fmr=col.fmr)

    # The liveness proof handed to the gallery (which enforces the collection's liveness_required)
    # is only ever the id of a session this request has just consumed here: a client cannot
    # claim liveness for an image it sent, and the API offers no override.
    consumed: str | None = None

    def run(image: Any) -> Any:  # one worker job per request: no second trip through the queue
        check_fmr()
        return g.verify(collection, subject, image, purpose=purpose, liveness=consumed, actor=principal.audit_actor())

    if liveness_session:
        await service.run(check_fmr, kind="store")
        image = await liveness_frame(service, principal, liveness_session, purpose)
        consumed = liveness_session
    try:
        result = await service.run(run, image, kind="verify")
    except FacegateError as exc:
        service.metrics.decision("verify_subject", exc.code)
        raise
    outcome = "match" if result.match else "no_match"
    service.metrics.decision("verify_subject", outcome)
    return {
        **_decision(result),
        "purpose": result.purpose,
        "collection": result.collection,
        "subject": result.subject,
        "reasons": ["score_at_or_above_threshold" if result.match else "score_below_threshold",
                    *_quality_warnings(service, {"image": result.face})],
        "faces": {"image": face_out(result.face)},
        "liveness_session": liveness_session,
    }


# --- collections -----------------------------------------------------------------------------------


def _collection_dict(col: Any) -> dict[str, Any]:
    return col.to_dict()


async def list_collections(service: Any, principal: Principal) -> list[dict[str, Any]]:
    g = gallery_of(service)
    cols = await service.run(g.list_collections, kind="store")
    return [_collection_dict(c) for c in cols if principal.sees(c.name)]


async def create_collection(service: Any, principal: Principal, body: Any) -> dict[str, Any]:
    g = gallery_of(service)
    kwargs: dict[str, Any] = {
        "purposes": tuple(body.purposes), "model": service.settings.model, "fmr": body.fmr,
        "threshold": body.threshold, "retention_days": body.retention_days, "description": body.description,
        "actor": principal.audit_actor(),
    }
    if body.quality_policy is not None:
        from ..gallery import QualityPolicy  # type: ignore[attr-defined]

        kwargs["quality_policy"] = QualityPolicy.from_dict(body.quality_policy.model_dump(exclude_none=True))
    if body.liveness_required:
        kwargs["liveness_required"] = tuple(body.liveness_required)
    col = await service.run(g.create_collection, body.name, kind="store", side_effects=True, **kwargs)
    return _collection_dict(col)


async def update_collection(service: Any, principal: Principal, name: str, body: Any) -> dict[str, Any]:
    """Change a collection's settings (today: ``liveness_required``); fields left out stay."""
    g = gallery_of(service)
    principal.require_collection(name)

    def run() -> Any:
        if body.liveness_required is not None:
            g.set_collection_liveness(name, tuple(body.liveness_required), actor=principal.audit_actor())
        return g.get_collection(name)

    return _collection_dict(await service.run(run, kind="store", side_effects=True))


async def get_collection(service: Any, principal: Principal, name: str) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(name)
    return _collection_dict(await service.run(g.get_collection, name, kind="store"))


async def delete_collection(service: Any, principal: Principal, name: str) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(name)
    n = await service.run(g.delete_collection, name, actor=principal.audit_actor(), kind="store", side_effects=True)
    service.metrics.decision("erase_collection", "erased")
    return {"collection": name, "erased": True, "subjects_erased": int(n or 0)}


# --- subjects and consents -------------------------------------------------------------------------


async def list_subjects(service: Any, principal: Principal, collection: str, limit: int, offset: int,
                        purpose: str | None) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(collection)
    def run() -> tuple[int, Any]:
        return (g.count_subjects(collection, purpose=purpose),
                g.list_subjects(collection, limit=limit, offset=offset, purpose=purpose))

    total, subjects = await service.run(run, kind="store")
    return {"collection": collection, "subjects": [s.to_dict() for s in subjects], "limit": limit, "offset": offset,
            "total": total}


async def get_subject(service: Any, principal: Principal, collection: str, subject: str) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(collection)
    return (await service.run(g.get_subject, collection, subject, kind="store")).to_dict()


async def erase_subject(service: Any, principal: Principal, collection: str, subject: str, reason: str) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(collection)
    await service.run(g.delete_subject, collection, subject, actor=principal.audit_actor(), reason=reason,
                      kind="store", side_effects=True)
    service.metrics.decision("erase_subject", "erased")
    return {"collection": collection, "subject": subject, "erased": True}


def consent_spec(purposes: list[str], expires_at: str | None, evidence_ref: str | None, granted_at: str | None = None) -> Any:
    from ..gallery import ConsentSpec  # type: ignore[attr-defined]

    return ConsentSpec(purposes=tuple(purposes), expires_at=parse_time(expires_at, "expires_at"),
                       evidence_ref=evidence_ref or None, granted_at=parse_time(granted_at, "granted_at"))


async def grant_consent(service: Any, principal: Principal, collection: str, subject: str, body: Any) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(collection)
    spec = consent_spec(body.purposes, body.expires_at, body.evidence_ref, body.granted_at)
    s = await service.run(g.grant_consent, collection, subject, spec, actor=principal.audit_actor(),
                          kind="store", side_effects=True)
    return s.to_dict()


async def withdraw_consent(service: Any, principal: Principal, collection: str, subject: str,
                           purposes: list[str] | None) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(collection)
    s = await service.run(g.withdraw_consent, collection, subject, purposes, actor=principal.audit_actor(),
                          kind="store", side_effects=True)
    return s.to_dict()


# --- enrolment and identification ------------------------------------------------------------------


async def enroll(service: Any, principal: Principal, collection: str, subject: str, body: Any,
                 images: list[bytes]) -> dict[str, Any]:
    """``body.faces`` (aligned with ``images``) wraps each image with its chosen face."""
    g = gallery_of(service)
    principal.require_collection(collection)
    consumed: str | None = None  # only a session consumed here proves liveness (see verify_subject)
    if body.liveness_session:
        if images:
            raise ValidationFailedError("send images or liveness_session, not both")
        if body.faces is not None:
            raise ValidationFailedError("faces chooses faces in uploaded images, not in a liveness session's frame")
        images = [await liveness_frame(service, principal, body.liveness_session, None)]
        consumed = body.liveness_session
    if not images:
        raise ValidationFailedError("send at least one image (or a liveness_session)")
    if body.faces is not None:
        if len(body.faces) != len(images):
            raise ValidationFailedError(f"faces has {len(body.faces)} entries for {len(images)} images: one per image "
                                        "(null where the subject rule decides)", faces=len(body.faces), images=len(images))
        images = [chosen(img, face, None) for img, face in zip(images, body.faces)]
    consent = consent_spec(body.purposes, body.expires_at, body.evidence_ref) if body.purposes else None
    if body.force_mismatch is not None:
        principal.require("admin")
    # Duplicate matches name subjects and scores: only for callers that may identify.
    disclose = principal.has("identify")

    def run() -> tuple[Any, Any]:  # one worker job: the enrolment and the policy its faces are drawn with
        res = g.enroll(collection, subject, images, consent=consent, label=body.label, liveness=consumed,
                       dedup_purpose=body.dedup_purpose, disclose_duplicates=disclose,
                       force_mismatch=body.force_mismatch, actor=principal.audit_actor())
        return res, g.get_collection(collection).quality_policy

    result, policy = await service.run(run, kind="enroll", side_effects=True)
    service.metrics.decision("enroll", "accepted", result.accepted) if result.accepted else None
    service.metrics.decision("enroll", "rejected", result.rejected) if result.rejected else None
    if result.flagged_for_review:
        service.metrics.decision("enroll", "duplicate_warning")
    out = result.to_dict()
    for img, outcome in zip(out["images"], result.images):
        if outcome.face is not None:
            img["face"] = face_out(outcome.face, policy)
    out["liveness_session"] = body.liveness_session
    return out


async def identify(service: Any, principal: Principal, collection: str, body: Any, image: bytes | None) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(collection)
    consumed: str | None = None  # only a session consumed here proves liveness (see verify_subject)
    if body.liveness_session:
        if image is not None:
            raise ValidationFailedError("send image or liveness_session, not both")
        if body.face is not None or body.box is not None:
            raise ValidationFailedError("face/box choose a face in an uploaded image, not in a liveness session's frame")
        image = await liveness_frame(service, principal, body.liveness_session, body.purpose)
        consumed = body.liveness_session
    if image is None:
        raise ValidationFailedError("send an image (or a liveness_session)")
    image = chosen(image, body.face, body.box)
    try:
        result = await service.run(g.identify, collection, image, purpose=body.purpose, top_k=body.top_k,
                                   liveness=consumed, actor=principal.audit_actor(), kind="identify")
    except FacegateError as exc:
        service.metrics.decision("identify", exc.code)
        raise
    outcome = "match" if result.match else "no_match"
    service.metrics.decision("identify", outcome)
    out = result.to_dict()
    out["decision"] = outcome
    out["face"] = face_out(result.face)
    out["reasons"] = [
        "candidates_at_or_above_threshold" if result.match else "no_candidate_above_threshold",
        *(["no_subject_consented_for_purpose"] if result.searched_subjects == 0 else []),
    ]
    return out


# --- audit, purge, keys ----------------------------------------------------------------------------


async def audit(service: Any, principal: Principal, **event: Any) -> None:
    """Record a decision made outside the gallery (image-vs-image verify, liveness) in its audit
    log when the gallery offers a way to (never pixels or templates)."""
    g = service.gallery
    record = getattr(g, "audit_record", None) if g is not None else None
    if record is None:
        return
    await service.run(record, actor=principal.audit_actor(), kind="audit", side_effects=True, **event)


async def audit_list(service: Any, principal: Principal, *, collection: str | None, subject: str | None,
                     action: str | None, since: str | None, until: str | None, limit: int,
                     before_seq: int | None) -> dict[str, Any]:
    g = gallery_of(service)
    if collection is not None:
        principal.require_collection(collection)
    elif principal.collections is not None:
        raise ValidationFailedError("this key is limited to some collections: pass ?collection=",
                                    collections=sorted(principal.collections))
    events = await service.run(
        g.audit_list, collection=collection, subject=subject, action=action, since=parse_time(since, "since"),
        until=parse_time(until, "until"), limit=limit, before_seq=before_seq, kind="store",
    )
    rows = [e.to_dict() for e in events]
    return {"events": rows, "next_before_seq": rows[-1]["seq"] if len(rows) == limit and rows else None}


async def audit_verify(service: Any, principal: Principal, expect_head: str | None = None) -> dict[str, Any]:
    g = gallery_of(service)
    return (await service.run(g.audit_verify, expect_head=expect_head, kind="store")).to_dict()


async def purge(service: Any, principal: Principal, dry_run: bool) -> dict[str, Any]:
    g = gallery_of(service)
    report = await service.run(g.purge, dry_run=dry_run, actor=principal.audit_actor(), kind="store", side_effects=True)
    return report.to_dict()


async def list_keys(service: Any, include_revoked: bool) -> list[dict[str, Any]]:
    g = gallery_of(service)
    return [k.to_dict() for k in await service.run(g.keys.list, include_revoked=include_revoked, kind="store")]


async def create_key(service: Any, principal: Principal, body: Any) -> dict[str, Any]:
    g = gallery_of(service)
    record, secret = await service.run(
        g.keys.create, body.name, scopes=tuple(body.scopes), collections=body.collections,
        expires_at=parse_time(body.expires_at, "expires_at"), actor=principal.audit_actor(), kind="store", side_effects=True,
    )
    return {"key": record.to_dict(), "secret": secret}


async def revoke_key(service: Any, principal: Principal, name: str) -> dict[str, Any]:
    g = gallery_of(service)
    record = await service.run(g.keys.revoke, name, actor=principal.audit_actor(), kind="store", side_effects=True)
    return record.to_dict()
