"""Errors raised by the gallery, the store and API-key authentication.

Every class has a stable ``code`` (never renamed: the CLI maps them to exit codes, the service to
RFC 9457 problem types) and an ``http_status`` the REST service can use as is.
"""

from __future__ import annotations

from ..errors import FacegateError

__all__ = [
    "GalleryError",
    "InvalidArgumentError",
    "InvalidNameError",
    "NotFoundError",
    "CollectionNotFoundError",
    "SubjectNotFoundError",
    "ApiKeyNotFoundError",
    "ConflictError",
    "CollectionExistsError",
    "ApiKeyExistsError",
    "LockedError",
    "ModelMismatchError",
    "PurposeRequiredError",
    "PurposeNotAllowedError",
    "ConsentRequiredError",
    "LivenessRequiredError",
    "StoreError",
    "AuditTamperedError",
    "StoreUnavailableError",
    "SchemaError",
    "MasterKeyError",
    "MasterKeyMissingError",
    "MasterKeyMismatchError",
    "TemplateIntegrityError",
    "AuthError",
    "InvalidApiKeyError",
    "RevokedApiKeyError",
    "ExpiredApiKeyError",
    "ForbiddenError",
    "ScopeMissingError",
    "CollectionForbiddenError",
]


class GalleryError(FacegateError):
    code = "gallery_error"
    http_status = 400


class InvalidArgumentError(GalleryError, ValueError):
    """A parameter is out of range or malformed (bad FMR, unknown scope, empty purpose …)."""

    code = "invalid_argument"
    http_status = 422


class InvalidNameError(InvalidArgumentError):
    """A subject id, collection name or API-key name that may not be created ('.', '..', '/',
    control, bidi-override or non-characters, too long; see gallery/names.py)."""

    code = "invalid_name"


# --- not found / conflicts ------------------------------------------------------------------


class NotFoundError(GalleryError, LookupError):
    code = "not_found"
    http_status = 404


class CollectionNotFoundError(NotFoundError):
    code = "collection_not_found"


class SubjectNotFoundError(NotFoundError):
    code = "subject_not_found"


class ApiKeyNotFoundError(NotFoundError):
    code = "api_key_not_found"


class ConflictError(GalleryError):
    code = "conflict"
    http_status = 409


class CollectionExistsError(ConflictError):
    code = "collection_exists"


class ApiKeyExistsError(ConflictError):
    code = "api_key_exists"


class LockedError(ConflictError):
    """Another process holds the lock (e.g. a purge is already running)."""

    code = "locked"


class ModelMismatchError(ConflictError):
    """The engine's model (id or weights sha256) is not the one the collection is pinned to."""

    code = "model_mismatch"


# --- purpose and consent --------------------------------------------------------------------


class PurposeRequiredError(GalleryError):
    code = "purpose_required"
    http_status = 422


class PurposeNotAllowedError(GalleryError):
    """The purpose is not among the collection's allowed purposes."""

    code = "purpose_not_allowed"
    http_status = 422


class ConsentRequiredError(GalleryError):
    """No active consent covers this operation (enrolment of a new subject without a consent,
    or 1:1 verification against a subject whose consent does not cover the purpose)."""

    code = "consent_required"
    http_status = 403


class LivenessRequiredError(GalleryError):
    """The collection requires a passed liveness check for this operation (enrol, verify or
    identify) and the image did not come from one. 403 like ``consent_required``: the request is
    well-formed but the collection's policy does not permit the operation on a bare image; run
    a liveness session and send its id instead."""

    code = "liveness_required"
    http_status = 403


# --- storage and keys -----------------------------------------------------------------------


class StoreError(GalleryError, RuntimeError):
    code = "store_error"
    http_status = 500


class AuditTamperedError(StoreError):
    """The audit log cannot be appended to because its head row is missing (deleted or the
    table rewritten): audited operations are refused until an operator restores the database.
    503: the service cannot serve audited writes; reads still work."""

    code = "audit_tampered"
    http_status = 503


class StoreUnavailableError(StoreError):
    """The database cannot be reached or stayed locked past the busy timeout; retry later."""

    code = "store_unavailable"
    http_status = 503


class SchemaError(StoreError):
    """The database was migrated by a newer facegate than this one."""

    code = "schema_too_new"


class MasterKeyError(GalleryError, RuntimeError):
    code = "master_key_error"
    http_status = 500


class MasterKeyMissingError(MasterKeyError):
    """The store holds encrypted templates but no master key was found (file or env var)."""

    code = "master_key_missing"


class MasterKeyMismatchError(MasterKeyError):
    """The master key given is not the one this store's templates were encrypted under."""

    code = "master_key_mismatch"


class TemplateIntegrityError(GalleryError, RuntimeError):
    """A stored template failed authenticated decryption (tampered or wrong key)."""

    code = "template_integrity"
    http_status = 500


# --- API-key authentication (used by the REST service) --------------------------------------


class AuthError(GalleryError):
    code = "unauthorized"
    http_status = 401


class InvalidApiKeyError(AuthError):
    """Malformed, unknown or wrong secret. Deliberately does not say which."""

    code = "invalid_api_key"


class RevokedApiKeyError(AuthError):
    code = "api_key_revoked"


class ExpiredApiKeyError(AuthError):
    code = "api_key_expired"


class ForbiddenError(GalleryError):
    code = "forbidden"
    http_status = 403


class ScopeMissingError(ForbiddenError):
    """The key is valid but lacks the scope (verify, identify, enroll, admin) the route needs."""

    code = "scope_missing"


class CollectionForbiddenError(ForbiddenError):
    """The key is valid but not granted this collection."""

    code = "collection_forbidden"
