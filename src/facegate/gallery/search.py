"""Searching the gallery: 1:N identification (from an image or a template) and 1:1
verification against an enrolled subject — each purpose-bound and audited, refusals included."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np

from ..errors import FacegateError
from ..results import Face, Quality
from .collections import check_purpose, purpose_allowed, threshold_of
from .context import CollectionChangedError, GalleryContext, ImageLike, find_subject
from .errors import (
    ConflictError,
    ConsentRequiredError,
    InvalidArgumentError,
    LivenessRequiredError,
    ModelMismatchError,
    StoreError,
    SubjectNotFoundError,
)
from .liveness_gate import Liveness, liveness_missing, require
from .ports import CollectionRow
from .types import Candidate, IdentifyResult, SubjectVerifyResult

MAX_TOP_K = 100

# The decision a refusal is recorded under: ``refused_<error code>``, but for the names the audit
# log used before every refusal was recorded.
_REFUSED = {"consent_required": "refused_no_consent"}


@contextmanager
def audited_refusal(ctx: GalleryContext, action: str, collection: str, purpose: str | None, actor: str,
                    subjects: Sequence[str] = ()) -> Iterator[None]:
    """An attempted search is an auditable event whatever its outcome: a refusal (purpose not
    allowed, no face in the probe, unknown subject, ...) is recorded with its reason code before
    it propagates — nothing of the probe, no template, no score. The liveness gate records its
    own refusal (``refused_liveness_required``); a store that fails cannot record one."""
    try:
        yield
    except (LivenessRequiredError, StoreError):
        raise
    except FacegateError as exc:
        with ctx.store.write() as tx:
            ctx.audit.append(tx, actor=actor, action=action, now=ctx.now(), collection=collection, subjects=list(subjects),
                             purpose=purpose or None, decision=_REFUSED.get(exc.code, f"refused_{exc.code}"))
        raise


def identify(ctx: GalleryContext, collection: str, image: ImageLike, *, purpose: str, top_k: int, liveness: Liveness,
             actor: str) -> IdentifyResult:
    def probe(col: CollectionRow) -> tuple[np.ndarray, Face]:
        emb = ctx.engines.for_collection(col).embed(image)
        return emb.vector, emb.face

    return _identify(ctx, collection, probe, purpose, int(top_k), liveness, actor)


def identify_vector(ctx: GalleryContext, collection: str, vector: np.ndarray, *, purpose: str, top_k: int,
                    model_id: str, liveness: Liveness, actor: str) -> IdentifyResult:
    def probe(col: CollectionRow) -> tuple[np.ndarray, Face]:
        if model_id != col.model_id:
            raise ModelMismatchError(f"collection {collection!r} is pinned to {col.model_id}, not {model_id}")
        return np.asarray(vector, np.float32), _NO_FACE

    return _identify(ctx, collection, probe, purpose, int(top_k), liveness, actor)


Probe = Callable[[CollectionRow], tuple[np.ndarray, Face]]  # the probe's template in a collection's model
_NO_FACE = Face((0, 0, 0, 0), (), 0.0, Quality(0, 0, 0, 0, 0, 0, 0, 0))
_CHANGES_TOLERATED = 3  # an identification's collection changed before its write: admitted again


def _identify(ctx: GalleryContext, collection: str, probe: Probe, purpose: str, top_k: int, liveness: Liveness,
              actor: str) -> IdentifyResult:
    changed = 0
    while True:
        with audited_refusal(ctx, "identify", collection, purpose, actor):
            if changed == _CHANGES_TOLERATED:
                raise ConflictError(f"collection {collection!r} kept changing during the identification; try again",
                                    collection=collection)
            col, live_details, vector, face = _admit(ctx, collection, purpose, top_k, liveness, actor, probe)
        with suppress(CollectionChangedError):  # rolled back: admitted again on the current row
            return _search(ctx, col, vector, face, purpose, top_k, actor, live_details)
        changed += 1


def _admit(ctx: GalleryContext, collection: str, purpose: str, top_k: int, liveness: Liveness, actor: str,
           probe: Probe) -> tuple[CollectionRow, dict[str, Any], np.ndarray, Face]:
    """The checks before an identification searches: top_k, the collection, the declared purpose,
    the collection's liveness requirement and the probe's model. Returns the collection, the
    liveness details and the probe. A remembered collection row serves only if it admits the
    search; a refusal is judged on the row read afresh."""
    if not (1 <= top_k <= MAX_TOP_K):
        raise InvalidArgumentError(f"top_k must be between 1 and {MAX_TOP_K}")
    col = ctx.collections.remembered(collection, ctx.index)
    if col is not None and purpose_allowed(col, purpose) and not liveness_missing(col, "identify", liveness):
        live_details = require(ctx, col, "identify", liveness, actor=actor, purpose=purpose)
        with suppress(ModelMismatchError):  # the name may be another collection's by now
            return col, live_details, *probe(col)
    col = ctx.collections.read(ctx.store, collection)
    check_purpose(col, purpose)
    live_details = require(ctx, col, "identify", liveness, actor=actor, purpose=purpose)
    return col, live_details, *probe(col)


def _search(ctx: GalleryContext, col: CollectionRow, vector: np.ndarray, face: Face, purpose: str, top_k: int,
            actor: str, live_details: dict[str, Any]) -> IdentifyResult:
    """Search, then in one write transaction: confirm the collection row, re-check the hits'
    consent in the database, touch them (retention) and record the audit event."""
    thr = threshold_of(col)
    now = ctx.now()
    hits, searched = ctx.index.search_current(col.id, col.embedding_dim, col.model_id,
                                              lambda idx: idx.search(vector, top_k + 2, purpose, now.timestamp()))
    above = [h for h in hits if h.score >= thr]
    best = hits[0].score if hits else None
    with ctx.store.write() as tx:
        reads = tx.identification_reads(col.id, [h.subject_id for h in above], purpose, now, top_k)
        ctx.collections.confirm(tx, col, reads.collection)
        seen = set(reads.seen)
        above = [h for h in above if h.subject_id in seen]
        ctx.audit.append(
            tx, actor=actor, action="identify", now=now, collection=col.name, subjects=[h.external_id for h in above],
            purpose=purpose, decision="match" if above else "no_match", score=above[0].score if above else best,
            details={"top_k": top_k, "candidates": len(above), "searched_subjects": searched, "threshold": round(thr, 6),
                     **live_details},
            head=reads.audit_head,
        )
    cands = tuple(Candidate(h.external_id, h.label, h.score, r) for r, h in enumerate(above, 1))
    return IdentifyResult(col.name, purpose, cands, thr, col.fmr, col.model_id, face, searched)


def verify(ctx: GalleryContext, collection: str, subject: str, image: ImageLike, *, purpose: str, liveness: Liveness,
           actor: str) -> SubjectVerifyResult:
    with audited_refusal(ctx, "verify", collection, purpose, actor, [subject]):
        col = ctx.collection_row(collection)
        check_purpose(col, purpose)
        live_details = require(ctx, col, "verify", liveness, actor=actor, subjects=[subject], purpose=purpose)
        engine = ctx.engines.for_collection(col)
        now = ctx.now()
        with ctx.store.read() as tx:
            s = find_subject(tx, col.id, subject)
            ok = s is not None and bool(tx.active_consent_subjects([s.id], purpose, now))
        if s is None:
            raise SubjectNotFoundError(f"no subject {subject!r} in collection {collection!r}", subject=subject)
        if not ok:
            raise ConsentRequiredError(f"subject {subject!r} has no active consent for purpose {purpose!r}",
                                       subject=subject, purpose=purpose)
        emb = engine.embed(image)
    thr = threshold_of(col)
    V = ctx.index.get(col.id, col.embedding_dim, col.model_id).subject_vectors(s.id)
    score = float((V @ emb.vector.astype(np.float32)).max()) if len(V) else -1.0
    match = score >= thr
    with ctx.store.write() as tx:
        if match:
            tx.touch_subjects([s.id], now)
        ctx.audit.append(tx, actor=actor, action="verify", now=now, collection=collection, subjects=[subject],
                         purpose=purpose, decision="match" if match else "no_match", score=score,
                         details={"threshold": round(thr, 6), "templates": int(len(V)), **live_details})
    return SubjectVerifyResult(collection, subject, purpose, match, score, thr, col.fmr, col.model_id, emb.face)
