"""Enrolment: each image through the quality gate, embedded, checked against the subject's own
templates (same person, not the same photo) and, optionally, against other subjects
(duplicates); then the accepted templates stored encrypted and the whole call audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine import Chosen
from ..errors import FacegateError
from ..results import Face
from ..vision.subject import SubjectRule
from .collections import check_purpose, threshold_of
from .consent import check_spec, consent_rows
from .context import GalleryContext, ImageLike, collection_in, find_subject
from .errors import ConsentRequiredError, InvalidArgumentError
from .liveness_gate import Liveness, require
from .names import check_name
from .ports import CollectionRow, CollectionVectors, StoreTransaction, SubjectRow
from .subjects import to_consent
from .types import Consent, ConsentSpec, DuplicateMatch, EnrollResult, ImageOutcome, QualityPolicy

if TYPE_CHECKING:
    from ..engine import FaceEngine

MAX_TEMPLATES_PER_SUBJECT = 20
DUPLICATE_IMAGE_COSINE = 0.98  # a new template this close to one of the subject's own is the same photo

Gated = tuple[Face | None, str | None, str | None]  # (face, reject reason, message)


@dataclass
class Request:
    collection: str
    subject: str
    consent: ConsentSpec | None
    label: str | None
    dedup_purpose: str | None
    force_mismatch: str | None
    actor: str


@dataclass
class Screening:
    """Each image's outcome so far, the images kept, their vectors and the mismatch scores."""

    outcomes: dict[int, ImageOutcome] = field(default_factory=dict)
    kept: list[int] = field(default_factory=list)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    faces: dict[int, Face] = field(default_factory=dict)
    mismatches: list[dict[str, Any]] = field(default_factory=list)


