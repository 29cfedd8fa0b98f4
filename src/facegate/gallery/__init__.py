"""facegate gallery: consented enrolment, purpose-bound 1:N search, audit, erasure, API keys.

See docs/gallery.md for the full contract.
"""

from . import errors as _errors
from .errors import *  # noqa: F403 - every gallery error is public; errors.__all__ lists them
from .gallery import Gallery
from .index import IndexConfig
from .keys import ApiKeys
from .records import ADMIN, scope_granted
from .types import (
    LIVENESS_OPERATIONS,
    SCOPES,
    ApiKey,
    AuditEvent,
    AuditReport,
    Candidate,
    Collection,
    Consent,
    ConsentSpec,
    DuplicateMatch,
    EnrollResult,
    IdentifyResult,
    ImageOutcome,
    LivenessOverride,
    PurgeItem,
    PurgeReport,
    QualityPolicy,
    Subject,
    SubjectVerifyResult,
    TemplateInfo,
)

__all__ = [
    "ADMIN",
    "ApiKey",
    "ApiKeys",
    "AuditEvent",
    "AuditReport",
    "Candidate",
    "Collection",
    "Consent",
    "ConsentSpec",
    "DuplicateMatch",
    "EnrollResult",
    "Gallery",
    "IdentifyResult",
    "ImageOutcome",
    "IndexConfig",
    "LIVENESS_OPERATIONS",
    "LivenessOverride",
    "PurgeItem",
    "PurgeReport",
    "QualityPolicy",
    "SCOPES",
    "Subject",
    "SubjectVerifyResult",
    "TemplateInfo",
    "scope_granted",
]
__all__ += _errors.__all__
