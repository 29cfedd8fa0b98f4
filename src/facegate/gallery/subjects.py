"""Reading subjects: listing, counting and fetching them with their templates and consents."""

from __future__ import annotations

from .context import GalleryContext, collection_in, subject_in
from .errors import InvalidArgumentError
from .ports import ConsentRow, StoreTransaction, SubjectRow
from .types import Consent, Subject, TemplateInfo


def to_consent(r: ConsentRow) -> Consent:
    return Consent(r.purpose, r.granted_at, r.expires_at, r.evidence_ref, r.withdrawn_at, r.actor)


def to_subject(tx: StoreTransaction, collection: str, row: SubjectRow) -> Subject:
    consents = tuple(to_consent(r) for r in tx.consents_of([row.id]))
    tpls = tuple(TemplateInfo(t.id, t.model_id, t.created_at, dict(t.quality or {})) for t in tx.templates_meta(row.id))
    return Subject(collection, row.external_id, row.label, row.created_at, row.last_seen_at, tpls, consents)


def list_page(ctx: GalleryContext, collection: str, *, limit: int, offset: int, purpose: str | None,
              after: str | None) -> list[Subject]:
    if not (1 <= limit <= 10_000) or offset < 0:
        raise InvalidArgumentError("limit must be 1–10000 and offset ≥ 0")
    now = ctx.now()
    with ctx.store.read() as tx:
        col = collection_in(tx, collection)
        rows = tx.list_subjects(col.id, limit=limit, offset=offset, purpose=purpose, now=now, after=after)
        return [to_subject(tx, collection, r) for r in rows]


def count(ctx: GalleryContext, collection: str, *, purpose: str | None) -> int:
    with ctx.store.read() as tx:
        return tx.count_subjects(collection_in(tx, collection).id, purpose, ctx.now())


def get(ctx: GalleryContext, collection: str, subject: str) -> Subject:
    with ctx.store.read() as tx:
        col = collection_in(tx, collection)
        return to_subject(tx, collection, subject_in(tx, col, subject))
