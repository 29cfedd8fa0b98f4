"""Collections: create, update, delete and list them; their purposes and match thresholds."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable

from ..calibration import SUPPORTED_FMRS, calibration_for
from ..errors import CalibrationError
from ..models import NonCommercialModelWarning, embedder_spec
from .context import GalleryContext, collection_in
from .errors import CollectionExistsError, InvalidArgumentError, PurposeNotAllowedError, PurposeRequiredError
from .liveness_gate import liveness_ops
from .names import check_name
from .ports import CollectionRow
from .transaction import DuplicateRow
from .types import Collection, QualityPolicy

PURPOSE_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
DEFAULT_RETENTION_DAYS = 3 * 365

# Used only when the calibration table has no entry for a model and the collection sets no
# explicit threshold; results say threshold_source="provisional". SFace: OpenCV Zoo's published
# cosine threshold (0.363, LFW) is too lenient for 1:N; 0.42 is the FMR 1e-4 point measured on
# faces-dev (src/facegate/data/calibration.json), kept here in case that table is replaced.
PROVISIONAL_THRESHOLDS: dict[str, float] = {"sface-2021dec-int8bq": 0.42}


def threshold(model_id: str, fmr: float, explicit: float | None) -> tuple[float, str]:
    """The cosine threshold a collection matches at, and where it comes from."""
    if explicit is not None:
        return float(explicit), "explicit"
    try:
        return calibration_for(model_id).threshold(fmr), "calibration"
    except CalibrationError:
        if model_id in PROVISIONAL_THRESHOLDS:
            return PROVISIONAL_THRESHOLDS[model_id], "provisional"
        raise


def threshold_of(col: CollectionRow) -> float:
    return threshold(col.model_id, col.fmr, col.threshold)[0]


def purpose_allowed(col: CollectionRow, purpose: str | None) -> bool:
    return bool(purpose) and purpose in col.purposes


def check_purpose(col: CollectionRow, purpose: str | None) -> str:
    if not purpose:
        raise PurposeRequiredError("a declared purpose is required for identification and verification")
    if not purpose_allowed(col, purpose):
        raise PurposeNotAllowedError(
            f"purpose {purpose!r} is not allowed in collection {col.name!r} (allowed: {', '.join(col.purposes)})",
            purpose=purpose, allowed=list(col.purposes),
        )
    return purpose


def to_collection(row: CollectionRow, counts: tuple[int, int] | None = None) -> Collection:
    thr, src = threshold(row.model_id, row.fmr, row.threshold)
    return Collection(
        name=row.name, model_id=row.model_id, model_sha256=row.model_sha256, embedding_dim=row.embedding_dim,
        purposes=tuple(row.purposes), fmr=row.fmr, threshold=thr, threshold_source=src,
        retention_days=row.retention_days, created_at=row.created_at,
        quality_policy=QualityPolicy.from_dict(row.quality_policy), description=row.description,
        subjects=None if counts is None else counts[0], templates=None if counts is None else counts[1],
        liveness_required=tuple(row.liveness_required or ()),
    )


def _check_settings(purposes: tuple[str, ...], fmr: float, explicit: float | None, retention_days: int) -> None:
    if not purposes:
        raise InvalidArgumentError("a collection needs at least one allowed purpose")
    bad = [p for p in purposes if not PURPOSE_RE.match(p)]
    if bad:
        raise InvalidArgumentError(f"invalid purpose(s) {', '.join(bad)}: lower-case letters, digits, _.:- (max 64)")
    if not (0 < fmr < 1):
        raise InvalidArgumentError("fmr must be in (0, 1)")
    if explicit is None and not any(abs(fmr - f) <= 1e-12 for f in SUPPORTED_FMRS):
        allowed = ", ".join(f"{f:g}" for f in SUPPORTED_FMRS)
        raise InvalidArgumentError(f"fmr must be one of {allowed} (or give an explicit threshold)")
    if explicit is not None and not (-1.0 <= explicit <= 1.0):
        raise InvalidArgumentError("threshold is a cosine similarity in [-1, 1]")
    if not (1 <= int(retention_days) <= 36500):
        raise InvalidArgumentError("retention_days must be between 1 and 36500")


def create(ctx: GalleryContext, name: str, *, purposes: Iterable[str], model: str | None, fmr: float,
           explicit: float | None, retention_days: int, quality_policy: QualityPolicy | None, description: str | None,
           liveness_required: Iterable[str] | str | None, actor: str) -> Collection:
    name = check_name("collection", name)
    purposes = tuple(dict.fromkeys(p.strip() for p in purposes if p.strip()))
    _check_settings(purposes, fmr, explicit, retention_days)
    live_ops = liveness_ops(liveness_required)
    if model is None:
        given = ctx.engines.engine
        spec = given.spec if given is not None else embedder_spec("sface")
    else:
        with warnings.catch_warnings():  # pinning only: loading the weights still needs the opt-in and warns
            warnings.simplefilter("ignore", NonCommercialModelWarning)
            spec = embedder_spec(model, allow_noncommercial=True)
    threshold(spec.id, fmr, explicit)  # fail now, not at the first search
    assert spec.embedding_dim is not None  # every embedder's spec states its dimension
    now = ctx.now()
    policy = quality_policy or QualityPolicy()
    try:
        with ctx.store.write() as tx:
            ctx.key_current(tx)
            if tx.collection_by_name(name) is not None:
                raise CollectionExistsError(f"collection {name!r} already exists", collection=name)
            cid = tx.insert_collection(
                name=name, model_id=spec.id, model_sha256=spec.sha256, embedding_dim=int(spec.embedding_dim),
                purposes=list(purposes), fmr=float(fmr), threshold=explicit, retention_days=int(retention_days),
                quality_policy=policy.to_dict(), description=description, created_at=now,
                liveness_required=list(live_ops),
            )
            tx.add_change(cid, None, "collection", now)
            ctx.audit.append(tx, actor=actor, action="collection.create", now=now, collection=name,
                             details={"model": spec.id, "purposes": list(purposes), "fmr": fmr, "threshold": explicit,
                                      "retention_days": int(retention_days), "liveness_required": list(live_ops)})
            row = tx.collection_by_id(cid)
    except DuplicateRow:
        raise CollectionExistsError(f"collection {name!r} already exists", collection=name) from None
    assert row is not None
    return to_collection(row, (0, 0))


def set_liveness(ctx: GalleryContext, name: str, operations: Iterable[str] | str | None, *, actor: str) -> Collection:
    ops = liveness_ops(operations)
    now = ctx.now()
    with ctx.store.write() as tx:
        row = collection_in(tx, name)
        before = list(row.liveness_required or [])
        tx.update_collection(row.id, liveness_required=list(ops))
        ctx.audit.append(tx, actor=actor, action="collection.update", now=now, collection=name,
                         decision="updated", details={"liveness_required": list(ops), "previous": before})
        updated = tx.collection_by_id(row.id)
        assert updated is not None
        return to_collection(updated, tx.collection_counts(row.id))


def list_all(ctx: GalleryContext) -> list[Collection]:
    with ctx.store.read() as tx:
        return [to_collection(r, tx.collection_counts(r.id)) for r in tx.collections()]


def get(ctx: GalleryContext, name: str) -> Collection:
    with ctx.store.read() as tx:
        row = collection_in(tx, name)
        return to_collection(row, tx.collection_counts(row.id))


def delete(ctx: GalleryContext, name: str, *, actor: str) -> int:
    now = ctx.now()
    with ctx.store.write() as tx:
        row = collection_in(tx, name)
        subjects = tx.collection_subjects(row.id)
        n_sub, n_tpl = tx.collection_counts(row.id)
        for s in subjects:
            ctx.audit.append(tx, actor=actor, action="subject.erase", now=now, collection=name, subjects=[s.external_id],
                             decision="erased", details={"reason": "collection_deleted"})
        tx.delete_collection(row.id)
        tx.add_change(row.id, None, "collection", now)
        ctx.audit.append(tx, actor=actor, action="collection.delete", now=now, collection=name, decision="deleted",
                         details={"subjects": n_sub, "templates": n_tpl})
    ctx.index.drop(row.id)
    ctx.store.checkpoint()
    return n_sub
