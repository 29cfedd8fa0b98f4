"""Typed results of the gallery API. All are frozen dataclasses with ``to_dict()`` for JSON.

Times are timezone-aware UTC ``datetime``s; ``to_dict`` writes them as ISO 8601 strings.
Subjects are always named by the operator's ``external_id``; internal row ids never leave
the library.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

from ..results import Face, Quality

SCOPES = ("verify", "identify", "enroll", "admin")
# Operations a collection can require a passed liveness check for (``Collection.liveness_required``).
LIVENESS_OPERATIONS = ("enroll", "verify", "identify")


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class QualityPolicy:
    """The enrolment quality gate (see docs/gallery.md for the reasoning behind each default).

    Probes (identify/verify) are not gated: only enrolment templates must be good.
    """

    min_inter_eye_px: float = 32.0
    min_sharpness: float = 40.0
    max_abs_yaw_deg: float = 40.0
    max_abs_pitch_deg: float = 25.0
    max_abs_roll_deg: float = 25.0
    min_brightness: float = 40.0
    max_brightness: float = 225.0
    max_clipped: float = 0.3
    min_detector_score: float = 0.7
    # A second face at least this prominent (relative to the subject) makes the photo ambiguous.
    max_second_face_ratio: float = 0.6

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)

    def failures(self, q: Any) -> list[tuple[str, str]]:
        """Every check a face's ``Quality`` fails, as (reason code, message), in gate order.

        The one definition of the enrolment gate: the gallery rejects on the first failure,
        the service's detect preview lists them all."""
        checks = [
            (q.detector_score < self.min_detector_score, "low_detector_score",
             f"detector score {q.detector_score:.2f} < {self.min_detector_score:g}"),
            (q.inter_eye_px < self.min_inter_eye_px, "face_too_small",
             f"eyes {q.inter_eye_px:.0f} px apart < {self.min_inter_eye_px:g}"),
            (q.sharpness < self.min_sharpness, "too_blurry", f"sharpness {q.sharpness:.0f} < {self.min_sharpness:g}"),
            (abs(q.yaw_deg) > self.max_abs_yaw_deg or abs(q.pitch_deg) > self.max_abs_pitch_deg
             or abs(q.roll_deg) > self.max_abs_roll_deg,
             "pose_out_of_range", f"pose yaw {q.yaw_deg:+.0f}° pitch {q.pitch_deg:+.0f}° roll {q.roll_deg:+.0f}°"),
            (not (self.min_brightness <= q.brightness <= self.max_brightness) or q.clipped > self.max_clipped,
             "bad_exposure", f"brightness {q.brightness:.0f}, clipped {q.clipped:.2f}"),
        ]
        return [(code, msg) for failed, code, msg in checks if failed]

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "QualityPolicy":
        if not d:
            return cls()
        known = {k: float(v) for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class Collection:
    name: str
    model_id: str
    model_sha256: str
    embedding_dim: int
    purposes: tuple[str, ...]
    fmr: float
    threshold: float  # cosine threshold in force (explicit, else calibrated for ``fmr``)
    threshold_source: str  # "explicit" | "calibration" | "provisional"
    retention_days: int
    created_at: dt.datetime
    quality_policy: QualityPolicy = field(default_factory=QualityPolicy)
    description: str | None = None
    subjects: int | None = None
    templates: int | None = None
    # Operations (of LIVENESS_OPERATIONS) that need a consumed liveness session or a supervised
    # override (``LivenessOverride``): a bare image is refused with LivenessRequiredError.
    liveness_required: tuple[str, ...] = ()

    def requires_liveness(self, operation: str) -> bool:
        return operation in self.liveness_required

    @property
    def expected_fpir(self) -> float | None:
        """Rough false-positive identification rate of a non-enrolled probe: N × FMR."""
        return None if self.subjects is None else min(1.0, self.subjects * self.fmr)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_id": self.model_id,
            "model_sha256": self.model_sha256,
            "embedding_dim": self.embedding_dim,
            "purposes": list(self.purposes),
            "fmr": self.fmr,
            "threshold": round(self.threshold, 6),
            "threshold_source": self.threshold_source,
            "retention_days": self.retention_days,
            "created_at": _iso(self.created_at),
            "description": self.description,
            "quality_policy": self.quality_policy.to_dict(),
            "liveness_required": list(self.liveness_required),
            "subjects": self.subjects,
            "templates": self.templates,
            "expected_fpir": self.expected_fpir,
        }


