"""Biometric decisions through the library: image-vs-image and image-vs-subject verification,
enrolment and 1:N identification, each turned into its response body. A liveness session stands
in for an image only after this request has consumed it (``backend.liveness_frame``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..calibration import DEFAULT_FMR, supported_fmr
from ..engine import Chosen
from ..errors import FaceError, FacegateError
from ..gallery import ADMIN, EnrollResult, QualityPolicy, SubjectVerifyResult
from ..results import Face, VerifyResult
from ..vision.subject import DEFAULT_RULE, SubjectRule
from .auth import Principal
from .backend import audit, chosen, consent_spec, engine_of, gallery_of, liveness_frame
from .core import Service
from .errors import ValidationFailedError
from .faces import face_out
from .schemas import (
    DetectedFaceOut,
    DetectRequest,
    DetectResponse,
    EnrollRequest,
    IdentifyRequest,
    VerifyRequest,
)


def _faces_out(faces: dict[str, Face]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each face with its quality verdict, and the verdicts' reasons as warnings ("image_a:blurred"):
    one quality check per face."""
    out = {name: face_out(face) for name, face in faces.items()}
    return out, [f"{name}:{r}" for name, f in out.items() for r in f["quality_reasons"]]


def _decision(result: VerifyResult | SubjectVerifyResult) -> dict[str, Any]:
    """The fields every 1:1 decision reports (pair or subject)."""
    return {
        "decision": "match" if result.match else "no_match",
        "match": result.match,
        "score": round(float(result.score), 6),
        "threshold": round(float(result.threshold), 6),
        "fmr": result.fmr,
        "model": result.model,
    }


async def detect(service: Service, body: DetectRequest, image: bytes) -> DetectResponse:
    """Every face in ``image``, most prominent first, each with its quality verdict under the
    collection's policy (``body.collection``) or the default one, and which is the subject."""
    engine = engine_of(service)
    gallery = service.gallery

    def run() -> tuple[list[Face], Face | FaceError, QualityPolicy | None]:
        policy = gallery.get_collection(body.collection).quality_policy if body.collection and gallery is not None else None
        # A collection's enrolment margin makes the subject choice as strict as enrolment will be.
        rule = DEFAULT_RULE if policy is None else SubjectRule(margin=policy.max_second_face_ratio)
        return *engine.detect_subject(image, rule), policy

    faces, subject_face, policy = await service.run(run, kind="detect")
    subject = next((i for i, f in enumerate(faces) if f is subject_face), None)
    reasons = [subject_face.code] if isinstance(subject_face, FaceError) else []
    service.metrics.decision("detect", "faces" if faces else "no_face")
    return DetectResponse(model=engine.model_id, count=len(faces), subject=subject, reasons=reasons,
                          faces=[DetectedFaceOut.model_validate({**face_out(f, policy), "index": i, "subject": i == subject})
                                 for i, f in enumerate(faces)])


async def verify(service: Service, principal: Principal, body: VerifyRequest,
                 images: dict[str, list[bytes]]) -> dict[str, Any]:
    """/v1/verify's two modes: ``image_a`` vs ``image_b``, or ``image``/``liveness_session`` vs
    ``collection``/``subject``; a request mixing them is refused."""
    pair = "image_a" in images or "image_b" in images
    against_subject = body.collection is not None or body.subject is not None or "image" in images or body.liveness_session
    if pair and against_subject:
        raise ValidationFailedError("send either image_a + image_b, or image/liveness_session + collection + subject, not both")
    if pair:
        if "image_a" not in images or "image_b" not in images:
            raise ValidationFailedError("image vs image verification needs both image_a and image_b")
        if body.face is not None or body.box is not None:
            raise ValidationFailedError("face/box choose the face of a probe verified against a subject; use face_a/face_b "
                                        "(or box_a/box_b) for image_a and image_b")
        fmr = supported_fmr(DEFAULT_FMR if body.fmr is None else body.fmr)
        a = chosen(images["image_a"][0], body.face_a, body.box_a)
        b = chosen(images["image_b"][0], body.face_b, body.box_b)
        return await verify_pair(service, principal, a, b, body.purpose, fmr)  # engine.verify takes a Chosen image
    if any(v is not None for v in (body.face_a, body.face_b, body.box_a, body.box_b)):
        raise ValidationFailedError("face_a/face_b and box_a/box_b choose faces of image_a and image_b; use face/box for "
                                    "a probe verified against a subject")
    if not body.collection or not body.subject:
        raise ValidationFailedError("verification against a subject needs collection and subject (or send image_a + image_b)")
    if ("image" in images) == bool(body.liveness_session):
        raise ValidationFailedError("send exactly one of image or liveness_session")
    if body.liveness_session and (body.face is not None or body.box is not None):
        raise ValidationFailedError("a liveness session's probe is its checked face; face/box apply to an uploaded image")
    probe = chosen(images["image"][0], body.face, body.box) if "image" in images else None
    principal.require_collection(body.collection)
    return await verify_subject(
        service, principal, body.collection, body.subject, probe, body.purpose, body.fmr,
        liveness_session=body.liveness_session,
    )


