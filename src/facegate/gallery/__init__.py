"""facegate gallery: consented enrolment, purpose-bound 1:N search, audit, erasure, API keys.

See docs/gallery.md for the full contract.
"""

from .errors import *  # noqa: F401,F403
from .gallery import Gallery
from .index import IndexConfig
from .keys import ApiKeys
from .types import (
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
    LIVENESS_OPERATIONS,
    ImageOutcome,
    LivenessOverride,
    PurgeItem,
    PurgeReport,
    QualityPolicy,
    Subject,
    SubjectVerifyResult,
    TemplateInfo,
)
