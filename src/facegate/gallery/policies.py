"""What the gallery stores and is configured with: collections and their quality policy,
consents, subjects and templates. Frozen dataclasses with ``to_dict()`` for JSON.

Times are timezone-aware UTC ``datetime``s; ``to_dict`` writes them as ISO 8601 strings.
Subjects are always named by the operator's ``external_id``; internal row ids never leave
the library.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

SCOPES = ("verify", "identify", "enroll", "admin")
# Operations a collection can require a passed liveness check for (``Collection.liveness_required``).
LIVENESS_OPERATIONS = ("enroll", "verify", "identify")


def iso_utc(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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
    def from_dict(cls, d: dict[str, Any] | None) -> QualityPolicy:
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
            "created_at": iso_utc(self.created_at),
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
            "granted_at": iso_utc(self.granted_at),
            "expires_at": iso_utc(self.expires_at),
            "evidence_ref": self.evidence_ref,
            "withdrawn_at": iso_utc(self.withdrawn_at),
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
        return {"id": self.id, "model_id": self.model_id, "created_at": iso_utc(self.created_at), "quality": self.quality}


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
            "created_at": iso_utc(self.created_at),
            "last_seen_at": iso_utc(self.last_seen_at),
            "active_purposes": list(self.active_purposes()),
            "templates": [t.to_dict() for t in self.templates],
            "consents": [c.to_dict() for c in self.consents],
        }
