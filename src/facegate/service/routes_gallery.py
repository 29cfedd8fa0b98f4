"""Gallery routes under /v1: collections, subjects, consents, faces (enrolment), identify, audit,
purge and API keys. Scopes (docs/service.md): listing and reading collections needs any valid
key; identify -> ``identify``; subjects, consents, enrolment and erasure -> ``enroll``;
creating/updating/deleting collections, audit, purge and keys -> ``admin``. A collection the key is not
granted answers 404 exactly like a missing one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response

from . import gallery_ops, verify_ops
from .deps import AdminKey, EnrollKey, GlobalAdminKey, GrantedCollection, IdentifyKey, PrincipalDep, ServiceDep
from .errors import InsufficientAccessError
from .payload import openapi_body, read_payload
from .schemas import (
    AuditList,
    AuditReportOut,
    CollectionCreate,
    CollectionList,
    CollectionOut,
    CollectionUpdate,
    ConsentIn,
    EnrollOut,
    EnrollRequest,
    ErasureOut,
    IdentifyOut,
    IdentifyRequest,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    PurgeOut,
    SubjectList,
    SubjectOut,
    problem_responses,
)

router = APIRouter(prefix="/v1")

SubjectId = Annotated[str, Path(min_length=1, max_length=256, description="The subject's external id.")]
PurposeQ = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.:-]*$")]

READ = problem_responses(401, 403, 404, 429, 503)
WRITE = problem_responses(400, 401, 403, 404, 409, 422, 429, 503)
IMAGES = problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 503, 504)


# --- collections -----------------------------------------------------------------------------------


@router.get("/collections", response_model=CollectionList, tags=["collections"], responses=READ,
            summary="Collections this key is granted")
async def list_collections(service: ServiceDep, principal: PrincipalDep) -> dict[str, Any]:
    return {"collections": await gallery_ops.list_collections(service, principal)}


@router.post("/collections", response_model=CollectionOut, status_code=201, tags=["collections"], responses=WRITE,
             summary="Create a collection (admin)")
async def create_collection(service: ServiceDep, principal: AdminKey, body: CollectionCreate) -> dict[str, Any]:
    if not principal.sees(body.name):
        raise InsufficientAccessError(f"this key may not create collection {body.name!r}", collection=body.name)
    return await gallery_ops.create_collection(service, principal, body)


@router.get("/collections/{collection}", response_model=CollectionOut, tags=["collections"], responses=READ,
            summary="One collection: model, purposes, threshold, retention, counts")
async def get_collection(service: ServiceDep, collection: GrantedCollection, principal: PrincipalDep) -> dict[str, Any]:
    return await gallery_ops.get_collection(service, principal, collection)


@router.patch("/collections/{collection}", response_model=CollectionOut, tags=["collections"], responses=WRITE,
              summary="Change a collection's settings: liveness_required (admin)",
              description="Fields left out keep their value. The change is audited (`collection.update`).")
async def update_collection(service: ServiceDep, collection: GrantedCollection, principal: AdminKey,
                            body: CollectionUpdate) -> dict[str, Any]:
    return await gallery_ops.update_collection(service, principal, collection, body)


@router.delete("/collections/{collection}", response_model=ErasureOut, tags=["collections"], responses=WRITE,
               summary="Delete a collection and erase every subject in it (admin)")
async def delete_collection(service: ServiceDep, collection: GrantedCollection, principal: AdminKey) -> dict[str, Any]:
    return await gallery_ops.delete_collection(service, principal, collection)


# --- subjects --------------------------------------------------------------------------------------

ErasureReason = Annotated[str, Query(min_length=1, max_length=64, description="Recorded in the audit tombstone.")]


@router.get("/collections/{collection}/subjects", response_model=SubjectList, tags=["subjects"], responses=READ,
            summary="Subjects with their consents (enroll)")
async def list_subjects(
    service: ServiceDep, collection: GrantedCollection, principal: EnrollKey,
    limit: Annotated[int, Query(ge=1, le=500)] = 100, offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    purpose: Annotated[str | None, Query(max_length=64, description="Only subjects with an active consent for it.")] = None,
) -> dict[str, Any]:
    return await gallery_ops.list_subjects(service, principal, collection, limit, offset, purpose)


@router.get("/collections/{collection}/subjects/{subject}", response_model=SubjectOut, tags=["subjects"],
            responses=READ, summary="One subject: consents and template metadata (enroll)")
async def get_subject(
    service: ServiceDep, collection: GrantedCollection, principal: EnrollKey, subject: SubjectId
) -> dict[str, Any]:
    return await gallery_ops.get_subject(service, principal, collection, subject)


@router.delete("/collections/{collection}/subjects/{subject}", response_model=ErasureOut, tags=["subjects"],
               responses=WRITE, summary="Erase a subject: templates, consents and its data key (enroll)",
               description="Right to erasure. Takes effect for the very next search; only an audit tombstone remains.")
async def erase_subject(
    service: ServiceDep, collection: GrantedCollection, principal: EnrollKey, subject: SubjectId,
    reason: ErasureReason = "request",
) -> dict[str, Any]:
    return await gallery_ops.erase_subject(service, principal, collection, subject, reason)


# Browsers fold a '.' or '..' path segment even when percent-encoded (the WHATWG URL parser), so a
# subject stored under such an id before names were checked is addressed by a query parameter here.
SubjectIdQ = Annotated[str, Query(alias="id", min_length=1, max_length=256, description="The subject's external id.")]


@router.get("/collections/{collection}/subject", response_model=SubjectOut, tags=["subjects"], responses=READ,
            summary="One subject by ?id= (enroll): for ids a URL path cannot carry, like a legacy '..'")
async def get_subject_by_query(service: ServiceDep, collection: GrantedCollection, principal: EnrollKey,
                               subject: SubjectIdQ) -> dict[str, Any]:
    return await gallery_ops.get_subject(service, principal, collection, subject)


@router.delete("/collections/{collection}/subject", response_model=ErasureOut, tags=["subjects"], responses=WRITE,
               summary="Erase a subject by ?id= (enroll): for ids a URL path cannot carry, like a legacy '..'")
async def erase_subject_by_query(
    service: ServiceDep, collection: GrantedCollection, principal: EnrollKey, subject: SubjectIdQ,
    reason: ErasureReason = "request",
) -> dict[str, Any]:
    return await gallery_ops.erase_subject(service, principal, collection, subject, reason)


@router.post(
    "/collections/{collection}/subjects/{subject}/faces", response_model=EnrollOut, tags=["subjects"], responses=IMAGES,
    summary="Enrol face images for a subject (enroll)",
    description=(
        "Creates the subject on first enrolment, which then needs the consent (`purposes`, optional `expires_at`, "
        "`evidence_ref`). Each image passes the collection's quality gate or is rejected with a reason code; a face "
        "that does not match the subject's enrolled faces is rejected with `face_mismatch` (an admin key can accept it "
        "with a reason, `force_mismatch`). With `dedup_purpose`, an accepted face that matches a *different* subject "
        "consenting to that purpose sets `flagged_for_review`; the matches are listed under `duplicates` only for a key "
        "with the identify scope. In a photo with several faces, `faces` (one entry per image: an index from "
        "/v1/detect, or null) chooses the face meant; a chosen face still passes the quality gate. "
        "Images are not stored, only templates (encrypted). Answers 201 when the subject was created."
    ),
    openapi_extra=openapi_body(EnrollRequest),
)
async def enroll(request: Request, response: Response, service: ServiceDep, collection: GrantedCollection,
                 principal: EnrollKey, subject: SubjectId) -> dict[str, Any]:
    body, images = await read_payload(request, EnrollRequest, max_images=service.settings.max_images_per_request)
    out = await verify_ops.enroll(service, principal, collection, subject, body, images.get("images", []))
    response.status_code = 201 if out["created"] else 200
    return out


@router.post("/collections/{collection}/subjects/{subject}/consents", response_model=SubjectOut, tags=["consents"],
             responses=WRITE, summary="Grant consent for purposes (enroll)")
async def grant_consent(service: ServiceDep, collection: GrantedCollection, principal: EnrollKey, subject: SubjectId,
                        body: ConsentIn) -> dict[str, Any]:
    return await gallery_ops.grant_consent(service, principal, collection, subject, body)


@router.delete("/collections/{collection}/subjects/{subject}/consents/{purpose}", response_model=SubjectOut,
               tags=["consents"], responses=WRITE, summary="Withdraw consent for one purpose (enroll); immediate")
async def withdraw_consent(service: ServiceDep, collection: GrantedCollection, principal: EnrollKey, subject: SubjectId,
                           purpose: PurposeQ) -> dict[str, Any]:
    return await gallery_ops.withdraw_consent(service, principal, collection, subject, [purpose])


@router.delete("/collections/{collection}/subjects/{subject}/consents", response_model=SubjectOut, tags=["consents"],
               responses=WRITE, summary="Withdraw every consent of the subject (enroll); immediate")
async def withdraw_all_consents(service: ServiceDep, collection: GrantedCollection, principal: EnrollKey,
                                subject: SubjectId) -> dict[str, Any]:
    return await gallery_ops.withdraw_consent(service, principal, collection, subject, None)


# --- identification --------------------------------------------------------------------------------


@router.post(
    "/collections/{collection}/identify", response_model=IdentifyOut, tags=["biometrics"], responses=IMAGES,
    summary="1:N identification with a declared purpose (identify)",
    description=(
        "Searches only subjects whose consent covers `purpose` now. Returns candidates at or above the collection "
        "threshold, best first, or none (`decision: no_match`). In a photo with several faces, `face` (an index from "
        "/v1/detect or from an `ambiguous_face` problem's `candidates`) or `box` chooses the face meant. "
        "The probe is not stored; the search is audited."
    ),
    openapi_extra=openapi_body(IdentifyRequest),
)
async def identify(
    request: Request, service: ServiceDep, collection: GrantedCollection, principal: IdentifyKey
) -> dict[str, Any]:
    body, images = await read_payload(request, IdentifyRequest, max_images=1)
    return await verify_ops.identify(service, principal, collection, body, images.get("image", [None])[0])


# --- audit and retention ---------------------------------------------------------------------------


@router.get("/audit", response_model=AuditList, tags=["audit"], responses=problem_responses(401, 403, 404, 422, 429),
            summary="Audit events, newest first (admin)")
async def audit_list(
    service: ServiceDep, principal: AdminKey,
    collection: Annotated[str | None, Query(max_length=64)] = None,
    subject: Annotated[str | None, Query(max_length=256)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[str | None, Query(max_length=40, description="ISO 8601")] = None,
    until: Annotated[str | None, Query(max_length=40, description="ISO 8601")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_seq: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> dict[str, Any]:
    return await gallery_ops.audit_list(service, principal, collection=collection, subject=subject,
                                    action=action, since=since, until=until, limit=limit, before_seq=before_seq)


@router.get("/audit/verify", response_model=AuditReportOut, tags=["audit"], responses=READ,
            summary="Check the audit hash chain and the witness (admin of every collection)")
async def audit_verify(
    service: ServiceDep, principal: GlobalAdminKey,
    expect_head: Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$", description="A head MAC recorded earlier: it must "
                                             "still be in the chain (as `facegate audit verify --expect-head`).")] = None,
) -> AuditReportOut:
    return await gallery_ops.audit_verify(service, principal, expect_head)


@router.post("/purge", response_model=PurgeOut, tags=["audit"], responses=WRITE,
             summary="Erase subjects past retention or without active consent (admin of every collection)")
async def purge(service: ServiceDep, principal: GlobalAdminKey,
                dry_run: Annotated[bool, Query(description="Only report what would be erased.")] = True) -> dict[str, Any]:
    return await gallery_ops.purge(service, principal, dry_run)


# --- API keys --------------------------------------------------------------------------------------


@router.get("/keys", response_model=KeyList, tags=["keys"], responses=READ, summary="API keys (admin of every collection)")
async def list_keys(service: ServiceDep, principal: GlobalAdminKey,
                    include_revoked: Annotated[bool, Query()] = False) -> dict[str, Any]:
    return {"keys": await gallery_ops.list_keys(service, include_revoked)}


@router.post("/keys", response_model=KeyCreated, status_code=201, tags=["keys"], responses=WRITE,
             summary="Create an API key; the secret is shown once (admin of every collection)")
async def create_key(service: ServiceDep, principal: GlobalAdminKey, body: Annotated[KeyCreate, Body()]) -> dict[str, Any]:
    return await gallery_ops.create_key(service, principal, body)


@router.delete("/keys/{name}", response_model=KeyOut, tags=["keys"], responses=WRITE,
               summary="Revoke an API key by name or prefix (admin of every collection)")
async def revoke_key(service: ServiceDep, principal: GlobalAdminKey,
                     name: Annotated[str, Path(min_length=1, max_length=64)]) -> dict[str, Any]:
    return await gallery_ops.revoke_key(service, principal, name)
