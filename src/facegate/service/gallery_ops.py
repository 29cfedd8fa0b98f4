"""Gallery records through the library: collections, subjects and consents, the audit log,
retention purges and API keys, each turned into its response body."""

from __future__ import annotations

from typing import Any

from ..gallery import Collection, QualityPolicy, Subject
from .auth import Principal
from .backend import consent_spec, gallery_of, request_time
from .core import Service
from .errors import ValidationFailedError
from .schemas import AuditReportOut, CollectionCreate, CollectionUpdate, ConsentIn, KeyCreate

# --- collections -----------------------------------------------------------------------------------


async def list_collections(service: Service, principal: Principal) -> list[dict[str, Any]]:
    g = gallery_of(service)
    cols = await service.run(g.list_collections, kind="store")
    return [c.to_dict() for c in cols if principal.sees(c.name)]


async def create_collection(service: Service, principal: Principal, body: CollectionCreate) -> dict[str, Any]:
    g = gallery_of(service)
    kwargs: dict[str, Any] = {
        "purposes": tuple(body.purposes), "model": service.settings.model, "fmr": body.fmr,
        "threshold": body.threshold, "retention_days": body.retention_days, "description": body.description,
        "actor": principal.audit_actor(),
    }
    if body.quality_policy is not None:
        kwargs["quality_policy"] = QualityPolicy.from_dict(body.quality_policy.model_dump(exclude_none=True))
    if body.liveness_required:
        kwargs["liveness_required"] = tuple(body.liveness_required)
    col = await service.run(g.create_collection, body.name, kind="store", side_effects=True, **kwargs)
    return col.to_dict()


async def update_collection(service: Service, principal: Principal, name: str, body: CollectionUpdate) -> dict[str, Any]:
    """Change a collection's settings (today: ``liveness_required``); fields left out stay."""
    g = gallery_of(service)
    principal.require_collection(name)

    def run() -> Collection:
        if body.liveness_required is not None:
            g.set_collection_liveness(name, tuple(body.liveness_required), actor=principal.audit_actor())
        return g.get_collection(name)

    return (await service.run(run, kind="store", side_effects=True)).to_dict()


async def get_collection(service: Service, principal: Principal, name: str) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(name)
    return (await service.run(g.get_collection, name, kind="store")).to_dict()


async def delete_collection(service: Service, principal: Principal, name: str) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(name)
    n = await service.run(g.delete_collection, name, actor=principal.audit_actor(), kind="store", side_effects=True)
    service.metrics.decision("erase_collection", "erased")
    return {"collection": name, "erased": True, "subjects_erased": int(n or 0)}


# --- subjects and consents -------------------------------------------------------------------------


async def list_subjects(service: Service, principal: Principal, collection: str, limit: int, offset: int,
                        purpose: str | None) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(collection)

    def run() -> tuple[int, list[Subject]]:
        return (g.count_subjects(collection, purpose=purpose),
                g.list_subjects(collection, limit=limit, offset=offset, purpose=purpose))

    total, subjects = await service.run(run, kind="store")
    return {"collection": collection, "subjects": [s.to_dict() for s in subjects], "limit": limit, "offset": offset,
            "total": total}


async def get_subject(service: Service, principal: Principal, collection: str, subject: str) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(collection)
    return (await service.run(g.get_subject, collection, subject, kind="store")).to_dict()


async def erase_subject(service: Service, principal: Principal, collection: str, subject: str, reason: str) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(collection)
    await service.run(g.delete_subject, collection, subject, actor=principal.audit_actor(), reason=reason,
                      kind="store", side_effects=True)
    service.metrics.decision("erase_subject", "erased")
    return {"collection": collection, "subject": subject, "erased": True}


async def grant_consent(service: Service, principal: Principal, collection: str, subject: str, body: ConsentIn) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(collection)
    spec = consent_spec(body.purposes, body.expires_at, body.evidence_ref, body.granted_at)
    s = await service.run(g.grant_consent, collection, subject, spec, actor=principal.audit_actor(),
                          kind="store", side_effects=True)
    return s.to_dict()


async def withdraw_consent(service: Service, principal: Principal, collection: str, subject: str,
                           purposes: list[str] | None) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(collection)
    s = await service.run(g.withdraw_consent, collection, subject, purposes, actor=principal.audit_actor(),
                          kind="store", side_effects=True)
    return s.to_dict()


# --- audit, purge, keys ----------------------------------------------------------------------------


async def audit_list(service: Service, principal: Principal, *, collection: str | None, subject: str | None,
                     action: str | None, since: str | None, until: str | None, limit: int,
                     before_seq: int | None) -> dict[str, Any]:
    g = gallery_of(service)
    if collection is not None:
        principal.require_collection(collection)
    elif principal.collections is not None:
        raise ValidationFailedError("this key is limited to some collections: pass ?collection=",
                                    collections=sorted(principal.collections))
    events = await service.run(
        g.audit_list, collection=collection, subject=subject, action=action, since=request_time(since, "since"),
        until=request_time(until, "until"), limit=limit, before_seq=before_seq, kind="store",
    )
    rows = [e.to_dict() for e in events]
    return {"events": rows, "next_before_seq": rows[-1]["seq"] if len(rows) == limit and rows else None}


async def audit_verify(service: Service, principal: Principal, expect_head: str | None = None) -> AuditReportOut:
    g = gallery_of(service)
    report = await service.run(g.audit_verify, expect_head=expect_head, kind="store")
    return AuditReportOut.model_validate(report, from_attributes=True)


async def purge(service: Service, principal: Principal, dry_run: bool) -> dict[str, Any]:
    g = gallery_of(service)
    report = await service.run(g.purge, dry_run=dry_run, actor=principal.audit_actor(), kind="store", side_effects=True)
    return report.to_dict()


async def list_keys(service: Service, include_revoked: bool) -> list[dict[str, Any]]:
    g = gallery_of(service)
    return [k.to_dict() for k in await service.run(g.keys.list, include_revoked=include_revoked, kind="store")]


async def create_key(service: Service, principal: Principal, body: KeyCreate) -> dict[str, Any]:
    g = gallery_of(service)
    record, secret = await service.run(
        g.keys.create, body.name, scopes=tuple(body.scopes), collections=body.collections,
        expires_at=request_time(body.expires_at, "expires_at"), actor=principal.audit_actor(), kind="store", side_effects=True,
    )
    return {"key": record.to_dict(), "secret": secret}


async def revoke_key(service: Service, principal: Principal, name: str) -> dict[str, Any]:
    g = gallery_of(service)
    record = await service.run(g.keys.revoke, name, actor=principal.audit_actor(), kind="store", side_effects=True)
    return record.to_dict()
