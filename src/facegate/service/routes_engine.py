"""Stateless biometric endpoints: detect faces, verify two images (or an image against a subject)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..calibration import DEFAULT_FMR, SUPPORTED_FMRS
from ..errors import CalibrationError, FaceError
from ..gallery import QualityPolicy
from ..results import Face
from ..vision.subject import DEFAULT_RULE, SubjectRule
from . import verify_ops
from .backend import chosen, engine_of
from .deps import PrincipalDep, ServiceDep
from .errors import ValidationFailedError
from .faces import face_out
from .payload import openapi_body, read_payload
from .schemas import DetectedFaceOut, DetectRequest, DetectResponse, VerifyRequest, VerifyResponse, problem_responses

router = APIRouter(prefix="/v1", tags=["biometrics"])

IMAGE_PROBLEMS = problem_responses(400, 401, 403, 404, 413, 415, 422, 429, 503, 504)


def check_fmr(fmr: float) -> float:
    for supported in SUPPORTED_FMRS:
        if abs(fmr - supported) <= supported * 1e-6:
            return supported
    raise CalibrationError(
        f"no threshold calibrated for FMR {fmr:g}; choose one of {', '.join(f'{f:g}' for f in SUPPORTED_FMRS)}", fmr=fmr
    )


@router.post(
    "/detect", response_model=DetectResponse, summary="Find faces: boxes, landmarks, quality",
    description="Every face in the image (at most the configured faces-per-image limit), most prominent first, "
    "each with its index, whether it is the subject, and its quality verdict. When no face is clearly the subject "
    "(`ambiguous_face`), send the index of the face meant as `face_a`/`face_b` to /v1/verify. "
    "Requires any biometric scope. Nothing is stored.",
    openapi_extra=openapi_body(DetectRequest), responses=IMAGE_PROBLEMS,
)
async def detect(request: Request, service: ServiceDep, principal: PrincipalDep) -> DetectResponse:
    principal.require("verify", "identify", "enroll")
    body, images = await read_payload(request, DetectRequest, max_images=1)
    if body.collection is not None:
        principal.require_collection(body.collection)
    engine = engine_of(service)
    gallery = service.gallery

    def run() -> tuple[list[Face], Face | FaceError, QualityPolicy | None]:
        policy = gallery.get_collection(body.collection).quality_policy if body.collection and gallery is not None else None
        # A collection's enrolment margin makes the subject choice as strict as enrolment will be.
        rule = DEFAULT_RULE if policy is None else SubjectRule(margin=policy.max_second_face_ratio)
        return *engine.detect_subject(images["image"][0], rule), policy

    faces, chosen, policy = await service.run(run, kind="detect")
    subject = next((i for i, f in enumerate(faces) if f is chosen), None)
    reasons = [chosen.code] if isinstance(chosen, FaceError) else []
    service.metrics.decision("detect", "faces" if faces else "no_face")
    return DetectResponse(model=engine.model_id, count=len(faces), subject=subject, reasons=reasons,
                          faces=[DetectedFaceOut.model_validate({**face_out(f, policy), "index": i, "subject": i == subject})
                                 for i, f in enumerate(faces)])


@router.post(
    "/verify", response_model=VerifyResponse, summary="1:1 verification: two images, or an image against a subject",
    description=(
        "Two modes:\n\n"
        "* **image vs image**: `image_a` and `image_b`. Needs scope `verify`. In a photo with several faces, "
        "`face_a`/`face_b` (an index from /v1/detect or from an `ambiguous_face` problem's `candidates`) or "
        "`box_a`/`box_b` choose the face meant.\n"
        "* **image vs enrolled subject**: `image` (or `liveness_session`), `collection`, `subject`. Needs scope "
        "`verify` and the collection; the subject's consent must cover `purpose`. `face`/`box` choose the face "
        "of `image` meant.\n\n"
        "The decision is `match` when `score >= threshold`; the threshold is calibrated for the target `fmr`. "
        "Probe images are never stored; the decision (not the image) is audited."
    ),
    openapi_extra=openapi_body(VerifyRequest), responses=IMAGE_PROBLEMS,
)
async def verify(request: Request, service: ServiceDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.require("verify")
    body, images = await read_payload(request, VerifyRequest, max_images=2)
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
        fmr = check_fmr(DEFAULT_FMR if body.fmr is None else body.fmr)
        a = chosen(images["image_a"][0], body.face_a, body.box_a)
        b = chosen(images["image_b"][0], body.face_b, body.box_b)
        return await verify_ops.verify_pair(service, principal, a, b, body.purpose, fmr)  # engine.verify takes a Chosen image
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
    return await verify_ops.verify_subject(
        service, principal, body.collection, body.subject, probe, body.purpose, body.fmr,
        liveness_session=body.liveness_session,
    )
