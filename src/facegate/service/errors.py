"""Errors the HTTP layer adds to facegate's own (each a FacegateError with a stable code)."""

from __future__ import annotations

from ..errors import FacegateError
from ..gallery.errors import (
    AuthError,
    CollectionNotFoundError,
    ForbiddenError,
    InvalidApiKeyError,
    NotFoundError,
    ScopeMissingError,
)

__all__ = ["AuthError", "CollectionNotFoundError", "InvalidApiKeyError", "ScopeMissingError"]


class ServiceError(FacegateError):
    code = "service_error"
    http_status = 500


class InvalidRequestError(FacegateError):
    """The request is malformed (missing image, bad base64, wrong content type…)."""

    code = "invalid_request"
    http_status = 400


class ValidationFailedError(FacegateError):
    code = "validation_error"
    http_status = 422


class ApiKeyRequiredError(AuthError):
    """No API key was sent (Authorization: Bearer <key> or X-API-Key)."""

    code = "api_key_required"
    http_status = 401


class MetricsTokenError(AuthError):
    """/metrics is protected by a token (FACEGATE_METRICS_TOKEN) and it was missing or wrong."""

    code = "metrics_token_required"
    http_status = 401


# No such route or resource (or one this key may not see): the gallery's generic not-found.
ResourceNotFoundError = NotFoundError


class MethodNotAllowedError(FacegateError):
    code = "method_not_allowed"
    http_status = 405


class UnsupportedMediaTypeError(FacegateError):
    code = "unsupported_media_type"
    http_status = 415


class BodyTooLargeError(FacegateError):
    code = "body_too_large"
    http_status = 413


class RateLimitedError(FacegateError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after: float, **details: object) -> None:
        super().__init__(message, retry_after_s=round(retry_after, 3), **details)
        self.retry_after = retry_after


class ServiceBusyError(FacegateError):
    """Every worker is busy and the queue is full: try again shortly."""

    code = "busy"
    http_status = 503


class ShuttingDownError(FacegateError):
    code = "shutting_down"
    http_status = 503


class RequestTimeoutError(FacegateError):
    code = "timeout"
    http_status = 504


class NotReadyError(FacegateError):
    code = "not_ready"
    http_status = 503


class FeatureUnavailableError(FacegateError):
    """A part of the service (e.g. the gallery) is not installed in this build."""

    code = "unavailable"
    http_status = 501


class InsufficientAccessError(ForbiddenError):
    """The key is valid but may not do this (e.g. a collection-limited key on a global operation)."""

    code = "forbidden"