@dataclass(frozen=True)
class LivenessOverride:
    """A supervised override of a collection's liveness requirement: an operator saw the person
    in front of them (e.g. enrolment in person at a branch) and says why no liveness session was
    run. Only a library caller can construct one (the CLI's ``--liveness-override REASON``); the
    REST API never accepts one. Recorded in the operation's audit event
    (``liveness: "override"``, ``liveness_override_reason``)."""

    reason: str

    def __post_init__(self) -> None:
        r = self.reason.strip() if isinstance(self.reason, str) else ""
        if not r or len(r) > 256 or any(ord(ch) < 32 for ch in r):
            from .errors import InvalidArgumentError

            raise InvalidArgumentError("a liveness override needs a reason: 1–256 printable characters")
        object.__setattr__(self, "reason", r)


@dataclass(frozen=True)
class ConsentSpec:
    """What the subject agreed to: input to ``enroll`` and ``grant_consent``."""

    purposes: tuple[str, ...]
    expires_at: dt.datetime | None = None
    evidence_ref: str | None = None  # e.g. signed form id or document sha256; never the document
    granted_at: dt.datetime | None = None  # default: now

    def __post_init__(self) -> None:
        if isinstance(self.purposes, str):
            object.__setattr__(self, "purposes", (self.purposes,))
        else:
            object.__setattr__(self, "purposes", tuple(self.purposes))


@dataclass(frozen=True)
class Consent:
    """One purpose granted to one subject (a multi-purpose grant is one row per purpose)."""

    purpose: str
    granted_at: dt.datetime
    expires_at: dt.datetime | None
    evidence_ref: str | None
    withdrawn_at: dt.datetime | None
    actor: str

    def active(self, now: dt.datetime | None = None) -> bool:
        now = now or utcnow()
        return self.withdrawn_at is None and self.granted_at <= now and (self.expires_at is None or self.expires_at > now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "granted_at": _iso(self.granted_at),
            "expires_at": _iso(self.expires_at),
            "evidence_ref": self.evidence_ref,
            "withdrawn_at": _iso(self.withdrawn_at),
            "actor": self.actor,
            "active": self.active(),
        }


@dataclass(frozen=True)
class TemplateInfo:
    """Metadata of a stored template (never the vector)."""

    id: int
    model_id: str
    created_at: dt.datetime
    quality: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model_id": self.model_id, "created_at": _iso(self.created_at), "quality": self.quality}


@dataclass(frozen=True)
class Subject:
    collection: str
    external_id: str
    label: str | None
    created_at: dt.datetime
    last_seen_at: dt.datetime
    templates: tuple[TemplateInfo, ...] = ()
    consents: tuple[Consent, ...] = ()

    def active_purposes(self, now: dt.datetime | None = None) -> tuple[str, ...]:
        return tuple(sorted({c.purpose for c in self.consents if c.active(now)}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "external_id": self.external_id,
            "label": self.label,
            "created_at": _iso(self.created_at),
            "last_seen_at": _iso(self.last_seen_at),
            "active_purposes": list(self.active_purposes()),
            "templates": [t.to_dict() for t in self.templates],
            "consents": [c.to_dict() for c in self.consents],
        }


@dataclass(frozen=True)
class DuplicateMatch:
    """An enrolment face that already matches a *different* subject above the threshold."""

    subject: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "score": round(self.score, 6)}


@dataclass(frozen=True)
class ImageOutcome:
    """What happened to one enrolment image. ``reason`` is a stable code when rejected:
    no_face, ambiguous_face, too_many_faces, face_too_small, too_blurry, pose_out_of_range,
    bad_exposure, low_detector_score, duplicate_image, face_mismatch (not the subject's face),
    template_limit, or an image decode code
    (not_an_image, unsupported_format, truncated, too_large, too_small, image_not_found)."""

    index: int
    source: str
    accepted: bool
    reason: str | None = None
    message: str | None = None
    face: Face | None = None
    template_id: int | None = None
    duplicates: tuple[DuplicateMatch, ...] = ()

    @property
    def quality(self) -> Quality | None:
        return None if self.face is None else self.face.quality

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "source": self.source,
            "accepted": self.accepted,
            "reason": self.reason,
            "message": self.message,
            "face": None if self.face is None else self.face.to_dict(),
            "template_id": self.template_id,
            "duplicates": [d.to_dict() for d in self.duplicates],
        }