async def verify_pair(service: Service, principal: Principal, a: bytes | Chosen, b: bytes | Chosen, purpose: str,
                      fmr: float) -> dict[str, Any]:
    result = await service.run(engine_of(service).verify, a, b, fmr, kind="verify")
    outcome = "match" if result.match else "no_match"
    service.metrics.decision("verify", outcome)
    faces, warnings = _faces_out({"image_a": result.face_a, "image_b": result.face_b})
    await audit(service, principal, action="verify.images", purpose=purpose, decision=outcome, score=result.score)
    return {
        **_decision(result),
        "purpose": purpose,
        "reasons": ["score_at_or_above_threshold" if result.match else "score_below_threshold", *warnings],
        "faces": faces,
    }


async def verify_subject(service: Service, principal: Principal, collection: str, subject: str, image: bytes | Chosen | None,
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

    probe: bytes | Chosen | np.ndarray | None = image

    def run() -> SubjectVerifyResult:  # one worker job per request: no second trip through the queue
        check_fmr()
        return g.verify(collection, subject, probe, purpose=purpose, liveness=consumed, actor=principal.audit_actor())

    if liveness_session:
        await service.run(check_fmr, kind="store")
        probe = await liveness_frame(service, principal, liveness_session, purpose)
        consumed = liveness_session
    try:
        result = await service.run(run, kind="verify")
    except FacegateError as exc:
        service.metrics.decision("verify_subject", exc.code)
        raise
    outcome = "match" if result.match else "no_match"
    service.metrics.decision("verify_subject", outcome)
    faces, warnings = _faces_out({"image": result.face})
    return {
        **_decision(result),
        "purpose": result.purpose,
        "collection": result.collection,
        "subject": result.subject,
        "reasons": ["score_at_or_above_threshold" if result.match else "score_below_threshold", *warnings],
        "faces": faces,
        "liveness_session": liveness_session,
    }


# --- enrolment and identification -----------------------------------------------------------------------------------


async def enroll(service: Service, principal: Principal, collection: str, subject: str, body: EnrollRequest,
                 images: list[bytes]) -> dict[str, Any]:
    """``body.faces`` (aligned with ``images``) wraps each image with its chosen face."""
    g = gallery_of(service)
    principal.require_collection(collection)
    consumed: str | None = None  # only a session consumed here proves liveness (see verify_subject)
    probes: list[bytes | Chosen | np.ndarray] = list(images)
    if body.liveness_session:
        if images:
            raise ValidationFailedError("send images or liveness_session, not both")
        if body.faces is not None:
            raise ValidationFailedError("faces chooses faces in uploaded images, not in a liveness session's frame")
        probes = [await liveness_frame(service, principal, body.liveness_session, None)]
        consumed = body.liveness_session
    if not probes:
        raise ValidationFailedError("send at least one image (or a liveness_session)")
    if body.faces is not None:
        if len(body.faces) != len(images):
            raise ValidationFailedError(f"faces has {len(body.faces)} entries for {len(images)} images: one per image "
                                        "(null where the subject rule decides)", faces=len(body.faces), images=len(images))
        probes = [chosen(img, face, None) for img, face in zip(images, body.faces)]
    consent = consent_spec(body.purposes, body.expires_at, body.evidence_ref) if body.purposes else None
    if body.force_mismatch is not None:
        principal.require(ADMIN)
    # Duplicate matches name subjects and scores: only for callers that may identify.
    disclose = principal.has("identify")

    def run() -> tuple[EnrollResult, QualityPolicy]:  # one worker job: the enrolment and the policy its faces are drawn with
        res = g.enroll(collection, subject, probes, consent=consent, label=body.label, liveness=consumed,
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


async def identify(service: Service, principal: Principal, collection: str, body: IdentifyRequest,
                   image: bytes | None) -> dict[str, Any]:
    g = gallery_of(service)
    principal.require_collection(collection)
    consumed: str | None = None  # only a session consumed here proves liveness (see verify_subject)
    probe: bytes | Chosen | np.ndarray
    if body.liveness_session:
        if image is not None:
            raise ValidationFailedError("send image or liveness_session, not both")
        if body.face is not None or body.box is not None:
            raise ValidationFailedError("face/box choose a face in an uploaded image, not in a liveness session's frame")
        probe = await liveness_frame(service, principal, body.liveness_session, body.purpose)
        consumed = body.liveness_session
    elif image is None:
        raise ValidationFailedError("send an image (or a liveness_session)")
    else:
        probe = chosen(image, body.face, body.box)
    try:
        result = await service.run(g.identify, collection, probe, purpose=body.purpose, top_k=body.top_k,
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

