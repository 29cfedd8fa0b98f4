"""Stateless biometric endpoints: detect faces, verify two images (or an image against a subject)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from . import verify_ops
from .deps import PrincipalDep, ServiceDep
from .payload import openapi_body, read_payload
from .schemas import DetectRequest, DetectResponse, VerifyRequest, VerifyResponse, problem_responses

router = APIRouter(prefix="/v1", tags=["biometrics"])

IMAGE_PROBLEMS = problem_responses(400, 401, 403, 404, 413, 415, 422, 429, 503, 504)


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
    return await verify_ops.detect(service, body, images["image"][0])


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
    return await verify_ops.verify(service, principal, body, images)
