"""The gallery API's value types, from where they are defined: ``policies`` (collections,
consents, subjects), ``match_results`` (enrolment and search results) and ``records`` (audit,
purge, key rotation, API keys)."""

from __future__ import annotations

from .match_results import (
    Candidate,
    DuplicateMatch,
    EnrollResult,
    IdentifyResult,
    ImageOutcome,
    SubjectVerifyResult,
)
from .policies import (
    LIVENESS_OPERATIONS,
    SCOPES,
    Collection,
    Consent,
    ConsentSpec,
    LivenessOverride,
    QualityPolicy,
    Subject,
    TemplateInfo,
    utcnow,
)
from .records import (
    ApiKey,
    AuditArchiveCheck,
    AuditArchiveFile,
    AuditArchiveReport,
    AuditEvent,
    AuditReport,
    MasterKeyRotation,
    PurgeItem,
    PurgeReport,
)

__all__ = [
    "ApiKey",
    "AuditArchiveCheck",
    "AuditArchiveFile",
    "AuditArchiveReport",
    "AuditEvent",
    "AuditReport",
    "Candidate",
    "Collection",
    "Consent",
    "ConsentSpec",
    "DuplicateMatch",
    "EnrollResult",
    "IdentifyResult",
    "ImageOutcome",
    "LIVENESS_OPERATIONS",
    "LivenessOverride",
    "MasterKeyRotation",
    "PurgeItem",
    "PurgeReport",
    "QualityPolicy",
    "SCOPES",
    "Subject",
    "SubjectVerifyResult",
    "TemplateInfo",
    "utcnow",
]