@dataclass(frozen=True)
class EnrollResult:
    collection: str
    subject: str
    created: bool  # a new subject was created
    images: tuple[ImageOutcome, ...]
    consents: tuple[Consent, ...] = ()
    # Set when a duplicate search found other subjects; ``duplicates`` stays empty for a caller
    # not allowed to identify (``undisclosed``): it learns only that a reviewer should look.
    flagged_for_review: bool = False

    def __post_init__(self) -> None:
        if self.duplicates:
            object.__setattr__(self, "flagged_for_review", True)

    def undisclosed(self) -> "EnrollResult":
        """This result without the matched subjects and scores (the flag stays)."""
        return replace(self, images=tuple(replace(i, duplicates=()) for i in self.images),
                       flagged_for_review=self.flagged_for_review)

    @property
    def accepted(self) -> int:
        return sum(1 for i in self.images if i.accepted)

    @property
    def rejected(self) -> int:
        return sum(1 for i in self.images if not i.accepted)

    @property
    def duplicates(self) -> tuple[DuplicateMatch, ...]:
        """Other subjects matched by any accepted image, best score per subject."""
        best: dict[str, float] = {}
        for img in self.images:
            for d in img.duplicates:
                best[d.subject] = max(best.get(d.subject, -1.0), d.score)
        return tuple(DuplicateMatch(s, v) for s, v in sorted(best.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "subject": self.subject,
            "created": self.created,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "duplicates": [d.to_dict() for d in self.duplicates],
            "flagged_for_review": self.flagged_for_review,
            "images": [i.to_dict() for i in self.images],
            "consents": [c.to_dict() for c in self.consents],
        }


@dataclass(frozen=True)
class Candidate:
    subject: str
    label: str | None
    score: float
    rank: int

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "subject": self.subject, "label": self.label, "score": round(self.score, 6)}


@dataclass(frozen=True)
class IdentifyResult:
    """Candidates at or above the collection threshold, best first; empty means no match."""

    collection: str
    purpose: str
    candidates: tuple[Candidate, ...]
    threshold: float
    fmr: float
    model: str
    face: Face
    searched_subjects: int  # subjects whose consent covers the purpose at search time

    @property
    def match(self) -> bool:
        return bool(self.candidates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "purpose": self.purpose,
            "match": self.match,
            "candidates": [c.to_dict() for c in self.candidates],
            "threshold": round(self.threshold, 6),
            "fmr": self.fmr,
            "model": self.model,
            "searched_subjects": self.searched_subjects,
            "face": self.face.to_dict(),
        }


@dataclass(frozen=True)
class SubjectVerifyResult:
    """1:1 of a probe against one enrolled subject's templates (best template score)."""

    collection: str
    subject: str
    purpose: str
    match: bool
    score: float
    threshold: float
    fmr: float
    model: str
    face: Face

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "subject": self.subject,
            "purpose": self.purpose,
            "match": self.match,
            "score": round(self.score, 6),
            "threshold": round(self.threshold, 6),
            "fmr": self.fmr,
            "model": self.model,
            "face": self.face.to_dict(),
        }


@dataclass(frozen=True)
class AuditEvent:
    """One audit record. Never contains pixels or templates."""

    seq: int
    ts: dt.datetime
    actor: str
    action: str
    collection: str | None
    subjects: tuple[str, ...]
    purpose: str | None
    decision: str | None
    score: float | None
    details: dict[str, Any]
    mac: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": _iso(self.ts),
            "actor": self.actor,
            "action": self.action,
            "collection": self.collection,
            "subjects": list(self.subjects),
            "purpose": self.purpose,
            "decision": self.decision,
            "score": self.score,
            "details": self.details,
            "mac": self.mac,
        }


@dataclass(frozen=True)
class AuditReport:
    """Result of ``audit verify``: ``ok`` is False when any row was edited, deleted or inserted."""

    ok: bool
    events: int
    head_seq: int
    head_mac: str
    first_bad_seq: int | None = None
    problem: str | None = None
    # After an archival (``Gallery.audit_archive``) the stored chain starts after the anchor:
    # the last archived event's seq and MAC (0 and None when nothing was archived).
    archived_through: int = 0
    anchor_mac: str | None = None
    # The newest event the data directory's witness file (witness.py) vouches for; None: no witness.
    witnessed_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AuditArchiveReport:
    """Result of ``Gallery.audit_archive``: the range moved to ``path`` (``count`` 0 and no
    file when nothing was older than ``before``) and the chain's new anchor (``last_mac``)."""

    path: str | None
    count: int
    first_seq: int | None
    last_seq: int | None
    prev_mac: str | None  # what the first archived event chains to (the previous anchor)
    last_mac: str | None  # the new anchor: the oldest event left in the database chains to it
    first_ts: dt.datetime | None
    last_ts: dt.datetime | None
    before: dt.datetime
    file_sha256: str | None
    bytes: int
    event_seq: int | None  # the audit.archive event recording this archival
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "first_ts": _iso(self.first_ts), "last_ts": _iso(self.last_ts), "before": _iso(self.before)}


