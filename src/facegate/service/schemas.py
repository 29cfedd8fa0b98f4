"""Request and response models (they are the OpenAPI schema).

The library's frozen dataclasses are the one source of what a result holds; a response model
here describes what the service sends for it, which is the record's ``to_dict()``: times as ISO
strings, tuples as lists, rounded scores, and computed properties as fields (``active``,
``active_purposes``, ``accepted``/``rejected``/``duplicates``, ``match``, ``count``). Mirrors of
records: ``QualityOut`` (``Quality``), ``CollectionOut`` (``Collection``), ``ConsentOut``,
``TemplateOut``, ``SubjectOut``, ``AuditEventOut``, ``AuditReportOut``, ``PurgeOut``
(``PurgeReport``), ``KeyOut`` (``ApiKey``), ``CandidateOut``, ``DuplicateOut``
(``DuplicateMatch``), ``ImageOutcomeOut``. tests/test_service_schemas.py holds each to a real
record's ``to_dict()`` — same keys, same order, values of the declared types — so a field added
to one side only fails there.

They are written out rather than built from the dataclasses when this module is imported,
because the typed client imports this module: building them would load the gallery package
(its ``__init__`` loads SQLAlchemy and the face engine), and a model built at run time is only
``type[BaseModel]`` to a type checker, which would take the client's return types from its users.

Where a model differs from its record, on purpose:

- ``FaceOut`` adds ``quality_ok``/``quality_reasons`` (the verdict under the collection's
  policy, which the face does not know) and leaves out the aligned crop (pixels never leave).
- ``VerifyResponse``, ``IdentifyOut`` add ``decision`` and ``reasons`` (HTTP answers carry the
  decision word and reason codes); ``VerifyResponse`` names the compared faces by input field.
- ``EnrollOut`` adds the ``liveness_session`` used; for a key without the identify scope its
  ``duplicates`` are empty and only ``flagged_for_review`` says a reviewer should look
  (``EnrollResult.undisclosed``, redaction).
- ``KeyCreated`` adds the ``secret`` shown once; ``Health``, ``Ready``, ``Me``, ``DetectResponse``,
  ``SubjectList``, ``AuditList``, ``CollectionList``, ``KeyList`` and ``ErasureOut`` are
  envelopes of the HTTP edge with no record of their own.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..calibration import DEFAULT_FMR

B64 = "Image bytes (JPEG, PNG, WebP, BMP, TIFF) as base64; a data: URL prefix is accepted. In multipart, a file."
Purpose = Field(
    ..., min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.:-]*$",
    description="Declared purpose of this use (e.g. 'kyc', 'access'); recorded in the audit log and checked against consent.",
)
FmrField = Field(DEFAULT_FMR, description="Target false-match rate: 0.001, 0.0001 or 0.00001.", gt=0, lt=1)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- faces -------------------------------------------------------------------------------------


class QualityOut(BaseModel):
    inter_eye_px: float = Field(description="Eye-centre distance in source pixels.")
    sharpness: float = Field(description="Variance of Laplacian of the aligned face (under ~50 is blurred).")
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    brightness: float = Field(description="Mean grey level of the aligned face, 0-255.")
    clipped: float = Field(description="Fraction of over/under-exposed face pixels.")
    detector_score: float


class FaceOut(BaseModel):
    box: list[float] = Field(description="x, y, width, height in source-image pixels (after EXIF rotation).")
    landmarks: list[list[float]] = Field(description="Five points: right eye, left eye, nose, right/left mouth corner.")
    score: float = Field(description="Detector confidence 0-1.")
    prominence: float = Field(description="Size weighted by centrality and detector confidence, 0-1; faces are listed most "
                              "prominent first (see docs/subject-face.md for when the first is the subject).")
    quality: QualityOut
    quality_ok: bool = Field(description="Whether the face passes the enrolment quality gate.")
    quality_reasons: list[str] = Field(default_factory=list, description="Reason codes when it does not.")


class DetectRequest(_Strict):
    __image_fields__: ClassVar[tuple[str, ...]] = ("image",)
    image: str = Field(..., description=B64)
    collection: str | None = Field(None, max_length=128, description="Judge quality (and ambiguity) by this collection's "
                                   "enrolment policy, as enrolment will; default: the default policy.")


class DetectedFaceOut(FaceOut):
    index: int = Field(description="This face's number in the image (0 = most prominent); send it as `face_a` / `face_b` "
                       "to choose this face.")
    subject: bool = Field(description="Whether this is the face facegate takes as the subject when none is chosen.")


class DetectResponse(BaseModel):
    model: str
    count: int
    subject: int | None = Field(description="Index of the subject face, null when there is none or no face is clearly "
                                "the subject (reason `ambiguous_face`: choose one by its index).")
    faces: list[DetectedFaceOut]
    reasons: list[str] = Field(default_factory=list)


# --- verify ------------------------------------------------------------------------------------


class VerifyRequest(_Strict):
    """Either two images (``image_a``, ``image_b``) or one image against an enrolled subject
    (``image`` or ``liveness_session``, with ``collection`` and ``subject``)."""

    __image_fields__: ClassVar[tuple[str, ...]] = ("image_a", "image_b", "image")
    purpose: str = Purpose
    image_a: str | None = Field(None, description=B64 + " First image (e.g. the selfie).")
    image_b: str | None = Field(None, description=B64 + " Second image (e.g. the ID photo).")
    image: str | None = Field(None, description=B64 + " Probe image, verified against `subject`.")
    collection: str | None = Field(None, max_length=128, description="Collection of the enrolled subject.")
    subject: str | None = Field(None, max_length=256, description="External id of the enrolled subject.")
    liveness_session: str | None = Field(None, max_length=128,
                                         description="A completed liveness session whose best frame is the probe.")
    fmr: float | None = Field(None, gt=0, lt=1, description="Target false-match rate for image vs image: 0.001, 0.0001 (default) "
                              "or 0.00001. Against a subject the collection's FMR applies.")
    face_a: int | None = Field(None, ge=0, description="Which face of image_a is meant: its index from /v1/detect (or from an "
                               "`ambiguous_face` problem's candidates). Default: the subject face.")
    face_b: int | None = Field(None, ge=0, description="Which face of image_b is meant, as face_a.")
    box_a: list[float] | None = Field(None, min_length=4, max_length=4, description="Which face of image_a is meant, as a box "
                                      "x, y, width, height in image pixels: the detected face overlapping it most is taken.")
    box_b: list[float] | None = Field(None, min_length=4, max_length=4, description="Which face of image_b is meant, as box_a.")
    face: int | None = Field(None, ge=0, description="Which face of `image` (verified against `subject`) is meant, as face_a.")
    box: list[float] | None = Field(None, min_length=4, max_length=4, description="Which face of `image` is meant, as box_a.")


class VerifyResponse(BaseModel):
    decision: Literal["match", "no_match"]
    match: bool
    score: float
    threshold: float
    fmr: float
    model: str
    purpose: str
    reasons: list[str] = Field(description="Reason codes for the decision (and quality warnings).")
    collection: str | None = None
    subject: str | None = None
    faces: dict[str, FaceOut] = Field(default_factory=dict, description="The faces compared, by input field.")
    liveness_session: str | None = None


# --- problems ----------------------------------------------------------------------------------


class Problem(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = Field(description="Stable problem type URI reference: /problems/<code>.")
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    request_id: str | None = None


PROBLEM_CONTENT = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed request", 401: "Missing or invalid API key", 403: "Key lacks the scope",
        404: "Not found (or not granted to this key)", 409: "Conflict", 413: "Body or image too large",
        415: "Unsupported media type", 422: "Invalid input or no usable face", 429: "Rate limited",
        503: "Busy or not ready", 504: "Timed out",
    }
    return {s: {"description": text.get(s, "Problem"), "model": Problem, "content": PROBLEM_CONTENT} for s in statuses}


class Health(BaseModel):
    status: str
    version: str


class Ready(BaseModel):
    status: str
    checks: dict[str, Any]


class Me(BaseModel):
    key_id: str
    name: str
    scopes: list[str]
    collections: list[str] | None = Field(description="Collections this key sees; null means all.")


# --- gallery -----------------------------------------------------------------------------------

NameField = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                  description="Collection name: letters, digits, '_', '.', '-'.")
PurposeItem = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.:-]*$")


LivenessOperation = Literal["enroll", "verify", "identify"]


class QualityPolicyIn(_Strict):
    min_inter_eye_px: float | None = Field(None, ge=0)
    min_sharpness: float | None = Field(None, ge=0)
    max_abs_yaw_deg: float | None = Field(None, ge=0, le=90)
    max_abs_pitch_deg: float | None = Field(None, ge=0, le=90)
    max_abs_roll_deg: float | None = Field(None, ge=0, le=180)
    min_brightness: float | None = Field(None, ge=0, le=255)
    max_brightness: float | None = Field(None, ge=0, le=255)
    max_clipped: float | None = Field(None, ge=0, le=1)
    min_detector_score: float | None = Field(None, ge=0, le=1)
    max_second_face_ratio: float | None = Field(None, ge=0, le=1)


class CollectionCreate(_Strict):
    name: str = NameField
    purposes: list[str] = Field(..., min_length=1, max_length=32, description="Purposes this collection may be used for.")
    fmr: float = Field(DEFAULT_FMR, gt=0, lt=1, description="Target false-match rate for identify/verify decisions.")
    threshold: float | None = Field(None, ge=-1, le=1, description="Explicit cosine threshold (overrides the calibrated one).")
    retention_days: int = Field(1095, ge=1, le=36500, description="Erase subjects this many days after their last interaction.")
    description: str | None = Field(None, max_length=500)
    quality_policy: QualityPolicyIn | None = None
    liveness_required: list[LivenessOperation] = Field(
        default_factory=list, max_length=3,
        description="Operations that need a passed liveness check (a `liveness_session` instead of an image): "
                    "any of enroll, verify, identify. A bare image is then refused with `liveness_required` (403).")


class CollectionUpdate(_Strict):
    """Fields to change; a field left out keeps its value."""

    liveness_required: list[LivenessOperation] | None = Field(
        None, max_length=3, description="Replace the operations that need a passed liveness check ([] turns it off).")


class CollectionOut(BaseModel):
    name: str
    model_id: str
    model_sha256: str
    embedding_dim: int
    purposes: list[str]
    fmr: float
    threshold: float
    threshold_source: str
    retention_days: int
    created_at: str | None
    description: str | None = None
    quality_policy: dict[str, float]
    liveness_required: list[str] = Field(default_factory=list, description="Operations that need a passed liveness check.")
    subjects: int | None = None
    templates: int | None = None
    expected_fpir: float | None = None


class CollectionList(BaseModel):
    collections: list[CollectionOut]


class ConsentOut(BaseModel):
    purpose: str
    granted_at: str | None
    expires_at: str | None
    evidence_ref: str | None
    withdrawn_at: str | None
    actor: str
    active: bool


class TemplateOut(BaseModel):
    id: int
    model_id: str
    created_at: str | None
    quality: dict[str, float]


class SubjectOut(BaseModel):
    collection: str
    external_id: str
    label: str | None
    created_at: str | None
    last_seen_at: str | None
    active_purposes: list[str]
    templates: list[TemplateOut]
    consents: list[ConsentOut]


class SubjectList(BaseModel):
    collection: str
    subjects: list[SubjectOut]
    limit: int
    offset: int
    total: int | None = Field(None, description="Subjects matching the filter (all subjects without `purpose`).")


class ConsentIn(_Strict):
    purposes: list[str] = Field(..., min_length=1, max_length=32, description="Purposes the subject agreed to.")
    expires_at: str | None = Field(None, max_length=40, description="ISO 8601 time the consent ends (optional).")
    evidence_ref: str | None = Field(None, max_length=256,
                                     description="Reference to the signed form / document hash; never the document.")
    granted_at: str | None = Field(None, max_length=40, description="ISO 8601 time it was granted (default: now).")


class EnrollRequest(_Strict):
    """Images of the subject plus, for a new subject, the consent it gave."""

    __image_fields__: ClassVar[tuple[str, ...]] = ("images",)
    images: list[str] | None = Field(None, max_length=10,
                                     description=B64 + " One or more; in multipart, repeat the `images` file field.")
    liveness_session: str | None = Field(None, max_length=128,
                                         description="A completed liveness session whose best frame is enrolled.")
    purposes: list[str] | None = Field(None, max_length=32,
                                       description="Consent: purposes granted (required for a new subject). "
                                                   "In multipart, comma separated.")
    expires_at: str | None = Field(None, max_length=40, description="Consent expiry, ISO 8601.")
    evidence_ref: str | None = Field(None, max_length=256, description="Consent evidence reference (form id, document hash).")
    label: str | None = Field(None, max_length=200,
                              description="Optional operator label (avoid names unless you must store them).")
    dedup_purpose: str | None = Field(
        None, max_length=64, description="Search for duplicate identities among subjects consenting to this purpose (one of the "
                                         "collection's). Matches are named only to a key with the identify scope; others get "
                                         "`flagged_for_review`. Left out: no duplicate search.")
    force_mismatch: str | None = Field(
        None, min_length=1, max_length=256, description="Admin keys only: the reason to accept faces that do not match the "
                                                        "subject's enrolled faces (`face_mismatch`). Audited.")
    faces: list[Annotated[int, Field(ge=0)] | None] | None = Field(
        None, max_length=10, description="Which face of each image is meant, aligned with `images`: an index from /v1/detect "
                                         "(or from an `ambiguous_face` reason's candidates), null for the subject rule. A chosen "
                                         "face skips the one-clear-subject rule, not the quality gate. In multipart, comma "
                                         "separated with `null` for no choice.")

    @field_validator("faces", mode="before")
    @classmethod
    def _form_nulls(cls, value: Any) -> Any:
        # multipart sends every item as text; "null" is its spelling of "no choice"
        return [None if v == "null" else v for v in value] if isinstance(value, list) else value


class DuplicateOut(BaseModel):
    subject: str
    score: float


class ImageOutcomeOut(BaseModel):
    index: int
    source: str
    accepted: bool
    reason: str | None
    message: str | None
    face: dict[str, Any] | None
    template_id: int | None
    duplicates: list[DuplicateOut]


class EnrollOut(BaseModel):
    collection: str
    subject: str
    created: bool
    accepted: int
    rejected: int
    duplicates: list[DuplicateOut]
    flagged_for_review: bool = Field(False, description="A duplicate search matched other subjects; a reviewer should look.")
    images: list[ImageOutcomeOut]
    consents: list[ConsentOut]
    liveness_session: str | None = None


class IdentifyRequest(_Strict):
    __image_fields__: ClassVar[tuple[str, ...]] = ("image",)
    purpose: str = Purpose
    image: str | None = Field(None, description=B64)
    liveness_session: str | None = Field(None, max_length=128)
    top_k: int = Field(5, ge=1, le=50, description="Most candidates returned.")
    face: int | None = Field(None, ge=0, description="Which face of `image` is meant: its index from /v1/detect (or from an "
                             "`ambiguous_face` problem's candidates). Default: the subject face.")
    box: list[float] | None = Field(None, min_length=4, max_length=4,
                                    description="Which face of `image` is meant, as a box x, y, width, height in image pixels: "
                                                "the detected face overlapping it most is taken.")


class CandidateOut(BaseModel):
    rank: int
    subject: str
    label: str | None
    score: float


class IdentifyOut(BaseModel):
    decision: Literal["match", "no_match"]
    collection: str
    purpose: str
    match: bool
    candidates: list[CandidateOut]
    threshold: float
    fmr: float
    model: str
    searched_subjects: int
    face: FaceOut
    reasons: list[str]


class ErasureOut(BaseModel):
    collection: str
    subject: str | None = None
    erased: bool = True
    subjects_erased: int | None = None


class AuditEventOut(BaseModel):
    seq: int
    ts: str | None
    actor: str
    action: str
    collection: str | None
    subjects: list[str]
    purpose: str | None
    decision: str | None
    score: float | None
    details: dict[str, Any]
    mac: str


class AuditList(BaseModel):
    events: list[AuditEventOut]
    next_before_seq: int | None = Field(None, description="Pass as before_seq for the next (older) page.")


class AuditReportOut(BaseModel):
    ok: bool
    events: int
    head_seq: int
    head_mac: str
    first_bad_seq: int | None = None
    problem: str | None = None
    archived_through: int = Field(0, description="Events up to this seq were archived (facegate audit archive); "
                                                 "the chain starts after it.")
    anchor_mac: str | None = Field(None, description="MAC of the last archived event: where the database's chain starts.")
    witnessed_seq: int | None = Field(None, description="The newest event the serving process's witness file vouches for "
                                                        "(removing events up to it is detected); null: no witness yet.")


class PurgeOut(BaseModel):
    dry_run: bool
    at: str | None
    count: int
    erased: list[dict[str, Any]]


class KeyCreate(_Strict):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    scopes: list[Literal["verify", "identify", "enroll", "admin"]] = Field(..., min_length=1)
    collections: list[str] | None = Field(None, description="Collections granted; null for every collection.")
    expires_at: str | None = Field(None, max_length=40)


class KeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    scopes: list[str]
    collections: list[str] | None
    created_at: str | None
    created_by: str
    last_used_at: str | None
    revoked_at: str | None
    expires_at: str | None
    active: bool


class KeyCreated(BaseModel):
    key: KeyOut
    secret: str = Field(description="The API key. Shown this once; only its hash is stored.")


class KeyList(BaseModel):
    keys: list[KeyOut]
