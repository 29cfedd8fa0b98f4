"""Results of enrolment and search: each image's outcome, duplicates, candidates and 1:1
verdicts. Frozen dataclasses with ``to_dict()`` for JSON."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..results import Face, Quality
from .policies import Consent


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

    def undisclosed(self) -> EnrollResult:
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