@dataclass(frozen=True)
class AuditArchiveFile:
    """One archive file as checked by ``Gallery.audit_verify_archive``."""

    path: str
    ok: bool
    count: int
    first_seq: int | None = None
    last_seq: int | None = None
    prev_mac: str | None = None
    last_mac: str | None = None
    first_ts: dt.datetime | None = None
    last_ts: dt.datetime | None = None
    sha256: str | None = None
    committed: bool | None = None  # None: checked without the database
    first_bad_seq: int | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "first_ts": _iso(self.first_ts), "last_ts": _iso(self.last_ts)}


@dataclass(frozen=True)
class AuditArchiveCheck:
    """Result of ``Gallery.audit_verify_archive``. ``ok``: every file is intact (MACs, order,
    count, footer) and, with the database, matches the archival it records and the database
    chain is intact. ``complete``: the files and the database together cover the whole chain,
    from the first event ever to the head, without a gap."""

    ok: bool
    complete: bool
    files: tuple[AuditArchiveFile, ...]
    events: int  # archived events checked
    database: AuditReport | None
    missing: tuple[tuple[int, int], ...] = ()  # (first, last) seq ranges not covered by the files given
    problem: str | None = None
    expect_head_found: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "files": [f.to_dict() for f in self.files],
                "database": None if self.database is None else self.database.to_dict(),
                "missing": [list(m) for m in self.missing]}


@dataclass(frozen=True)
class PurgeItem:
    collection: str
    subject: str
    reason: str  # "retention" | "no_active_consent"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class MasterKeyRotation:
    """Result of ``Gallery.rotate_master_key``: fingerprints (public ids, never key material),
    what was re-wrapped, and where the new key lives (``key_file`` None: the caller supplied
    it and must store it, e.g. in $FACEGATE_MASTER_KEY's secret store)."""

    old_key_id: str
    new_key_id: str
    subjects: int
    keyring_entries: int
    key_file: str | None
    old_key_destroyed: bool  # the old key file was overwritten and removed
    seconds: float
    at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": _iso(self.at)}


@dataclass(frozen=True)
class PurgeReport:
    dry_run: bool
    erased: tuple[PurgeItem, ...]
    at: dt.datetime
    rotation: MasterKeyRotation | None = None  # purge(rotate_master_key=True)

    def to_dict(self) -> dict[str, Any]:
        out = {"dry_run": self.dry_run, "at": _iso(self.at), "count": len(self.erased), "erased": [e.to_dict() for e in self.erased]}
        if self.rotation is not None:
            out["master_key_rotation"] = self.rotation.to_dict()
        return out


@dataclass(frozen=True)
class ApiKey:
    """An API key's record (never its secret). ``collections`` None means every collection."""

    id: int
    name: str
    prefix: str  # public, shown in listings and logs: "fg_<prefix>_…"
    scopes: tuple[str, ...]
    collections: tuple[str, ...] | None
    created_at: dt.datetime
    created_by: str
    last_used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > utcnow())

    @property
    def actor(self) -> str:
        """What the audit log records as the actor of this key's requests."""
        return f"key:{self.name}({self.prefix})"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def can_access(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def allows(self, scope: str, collection: str | None = None) -> bool:
        return self.has_scope(scope) and (collection is None or self.can_access(collection))

    def require(self, scope: str, collection: str | None = None) -> None:
        """Raise ScopeMissingError / CollectionForbiddenError unless allowed."""
        from .errors import CollectionForbiddenError, ScopeMissingError

        if not self.has_scope(scope):
            raise ScopeMissingError(f"API key {self.name!r} lacks the {scope!r} scope", scope=scope)
        if collection is not None and not self.can_access(collection):
            raise CollectionForbiddenError(f"API key {self.name!r} is not granted collection {collection!r}", collection=collection)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "scopes": list(self.scopes),
            "collections": None if self.collections is None else list(self.collections),
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "last_used_at": _iso(self.last_used_at),
            "revoked_at": _iso(self.revoked_at),
            "expires_at": _iso(self.expires_at),
            "active": self.active,
        }