def image_list(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    if isinstance(images, (str, Path, bytes, bytearray, np.ndarray, Chosen)) or hasattr(images, "getbands"):  # PIL image
        return [images]
    return list(images)


def _source(image: ImageLike, i: int) -> str:
    if isinstance(image, Chosen):
        image = image.image
    return str(image) if isinstance(image, (str, Path)) else f"image[{i}]"


def gate(engine: FaceEngine, image: ImageLike, policy: QualityPolicy) -> Gated:
    """The subject face (or the face a ``Chosen`` image names) if it passes the enrolment
    quality gate, else (face?, reason, message)."""
    if isinstance(image, Chosen):
        # The operator named the face: no subject rule to apply, only the quality gate.
        try:
            chosen = engine.face(image)
        except FacegateError as exc:
            return None, exc.code, exc.message
        failures = policy.failures(chosen.quality)
        return (chosen, *failures[0]) if failures else (chosen, None, None)
    try:
        # The engine's subject rule with this collection's margin on top: an enrolment photo
        # must show one clear subject (a wrong-person template harms every later search).
        faces, subject = engine.detect_subject(image, SubjectRule(margin=policy.max_second_face_ratio))
    except FacegateError as exc:
        return None, exc.code, exc.message
    if isinstance(subject, FacegateError):
        message = "no face found" if not faces else f"{len(faces)} faces; enrol photos must show one clear subject"
        return (faces[0] if faces else None), subject.code, message
    failures = policy.failures(subject.quality)
    if failures:
        return subject, *failures[0]
    return subject, None, None


def _embed(engine: FaceEngine, gated: list[Gated]) -> dict[int, np.ndarray]:
    passed = {i: f for i, (f, reason, _m) in enumerate(gated) if reason is None and f is not None}
    embeddings = engine.embed_faces(list(passed.values())) if passed else []
    return {i: e.vector.astype(np.float32) for i, e in zip(passed, embeddings)}


def _own_match(own: np.ndarray, sc: Screening, v: np.ndarray) -> float | None:
    """Best score of ``v`` against the subject's templates and the faces kept before it."""
    prior = np.vstack([own] + [sc.vectors[j][None] for j in sc.kept]) if (len(own) or sc.kept) else own
    return float((prior @ v).max()) if len(prior) else None


def find_duplicates(ctx: GalleryContext, idx: CollectionVectors, v: np.ndarray, purpose: str, thr: float,
                    now: dt.datetime, existing: SubjectRow | None, subject: str) -> tuple[DuplicateMatch, ...]:
    """Other subjects ``v`` matches above the threshold among those whose active consent
    covers ``purpose`` — the same rule as ``identify`` (index filter, then the store)."""
    hits, _n = idx.search(v, 3, purpose, now.timestamp(), exclude_subject=None if existing is None else existing.id)
    above = [h for h in hits if h.score >= thr and h.external_id != subject]
    if not above:
        return ()
    with ctx.store.read() as tx:
        confirmed = tx.active_consent_subjects([h.subject_id for h in above], purpose, now)
    return tuple(DuplicateMatch(h.external_id, h.score) for h in above if h.subject_id in confirmed)


def _screen(ctx: GalleryContext, req: Request, col: CollectionRow, imgs: list[ImageLike], gated: list[Gated],
            vectors: dict[int, np.ndarray], existing: SubjectRow | None, n_existing: int, now: dt.datetime) -> Screening:
    thr = threshold_of(col)
    idx = ctx.index.get(col.id, col.embedding_dim, col.model_id)
    own = idx.subject_vectors(existing.id) if existing is not None else np.zeros((0, col.embedding_dim), np.float32)
    sc = Screening(vectors=vectors)
    room = MAX_TEMPLATES_PER_SUBJECT - n_existing
    for i, (face, reason, msg) in enumerate(gated):
        src = _source(imgs[i], i)
        if reason is not None:
            sc.outcomes[i] = ImageOutcome(i, src, False, reason, msg, face)
            continue
        assert face is not None
        best = _own_match(own, sc, vectors[i])
        if best is not None and best >= DUPLICATE_IMAGE_COSINE:
            sc.outcomes[i] = ImageOutcome(i, src, False, "duplicate_image",
                                          "the same photo (or a near copy) is already enrolled", face)
            continue
        if best is not None and best < thr:
            sc.mismatches.append({"index": i, "score": round(best, 6)})
            if req.force_mismatch is None:
                sc.outcomes[i] = ImageOutcome(i, src, False, "face_mismatch",
                                              "this face does not match the subject's enrolled face(s); an admin can force it "
                                              "with a stated reason", face)
                continue
        if len(sc.kept) >= room:
            sc.outcomes[i] = ImageOutcome(i, src, False, "template_limit",
                                          f"a subject keeps at most {MAX_TEMPLATES_PER_SUBJECT} templates", face)
            continue
        dups = (find_duplicates(ctx, idx, vectors[i], req.dedup_purpose, thr, now, existing, req.subject)
                if req.dedup_purpose else ())
        sc.outcomes[i] = ImageOutcome(i, src, True, None, None, face, None, dups)
        sc.faces[i] = face
        sc.kept.append(i)
    return sc


def _persist(ctx: GalleryContext, tx: StoreTransaction, req: Request, col: CollectionRow, sc: Screening,
             now: dt.datetime) -> tuple[bool, tuple[Consent, ...]]:
    """Store the kept templates (creating the subject if needed) and any new consent; returns
    (subject created, the subject's consents)."""
    s = tx.subject(col.id, req.subject)
    created = False
    if s is None and sc.kept:
        if req.consent is None:
            raise ConsentRequiredError(f"subject {req.subject!r} was erased meanwhile; enrolment needs a consent",
                                       subject=req.subject)
        _dek, wrapped = ctx.crypto.new_subject_key(col.id, req.subject)
        tx.insert_subject(collection_id=col.id, external_id=req.subject, label=req.label, created_at=now,
                          last_seen_at=now, wrapped_key=wrapped, master_key_id=ctx.crypto.master_key_id)
        s = tx.subject(col.id, req.subject)
        created = True
    elif s is not None and req.consent is None and not tx.active_consent_subjects([s.id], None, now):
        raise ConsentRequiredError(f"subject {req.subject!r} has no active consent; pass a new consent", subject=req.subject)
    if s is None:
        return created, ()
    cipher = ctx.crypto.subject_key(s.wrapped_key, col.id, req.subject)
    if req.consent is not None:
        tx.insert_consents(consent_rows(s.id, req.consent, req.actor, now))
    for i in sc.kept:
        nonce, ct = cipher.encrypt(sc.vectors[i], col.model_id)
        tid = tx.insert_template(subject_id=s.id, collection_id=col.id, model_id=col.model_id, nonce=nonce,
                                 ciphertext=ct, quality=sc.faces[i].quality.to_dict(), created_at=now)
        o = sc.outcomes[i]
        sc.outcomes[i] = ImageOutcome(o.index, o.source, True, None, None, o.face, tid, o.duplicates)
    values: dict[str, Any] = {"last_seen_at": now}
    if req.label is not None:
        values["label"] = req.label
    tx.update_subject(s.id, **values)
    tx.add_change(col.id, s.id, "subject", now)
    return created, tuple(to_consent(r) for r in tx.consents_of([s.id]))


def _audit(ctx: GalleryContext, tx: StoreTransaction, req: Request, result: EnrollResult, sc: Screening,
           disclosed: bool, live_details: dict[str, Any], now: dt.datetime) -> None:
    found = result.duplicates
    dups = [d.subject for d in found]
    forced = [m for m in sc.mismatches if sc.outcomes[m["index"]].accepted]
    ctx.audit.append(
        tx, actor=req.actor, action="enroll", now=now, collection=req.collection, subjects=[req.subject, *dups],
        decision="enrolled" if result.accepted else "rejected",
        score=max((d.score for d in found), default=None),
        details={"accepted": result.accepted, "rejected": result.rejected, "created": result.created,
                 "reasons": sorted({o.reason for o in result.images if o.reason}),
                 "consent_purposes": list(req.consent.purposes) if req.consent else [],
                 "dedup_purpose": req.dedup_purpose, "duplicates": dups,
                 "duplicate_scores": [round(d.score, 6) for d in found],
                 "flagged_for_review": bool(found), "duplicates_disclosed": bool(found) and disclosed,
                 **({"face_mismatch": sc.mismatches} if sc.mismatches else {}),
                 **({"forced_mismatch": (req.force_mismatch or "").strip()} if forced else {}),
                 **live_details},
    )


def _validate(req: Request) -> None:
    if req.label is not None and len(req.label) > 256:
        raise InvalidArgumentError("label is at most 256 characters")
    if req.force_mismatch is not None and not (0 < len(req.force_mismatch.strip()) <= 256):
        raise InvalidArgumentError("force_mismatch is the reason for accepting a mismatching face: 1–256 characters")


def enroll(ctx: GalleryContext, req: Request, images: ImageLike | Sequence[ImageLike], *, liveness: Liveness,
           disclose_duplicates: bool, progress: Callable[[int, int | None], None] | None = None) -> EnrollResult:
    """``progress(done, total)``: the images through the quality gate so far, after each one
    (detection, the slow part; the accepted faces are then embedded in one batch)."""
    req.subject = check_name("subject", req.subject)
    _validate(req)
    col = ctx.collection_row(req.collection)
    if req.dedup_purpose is not None:
        check_purpose(col, req.dedup_purpose)
    live_details = require(ctx, col, "enroll", liveness, actor=req.actor, subjects=[req.subject])
    engine = ctx.engines.for_collection(col)
    now = ctx.now()
    if req.consent is not None:
        check_spec(col, req.consent, now)
    with ctx.store.read() as tx:
        existing = find_subject(tx, col.id, req.subject)
        has_active = existing is not None and bool(tx.active_consent_subjects([existing.id], None, now))
        n_existing = tx.count_templates(existing.id) if existing is not None else 0
    if req.consent is None and not has_active:
        raise ConsentRequiredError(
            f"enrolling {req.subject!r} needs an active consent: give the purposes the subject consented to "
            "and the evidence reference",
            subject=req.subject,
        )
    imgs = image_list(images)
    if not imgs:
        raise InvalidArgumentError("no images given")
    policy = QualityPolicy.from_dict(col.quality_policy)
    gated: list[Gated] = []
    for img in imgs:
        gated.append(gate(engine, img, policy))
        if progress is not None:
            progress(len(gated), len(imgs))
    sc = _screen(ctx, req, col, imgs, gated, _embed(engine, gated), existing, n_existing, now)
    with ctx.store.write() as tx:
        ctx.key_current(tx)
        created, consents = _persist(ctx, tx, req, collection_in(tx, req.collection), sc, now)
        result = EnrollResult(req.collection, req.subject, created, tuple(sc.outcomes[i] for i in range(len(imgs))), consents)
        _audit(ctx, tx, req, result, sc, disclose_duplicates, live_details, now)
    ctx.index.sync()
    return result if disclose_duplicates else result.undisclosed()
