"""Stateless biometric endpoints: detect faces, verify two images (or an image against a subject)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..calibration import DEFAULT_FMR, SUPPORTED_FMRS
from ..engine import AMBIGUITY_RATIO
from ..errors import CalibrationError
from . import backend
from .deps import PrincipalDep, get_service
from .errors import ValidationFailedError
from .faces import face_out
from .payload import openapi_body, read_payload
from .schemas import DetectRequest, DetectResponse, VerifyRequest, VerifyResponse, problem_responses

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
    "each with its quality verdict. Requires any biometric scope. Nothing is stored.",
    openapi_extra=openapi_body(DetectRequest), responses=IMAGE_PROBLEMS,
)
async def detect(request: Request, principal: PrincipalDep) -> DetectResponse:
    principal.require("verify", "identify", "enroll")
    service = get_service(request)
    body, images = await read_payload(request, DetectRequest, max_images=1)
    if body.collection is not None:
        principal.require_collection(body.collection)
    engine = service.engine
    gallery = service.gallery

    def run() -> tuple[list, object]:
        policy = gallery.get_collection(body.collection).quality_policy if body.collection and gallery is not None else None
        return engine.detect(images["image"][0]), policy

    faces, policy = await service.run(run, kind="detect")
    ratio = policy.max_second_face_ratio if policy is not None else AMBIGUITY_RATIO
    subject = None
    reasons: list[str] = []
    if not faces:
        reasons.append("no_face")
    elif len(faces) > 1 and faces[1].prominence >= ratio * faces[0].prominence:
        reasons.append("ambiguous_face")
    else:
        subject = 0
    service.metrics.decision("detect", "faces" if faces else "no_face")
    return DetectResponse(model=engine.model_id, count=len(faces), subject=subject,
                          faces=[face_out(service, f, policy) for f in faces], reasons=reasons)


@router.post(
    "/verify", response_model=VerifyResponse, summary="1:1 verification: two images, or an image against a subject",
    description=(
        "Two modes:\n\n"
        "* **image vs image**: `image_a` and `image_b`. Needs scope `verify`.\n"
        "* **image vs enrolled subject**: `image` (or `liveness_session`), `collection`, `subject`. Needs scope "
        "`verify` and the collection; the subject's consent must cover `purpose`.\n\n"
        "The decision is `match` when `score >= threshold`; the threshold is calibrated for the target `fmr`. "
        "Probe images are never stored; the decision (not the image) is audited."
    ),
    openapi_extra=openapi_body(VerifyRequest), responses=IMAGE_PROBLEMS,
)
async def verify(request: Request, principal: PrincipalDep) -> VerifyResponse:
    principal.require("verify")
    service = get_service(request)
    body, images = await read_payload(request, VerifyRequest, max_images=2)
    pair = "image_a" in images or "image_b" in images
    against_subject = body.collection is not None or body.subject is not None or "image" in images or body.liveness_session
    if pair and against_subject:
        raise ValidationFailedError("send either image_a + image_b, or image/liveness_session + collection + subject, not both")
    if pair:
        if "image_a" not in images or "image_b" not in images:
            raise ValidationFailedError("image vs image verification needs both image_a and image_b")
        fmr = check_fmr(DEFAULT_FMR if body.fmr is None else body.fmr)
        return await backend.verify_pair(service, principal, images["image_a"][0], images["image_b"][0], body.purpose, fmr)
    if not body.collection or not body.subject:
        raise ValidationFailedError("verification against a subject needs collection and subject (or send image_a + image_b)")
    if ("image" in images) == bool(body.liveness_session):
        raise ValidationFailedError("send exactly one of image or liveness_session")
    principal.require_collection(body.collection)
    return await backend.verify_subject(
        service, principal, body.collection, body.subject, images.get("image", [None])[0], body.purpose, body.fmr,
        liveness_session=body.liveness_session,
    )
