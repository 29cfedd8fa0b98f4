"""Consent: checking a ConsentSpec against a collection, granting and withdrawing it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from .context import GalleryContext, aware, collection_in, subject_in
from .errors import InvalidArgumentError, PurposeNotAllowedError
from .ports import CollectionRow
from .subjects import to_subject
from .types import ConsentSpec, Subject


def check_spec(col: CollectionRow, consent: ConsentSpec, now: dt.datetime) -> ConsentSpec:
    if not isinstance(consent, ConsentSpec):
        raise InvalidArgumentError("consent must be a ConsentSpec")
    if not consent.purposes:
        raise InvalidArgumentError("a consent must name at least one purpose")
    bad = [p for p in consent.purposes if p not in col.purposes]
    if bad:
        raise PurposeNotAllowedError(
            f"purpose(s) {', '.join(bad)} not allowed in collection {col.name!r} (allowed: {', '.join(col.purposes)})",
            purpose=bad, allowed=list(col.purposes),
        )
    aware(consent.expires_at, "consent expires_at")
    aware(consent.granted_at, "consent granted_at")
    if consent.granted_at is not None and consent.granted_at > now + dt.timedelta(minutes=5):
        raise InvalidArgumentError("consent granted_at lies in the future")
    if consent.expires_at is not None and consent.expires_at <= (consent.granted_at or now):
        raise InvalidArgumentError("consent expires_at must be after it was granted")
    if consent.evidence_ref is not None and len(consent.evidence_ref) > 512:
        raise InvalidArgumentError("evidence_ref is at most 512 characters (a reference, not the document)")
    return consent


def consent_rows(sid: int, consent: ConsentSpec, actor: str, now: dt.datetime) -> list[dict[str, Any]]:
    granted = min(consent.granted_at or now, now)
    return [
        dict(subject_id=sid, purpose=p, granted_at=granted, expires_at=consent.expires_at, evidence_ref=consent.evidence_ref,
             withdrawn_at=None, actor=actor)
        for p in consent.purposes
    ]


def grant(ctx: GalleryContext, collection: str, subject: str, consent: ConsentSpec, *, actor: str) -> Subject:
    now = ctx.now()
    with ctx.store.write() as tx:
        col = collection_in(tx, collection)
        check_spec(col, consent, now)
        row = subject_in(tx, col, subject, hint=" (enrol first)")
        tx.insert_consents(consent_rows(row.id, consent, actor, now))
        tx.add_change(col.id, row.id, "subject", now)
        expires = consent.expires_at.isoformat() if consent.expires_at else None
        ctx.audit.append(tx, actor=actor, action="consent.grant", now=now, collection=collection, subjects=[subject],
                         decision="granted", details={"purposes": list(consent.purposes), "evidence_ref": consent.evidence_ref,
                                                      "expires_at": expires})
        out = to_subject(tx, collection, row)
    ctx.index.sync()
    return out


def withdraw(ctx: GalleryContext, collection: str, subject: str, purposes: Iterable[str] | None, *, actor: str) -> Subject:
    now = ctx.now()
    plist = None if purposes is None else [p.strip() for p in purposes if p.strip()]
    with ctx.store.write() as tx:
        col = collection_in(tx, collection)
        row = subject_in(tx, col, subject)
        n = tx.withdraw_consents(row.id, plist, now)
        tx.add_change(col.id, row.id, "subject", now)
        ctx.audit.append(tx, actor=actor, action="consent.withdraw", now=now, collection=collection, subjects=[subject],
                         decision="withdrawn", details={"purposes": plist, "consents": n})
        out = to_subject(tx, collection, row)
    ctx.index.sync()
    return out
